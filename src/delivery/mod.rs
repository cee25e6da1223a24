//! Getting VoiceKit events from the outbox to each workflow's endpoint.

mod attempt;
pub(crate) mod breaker;
pub(crate) mod headers;
pub(crate) mod policy;
pub(crate) mod recording;
pub(crate) mod signing;
pub(crate) mod worker;

pub(crate) use worker::Worker;
