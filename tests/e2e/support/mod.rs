//! Shared harness for the end-to-end tests.
//!
//! Every test in `tests/` drives the real `voicekit-bridge` binary over loopback
//! against real collaborators: an S3-compatible server ([`Moto`]), an HTTP endpoint
//! standing in for the customer ([`Receiver`]), and webhook bodies and tokens in
//! LiveKit's exact wire format from the crate's testkit ([`lk`], [`signer`]). Nothing
//! here is mocked inside the process under test.
//!
//! Each test file includes this module with `mod support;` and uses only part of it,
//! so unused items and re-exports are expected rather than a sign of dead code.
#![allow(dead_code, unused_imports)]

pub mod config;
pub mod daemon;
pub mod livekit_server;
pub mod lk;
pub mod moto;
pub mod operator;
pub mod poll;
pub mod receiver;
pub mod signer;

pub use config::TestConfig;
pub use daemon::Daemon;
pub use moto::Moto;
pub use receiver::{Received, Receiver, Reply};
