//! Structured logs: JSON or text, level from `RUST_LOG` (default `info`).
//!
//! kube-runtime's watcher warns on every attempt of a watch refused with 403 (about once a
//! second); the controller already warns once a minute per failing watch, with a count (see
//! `controller.rs`), so that warning is dropped unless `RUST_LOG` names `kube_runtime`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `json` selects one JSON object per line.
pub fn init(json: bool) {
    let filter = EnvFilter::try_new(filter_spec(std::env::var("RUST_LOG").ok()))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// The filter: `RUST_LOG` (or `info`), with kube-runtime's watcher at `error` unless named.
fn filter_spec(rust_log: Option<String>) -> String {
    let spec = rust_log
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "info".into());
    if spec.contains("kube_runtime") {
        spec
    } else {
        format!("{spec},kube_runtime::watcher=error")
    }
}

#[cfg(test)]
mod tests {
    use super::filter_spec;

    #[test]
    fn kube_watcher_warnings_are_dropped_unless_asked_for() {
        assert_eq!(filter_spec(None), "info,kube_runtime::watcher=error");
        assert_eq!(
            filter_spec(Some("debug".into())),
            "debug,kube_runtime::watcher=error"
        );
        assert_eq!(
            filter_spec(Some("info,kube_runtime=debug".into())),
            "info,kube_runtime=debug"
        );
    }
}
