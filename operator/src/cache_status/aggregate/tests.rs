//! Aggregation of hand-made answers, and the texts of the printer columns.

use serde_json::{json, Value};

use super::*;

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap())
}

/// An answer in the replicas' `/status` format (unknown fields included, as a newer image may
/// send them).
fn answer(created_unix_ms: i64, body: Value) -> Answer {
    Answer {
        created_unix_ms,
        report: serde_json::from_value(body).unwrap(),
    }
}

fn upstream(url: &str, state: &str, latency: Value, error: Value) -> Value {
    json!({"url": url, "priority": 40, "state": state, "since_unix_ms": 1_764_900_000_000u64,
           "probe_latency_ms": latency, "probed_unix_ms": 1_764_900_000_000u64,
           "hits": 1, "misses": 0, "errors": 0, "last_error": error, "a_newer_field": true})
}

fn replica(hits: u64, misses: u64, size: i64, upstreams: Vec<Value>) -> Value {
    json!({
        "version": "0.2.0", "public_key": "cache-1:abc=", "ready": true,
        "upstreams": upstreams,
        "cache": {
            "narinfos": 120, "nars": 118, "size_bytes": size, "max_size_bytes": 10_737_418_240i64,
            "narinfo": {"hits": 5, "misses": 3, "not_found": 1},
            "nar": {"hits": 5, "misses": 3, "not_found": 0},
            "hit_ratio": 0.62, "served_bytes": 1000, "fetched_bytes": 500,
            "last_hour": {"hits": hits, "misses": misses, "served_bytes": 900, "fetched_bytes": 400}
        },
        "upkeep": {
            "gc": {"runs": 3, "failures": 1, "last_started_unix_ms": 1_764_900_000_000u64,
                   "last_finished_unix_ms": 1_764_900_060_000u64, "last_result": "ok",
                   "last_ok_unix_ms": 1_764_900_060_000u64, "last_freed_bytes": 1234,
                   "last_problems": 0, "last_summary": "evicted 13 narinfos and 13 NARs, freed 1.2 KiB",
                   "freed_bytes": 5678},
            "fsck": null
        }
    })
}

#[test]
fn per_replica_counters_are_summed_and_shared_figures_taken_once() {
    let up = |latency| upstream("https://cache.nixos.org", "up", json!(latency), Value::Null);
    let answers = [
        answer(1, replica(8, 2, 1_288_490_189, vec![up(12.5)])),
        answer(2, replica(10, 0, 1_288_490_189, vec![up(30.2)])),
    ];
    let s = cache_status(3, &answers, &now()).unwrap();
    assert_eq!(s.observed_at, Some(now()));
    assert_eq!((s.replicas_polled, s.replicas_answered), (3, 2));
    assert_eq!(s.size_bytes, Some(1_288_490_189));
    assert_eq!(s.max_size_bytes, Some(10_737_418_240));
    assert_eq!(s.size.as_deref(), Some("1.2 GiB / 10 GiB"));
    assert_eq!(s.paths, Some(120));
    // 18 hits of 20 lookups: the ratio of the sums, not the mean of 80% and 100%.
    assert_eq!(s.hit_ratio_last_hour.as_deref(), Some("90%"));
    assert_eq!((s.hits_last_hour, s.misses_last_hour), (Some(18), Some(2)));
    assert_eq!(s.served_bytes_last_hour, Some(1800));
    assert_eq!(s.fetched_bytes_last_hour, Some(800));
    assert_eq!(s.upstream_health.as_deref(), Some("1/1 up"));
    assert_eq!(s.upstreams.len(), 1, "one upstream, seen by two replicas");
    assert_eq!(
        s.upstreams[0].latency_ms,
        Some(31),
        "the slowest replica's, rounded up"
    );
    assert_eq!(s.upstreams[0].last_error, None);
    let gc = s.last_gc.unwrap();
    assert_eq!(gc.result, "ok");
    assert_eq!(gc.freed_bytes, Some(1234));
    assert_eq!(gc.problems, None, "a GC reports no problems");
    assert_eq!((gc.runs, gc.failures), (Some(3), Some(1)));
    assert_eq!(gc.finished_at.unwrap().0.to_string(), "2025-12-05T02:01:00Z");
    assert_eq!(s.last_fsck, None, "never ran");
}

#[test]
fn shared_figures_come_from_the_youngest_replica() {
    let answers = [
        answer(1, replica(0, 0, 100, vec![])),
        answer(5, replica(0, 0, 200, vec![])),
        answer(3, replica(0, 0, 300, vec![])),
    ];
    let s = cache_status(3, &answers, &now()).unwrap();
    assert_eq!(s.size_bytes, Some(200));
    assert_eq!(s.hit_ratio_last_hour, None, "no lookups in the last hour");
    assert_eq!(s.hits_last_hour, Some(0));
    assert_eq!(s.upstream_health, None, "no upstream reported");
}

#[test]
fn upstream_states_are_merged_across_replicas() {
    let a = "https://a.example";
    let b = "https://b.example";
    let c = "https://c.example";
    let d = "https://d.example";
    let answers = [
        answer(
            1,
            replica(
                1,
                1,
                0,
                vec![
                    upstream(a, "up", json!(5.0), Value::Null),
                    upstream(b, "down", Value::Null, json!("timeout")),
                    upstream(c, "down", Value::Null, json!("HTTP 503")),
                    upstream(d, "unknown", Value::Null, Value::Null),
                ],
            ),
        ),
        answer(
            2,
            replica(
                1,
                1,
                0,
                vec![
                    upstream(a, "up", json!(7.0), Value::Null),
                    upstream(b, "up", json!(9.0), Value::Null),
                    upstream(c, "down", Value::Null, json!("HTTP 502")),
                    upstream(d, "unknown", Value::Null, Value::Null),
                ],
            ),
        ),
    ];
    let s = cache_status(2, &answers, &now()).unwrap();
    let states: Vec<(&str, &str, Option<&str>)> = s
        .upstreams
        .iter()
        .map(|u| (u.url.as_str(), u.state.as_str(), u.last_error.as_deref()))
        .collect();
    assert_eq!(
        states,
        [
            (a, "up", None),
            (b, "partial", Some("timeout")),
            // The youngest replica's error first.
            (c, "down", Some("HTTP 502")),
            (d, "unknown", None),
        ]
    );
    assert_eq!(s.upstream_health.as_deref(), Some("1/4 up"));
    assert_eq!(s.upstreams[0].latency_ms, Some(7));
}

#[test]
fn an_older_image_leaves_its_missing_fields_out() {
    // What a replica before the last hour, limit and upkeep fields answers.
    let old = json!({
        "version": "0.1.0", "public_key": "cache-1:abc=", "ready": true,
        "upstreams": [{"url": "https://cache.nixos.org", "priority": 40, "state": "up",
                       "since_unix_ms": 1, "probe_latency_ms": null, "probed_unix_ms": null,
                       "hits": 0, "misses": 0, "errors": 0, "last_error": null}],
        "cache": {"narinfos": 3, "nars": 3, "size_bytes": 512,
                  "narinfo": {"hits": 1, "misses": 1, "not_found": 0},
                  "nar": {"hits": 0, "misses": 0, "not_found": 0}, "hit_ratio": 0.5}
    });
    let s = cache_status(1, &[answer(1, old)], &now()).unwrap();
    assert_eq!(s.size.as_deref(), Some("512 B"));
    assert_eq!(s.max_size_bytes, None);
    assert_eq!(s.paths, Some(3));
    assert_eq!(
        (s.hit_ratio_last_hour, s.hits_last_hour, s.served_bytes_last_hour),
        (None, None, None)
    );
    assert_eq!((s.last_gc, s.last_fsck), (None, None));
    assert_eq!(s.upstreams[0].latency_ms, None);
    // And nothing at all when nobody answered: the last figures stand.
    assert_eq!(cache_status(2, &[], &now()), None);
}

#[test]
fn the_latest_upkeep_run_wins() {
    let fsck = |finished: u64, result: &str| {
        let mut r = replica(0, 0, 0, vec![]);
        r["upkeep"]["fsck"] = json!({"runs": 2, "failures": 0, "last_started_unix_ms": finished - 1000,
            "last_finished_unix_ms": finished, "last_result": result, "last_ok_unix_ms": finished,
            "last_freed_bytes": 0, "last_problems": 4, "last_summary": "4 problems left"});
        r
    };
    // The older pod read the database after the newer one: its run is the latest.
    let answers = [
        answer(1, fsck(1_764_900_100_000, "problems_left")),
        answer(2, fsck(1_764_900_000_000, "clean")),
    ];
    let s = cache_status(2, &answers, &now()).unwrap();
    let fsck = s.last_fsck.unwrap();
    assert_eq!(fsck.result, "problems_left");
    assert_eq!(fsck.problems, Some(4));
    assert_eq!(fsck.freed_bytes, None, "an fsck frees nothing");
}

#[test]
fn column_texts() {
    for (bytes, text) in [
        (0, "0 B"),
        (-5, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (123 * 1024 * 1024 + 1, "123 MiB"),
        (10_737_418_240, "10 GiB"),
        (1_288_490_189, "1.2 GiB"),
        (i64::MAX, "8192 PiB"),
    ] {
        assert_eq!(bytes_text(bytes), text, "{bytes}");
    }
    assert_eq!(size_text(1024, None), "1 KiB");
    assert_eq!(hit_ratio(0, 0), None);
    assert_eq!(hit_ratio(999, 1).as_deref(), Some("99%"), "100% means no miss");
    assert_eq!(hit_ratio(1, 0).as_deref(), Some("100%"));
    assert_eq!(hit_ratio(u64::MAX, u64::MAX).as_deref(), Some("50%"));
}
