//! voicekit-bridge: LiveKit room and egress webhooks in, VoiceKit call events out.
//!
//! The flow, one module each: `http` receives and `livekit` verifies; `ingest` runs the
//! pure `call` domain and commits to the `store`, whose outbox the `delivery` worker
//! drains to each workflow's endpoint, publishing recordings on the way. `jobs` holds the
//! periodic housekeeping and repairs; `daemon` wires them together and stops them
//! together.

pub mod call;
pub mod cli;
pub mod config;
pub mod daemon;
pub(crate) mod delivery;
pub(crate) mod descriptors;
pub(crate) mod essential;
pub(crate) mod http;
pub(crate) mod ingest;
pub(crate) mod jobs;
pub mod livekit;
pub(crate) mod metrics;
pub mod reload;
pub(crate) mod store;
pub(crate) mod systemd;
pub mod testkit;
