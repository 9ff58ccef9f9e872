//! OTLP trace export: `nixcache serve` with the standard `OTEL_EXPORTER_OTLP_ENDPOINT` sends its
//! request and upstream spans to a collector (here a small OTLP/HTTP receiver that decodes the
//! protobuf like a real collector does); SIGTERM flushes what is buffered. Also the JSON log format.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use axum::{body::Bytes, extract::State, routing::post, Router};
use nixcache_e2e::http::{client, get_narinfo};
use nixcache_e2e::{nix_available, Proxy, ProxyOptions, TestUpstream, UpstreamCache};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// A span as received: its name and string attributes.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    service: String,
    attributes: HashMap<String, String>,
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

async fn receive(State(spans): State<Spans>, body: Bytes) -> &'static str {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return "undecodable";
    };
    let mut spans = spans.lock().unwrap_or_else(|p| p.into_inner());
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| text(a.value.as_ref()))
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            let attributes = span
                .attributes
                .iter()
                .map(|a| (a.key.clone(), text(a.value.as_ref())))
                .collect();
            spans.push(Received {
                name: span.name,
                service: service.clone(),
                attributes,
            });
        }
    }
    "ok"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_upstream_spans_reach_an_otlp_collector() -> Result<()> {
    if !nix_available() {
        return Ok(());
    }
    let spans: Spans = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let collector = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(Arc::clone(&spans));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let cache = UpstreamCache::get("zstd", "e2e")?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let mut opts = ProxyOptions::new(&upstream.url, &cache.public_key);
    opts.extra_args = vec!["--log-format".into(), "json".into()];
    opts.env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector),
        ("OTEL_SERVICE_NAME".into(), "nixcache-e2e".into()),
    ];
    let mut proxy = Proxy::start(opts).await?;
    let path = cache.path_named("00-small")?.to_owned();
    let info = get_narinfo(&proxy.url, &path).await?; // a miss: asks the upstream
    get_narinfo(&proxy.url, &path).await?; // a hit
    let nar = client()
        .get(proxy.url_for(&format!("/{}", info.url()?)))
        .send()
        .await?;
    ensure!(nar.status().is_success(), "{}", nar.status());
    nar.bytes().await?;

    let status = proxy.terminate(Duration::from_secs(20)).await?;
    ensure!(status.success(), "nixcache exited with {status}");
    let spans = spans.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let requests: Vec<_> = spans.iter().filter(|s| s.name == "request").collect();
    let route = |s: &Received| s.attributes.get("http.route").cloned().unwrap_or_default();
    let outcomes: Vec<_> = requests
        .iter()
        .filter(|s| route(s) == "/{hash}.narinfo")
        .filter_map(|s| s.attributes.get("cache").cloned())
        .collect();
    ensure!(
        outcomes.contains(&"miss".into()) && outcomes.contains(&"hit".into()),
        "narinfo outcomes {outcomes:?} in {spans:#?}"
    );
    let nar_request = requests
        .iter()
        .find(|s| route(s) == "/nar/{file}")
        .context("no span for the NAR request")?;
    ensure!(
        nar_request.attributes.get("http.status").map(String::as_str) == Some("200"),
        "{nar_request:?}"
    );
    ensure!(
        nar_request.attributes.contains_key("duration_ms"),
        "{nar_request:?}"
    );
    ensure!(
        spans.iter().any(|s| s.name == "upstream_narinfo"),
        "no upstream span in {spans:#?}"
    );
    ensure!(
        spans.iter().any(|s| s.name == "upstream_nar"),
        "no NAR download span in {spans:#?}"
    );
    ensure!(
        spans.iter().all(|s| s.service == "nixcache-e2e"),
        "service names: {spans:#?}"
    );

    // --log-format json: every line of the log is a JSON object.
    let log = std::fs::read_to_string(&proxy.log_file)?;
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(!lines.is_empty());
    for line in lines {
        let parsed: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        ensure!(
            parsed.get("level").is_some() && parsed.get("fields").is_some(),
            "{line}"
        );
    }
    Ok(())
}
