//! Shared harness for the end-to-end tests.
//!
//! Every test in `tests/e2e/` drives the real `voicekit-bridge` binary over loopback
//! against real collaborators: an S3-compatible server ([`Moto`]), an HTTP endpoint
//! standing in for the customer ([`Receiver`]), and webhook bodies and tokens in
//! LiveKit's exact wire format from the crate's testkit ([`lk`], [`signer`]). Nothing
//! here is mocked inside the process under test.
//!
//! It is compiled once, in the one e2e test binary, so whatever no test uses is
//! reported as dead code.

pub mod browser;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod livekit_server;
pub mod lk;
pub mod moto;
pub mod operator;
pub mod poll;
pub mod receiver;
pub mod signer;
pub mod timeline;

pub use config::TestConfig;
pub use daemon::Daemon;
pub use moto::Moto;
pub use receiver::{Received, Receiver, Reply};
