//! Logs and traces. Logs: `RUST_LOG` filter (default `info`), text or JSON lines on stderr; the
//! per-request span (`nixcache::request`) is off in the default filter, so hits log nothing.
//! Traces: exported over OTLP (HTTP/protobuf) when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`
//! and the other `OTEL_*` variables apply); every request and upstream fetch is a span.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

use crate::cli::LogFormat;

/// The log filter when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info,nixcache::request=off";
/// What is exported as traces: this crate's spans at info and above.
const TRACE_FILTER: &str = "nixcache=info";

/// Keeps the trace exporter; [`Telemetry::shutdown`] sends what is still buffered.
#[must_use]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(err) = provider.shutdown() {
                eprintln!("flushing the trace exporter failed: {err}");
            }
        }
    }
}

/// Whether the standard environment asks for OTLP trace export.
pub fn otlp_configured() -> bool {
    let set = |name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs the global subscriber (once per process; later calls change nothing).
pub fn init(format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let logs = match format {
        // Colours only on a terminal: not in files, journald or `kubectl logs`.
        LogFormat::Text => fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    }
    .with_filter(filter);
    let provider = if otlp_configured() {
        match otlp_provider() {
            Ok(provider) => Some(provider),
            Err(err) => {
                eprintln!("OTLP trace export is configured but cannot start: {err}");
                None
            }
        }
    } else {
        None
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("nixcache"))
            .with_filter(EnvFilter::new(TRACE_FILTER))
    });
    let _ = tracing_subscriber::registry().with(logs).with(traces).try_init();
    if provider.is_some() {
        tracing::info!("exporting traces over OTLP");
    }
    Telemetry { provider }
}

fn otlp_provider() -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "nixcache".into()))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
