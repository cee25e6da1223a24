//! Getting VoiceKit events from the outbox to each workflow's endpoint.

pub mod policy;
pub mod worker;

pub use worker::Worker;
