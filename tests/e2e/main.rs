//! The end-to-end suite: one test binary, one module per area, sharing one harness.
//!
//! Every test drives the real `voicekit-bridge` binary over loopback (see `support`).
//! The tests share this one process and none changes process-wide state: each daemon
//! is a child process given its own environment, directory and ports, so no test needs
//! a binary of its own.

mod support;

mod browser;
mod call_flow;
mod cli;
mod crash;
mod dashboard;
mod delivery_policy;
mod endpoint_gone;
#[cfg(feature = "failpoints")]
mod essential_tasks;
mod harness_smoke;
mod hostile_clients;
mod ingest_rejects;
mod instance_restart;
mod listeners;
mod livekit_quirks;
mod multi_instance;
mod operator;
mod ops_http;
mod repairs;
mod service_lifecycle;
mod store_full;
