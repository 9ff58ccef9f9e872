//! The operator on a real Kubernetes API server: the control plane of `e2e/kube/`
//! ([`plane`]), binaries built alone as their images build them ([`bins`]), a namespace per test
//! with the chart's RBAC ([`namespace`]), the operator as a process ([`operator`]), and the
//! process kubelet and Service stand-in that really run the pods ([`pods`]).

pub mod bins;
pub mod namespace;
pub mod operator;
pub mod plane;
pub mod pods;
pub mod relay;
pub mod wait;

pub use namespace::TestNamespace;
pub use operator::{OperatorOptions, OperatorProcess};
pub use plane::ControlPlane;
pub use pods::{ProcessKubelet, ServiceProxy};
