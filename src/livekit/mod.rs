//! The inbound side: what LiveKit sends us and how we know it was LiveKit.

pub(crate) mod api;
pub mod auth;
pub mod event;
pub mod time;
