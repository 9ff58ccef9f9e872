//! The Service in front of the replicas.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use nixcache_crds::NixCache;

use super::{owned_meta, selector_labels, CONTAINER_PORT};

/// The Service of `nc`: `spec.service`'s type and port, to the pods' `http` port.
pub fn service(nc: &NixCache) -> Service {
    let settings = nc.spec.service.clone().unwrap_or_default();
    let mut metadata = owned_meta(nc, nc.name_any(), "proxy");
    if !settings.annotations.is_empty() {
        metadata.annotations = Some(settings.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(settings.type_.map_or("ClusterIP", |t| t.as_str()).to_owned()),
            selector: Some(selector_labels(nc)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: settings.port.unwrap_or(CONTAINER_PORT),
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
