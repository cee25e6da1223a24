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
pub mod delivery;
pub mod descriptors;
pub mod essential;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod livekit;
pub mod metrics;
pub mod reload;
pub mod store;
pub mod systemd;
pub mod testkit;
