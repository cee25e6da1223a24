//! The domain: calls, the workflows they belong to and the VoiceKit events they emit.
//!
//! Everything here is pure (no I/O, no clock, no randomness), so every rule about
//! durations, ordering and duplicates is tested with plain unit tests.

pub mod invariants;
pub mod machine;
pub(crate) mod voicekit;
pub mod workflow;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod quirks;

pub use machine::CallState;
pub(crate) use voicekit::EventKind;
pub use workflow::Workflow;
