//! The operator on a real Kubernetes API server (kube-apiserver and kube-controller-manager 1.20
//! built from Debian's source package, CRDs served by apiextensions-apiserver 1.36; see
//! `e2e/kube/`). The operator binary is built alone, as its image is, and runs with the chart's
//! RBAC; a process kubelet really runs the pods it asks for (the migration Job migrates
//! PostgreSQL, three `nixcache serve` processes share S3), and a real `nix` client substitutes
//! through the Service.
//!
//! The scenarios run one at a time: each drives a control plane, several processes and a database.

mod claim;
mod leader;
mod lifecycle;
mod observability;
mod private;
mod rbac;
mod secrets;
mod warm;
mod world;

/// One scenario at a time.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
