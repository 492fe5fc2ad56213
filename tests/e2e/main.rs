//! Every end-to-end test, in one test binary that shares one test bed: a
//! kube-apiserver and etcd for the tests that need an API server, and one
//! node (a real one-node cluster) for the tests whose pods run, each started
//! by the first test that asks (`devenv_testbed::shared`,
//! `devenv_testbed::node::shared`).
//!
//! The tests run concurrently against the same servers, so none may assume
//! it is alone: each makes its own namespaces (`temp_namespace`), names its
//! cluster-scoped objects (webhook configurations, ClusterRoleBindings,
//! policy bindings) after them, counts audit-log entries of its own user
//! only, and registers webhooks that select only its own namespaces. The
//! few tests that must use a fixed name hold a lock (`node::devenv_namespace`)
//! or, when they stop or break their API server, start a dedicated bed
//! (`devenv_testbed::start`).
//!
//! - [`bed`]: the test bed itself and the token round trip the pod API
//!   relies on;
//! - [`certs`]: self-managed certificates (the keeper and its Secret);
//! - [`webhook`]: the webhooks registered with the API server;
//! - [`operator`]: the LearnerSpace operator;
//! - [`pod_api`]: the authenticated pod API and the `devenv` CLI;
//! - [`deploy`]: `deploy/` applied as it is, and the manager running with
//!   exactly its RBAC;
//! - [`hooks`]: what the chart's hooks run (`check`, `unregister`);
//! - [`node`]: on the real node.

mod bed;
mod certs;
mod deploy;
mod hooks;
mod node;
mod operator;
mod pod_api;
mod webhook;
