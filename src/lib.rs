//! devenv-manager: an admission webhook, a LearnerSpace operator and an
//! authenticated pod API that make a Kubernetes cluster a safe place for
//! developers and learners to work.
//!
//! Modules are cut by capability. The decisions (what to patch, what to deny,
//! which objects a LearnerSpace needs) are pure functions over typed objects and
//! the [`config::Config`]; the code that talks HTTP or to the API server lives
//! at the edges and only calls them.

#![forbid(unsafe_code)]

pub mod api;
pub mod certs;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod crd;
pub mod devenv_cli;
pub mod k8s;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod operator;
pub mod probes;
pub mod quantity;
pub mod serve;
pub mod server;
pub mod shutdown;
pub mod tls;
pub mod webhook;
pub mod yaml;
