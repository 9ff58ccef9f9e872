//! The nixcache operator: reconciles `NixCache` resources into running, horizontally scaled
//! nixcache proxies (signing Secret, migration Job, Deployment, Service, GC and warm-up
//! CronJobs, optional HorizontalPodAutoscaler and PodDisruptionBudget), with leader election,
//! metrics and events.
//!
//! `main.rs` only parses flags and calls [`run`]; tests drive [`reconcile::reconcile`] against
//! a scripted API server.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod blocker;
pub mod cache_status;
pub mod capabilities;
pub mod config;
pub mod context;
pub mod controller;
pub mod error;
#[cfg(any(test, feature = "test-util"))]
pub mod fixtures;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod quantity;
pub mod reconcile;
pub mod render;
mod run;
pub mod status;
pub mod telemetry;
pub mod text;

pub use config::Config;
pub use context::Context;
pub use error::{Error, Result};
pub use run::{run, shutdown_on_signal, RunOptions};
