//! Getting VoiceKit events from the outbox to each workflow's endpoint.

mod attempt;
pub mod breaker;
pub mod headers;
pub mod policy;
pub mod recording;
pub mod signing;
pub mod worker;

pub use worker::Worker;
