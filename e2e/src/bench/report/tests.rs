use super::*;

#[test]
fn table_and_goals() {
    let mut r = Report::default();
    for (server, v) in [
        (Server::Nginx, 100.0),
        (Server::Nginx, 110.0),
        (Server::Nixcache, 85.0),
    ] {
        r.add("x req/s", Better::Higher, Goal::RatioAtLeast(0.8), server, v);
    }
    r.add("rss", Better::Lower, Goal::Below(64.0), Server::Nixcache, 70.0);
    let text = r.tables();
    assert!(
        text.contains("| x req/s ↑ | 105 (100–110) | 85 | 0.81× | ≥ 0.8× nginx | yes |"),
        "{text}"
    );
    assert!(
        text.contains("| rss ↓ | – | 70 | – | < 64 (every run) | **NO** |"),
        "{text}"
    );
    assert_eq!(r.goals().iter().filter(|(met, _)| *met).count(), 1);
    assert!(!text.contains("nixcache×3"), "{text}");
    assert_eq!(
        (num(0.0566), num(1.5), num(12.34), num(3122.7)),
        ("0.057".into(), "1.50".into(), "12.3".into(), "3123".into())
    );
}

#[test]
fn replica_columns() {
    let mut r = Report::default();
    for (server, v) in [
        (Server::Nginx, 1.0),
        (Server::Nixcache, 1.0),
        (Server::Replicas, 2.0),
    ] {
        r.add("gets", Better::Lower, Goal::Exactly(1.0), server, v);
    }
    r.add("ttfb", Better::Lower, Goal::None, Server::Nginx, 0.5);
    r.add("ttfb", Better::Lower, Goal::None, Server::Replicas, 0.1);
    let text = r.tables();
    assert!(
        text.contains(
            "| metric | nginx | nixcache | nixcache×3 | nixcache/nginx | nixcache×3/nginx | goal | met |"
        ),
        "{text}"
    );
    assert!(
        text.contains("| gets ↓ | 1 | 1 | 2 | 1.00× | 2.00× | = 1 (every run) | **NO** (nixcache×3) |"),
        "{text}"
    );
    assert!(
        text.contains("| ttfb ↓ | 0.500 | – | 0.100 | – | 0.20× |  |  |"),
        "{text}"
    );
    let goals = r.goals();
    assert_eq!(goals.len(), 2, "{goals:?}");
    assert!(goals[1].1.contains("nixcache×3 2") && !goals[1].0, "{goals:?}");
}
