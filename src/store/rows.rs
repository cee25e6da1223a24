//! The rows an ingest plan writes, with named fields: the backends bind them by name,
//! so two of the same type cannot be swapped unnoticed.

use serde::Serialize;

/// A call to create for a room that maps to a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct NewCall<'a> {
    pub room_sid: &'a str,
    pub room_name: &'a str,
    pub workflow_id: i64,
    pub workflow_slug: &'a str,
    pub call_slug: String,
}

/// A LiveKit event to remember as accepted, with the call it touched (for the
/// operator's view of a call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SeenEvent<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub room_sid: Option<&'a str>,
    pub call_id: Option<i64>,
}

/// A VoiceKit event to queue in the same transaction as the call change that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct NewDelivery {
    pub webhook_id: String,
    pub call_id: i64,
    pub seq: i64,
    pub event_type: &'static str,
    pub workflow_id: i64,
    pub payload: String,
    /// JSON of the recording to publish before the first attempt, if any.
    pub recording: Option<String>,
}
