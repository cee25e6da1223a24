//! The three VoiceKit events, byte for byte as VoiceKit's webhooks document shows them.
//!
//! Field order follows the document. `timestamp` is when the thing happened, taken from
//! LiveKit's own clocks, so the bytes of an event never change between retries.

use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::FormatItem, macros::format_description};

// The variants are VoiceKit's event names (call_started, call_ended, call_finalized).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EventKind {
    CallStarted,
    CallEnded,
    CallFinalized,
}

impl EventKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::CallStarted => "call_started",
            EventKind::CallEnded => "call_ended",
            EventKind::CallFinalized => "call_finalized",
        }
    }

    /// Position in a call's life: the order in which the customer must see them.
    pub(crate) fn seq(self) -> i64 {
        match self {
            EventKind::CallStarted => 1,
            EventKind::CallEnded => 2,
            EventKind::CallFinalized => 3,
        }
    }

    pub(crate) fn parse(s: &str) -> Option<EventKind> {
        [
            EventKind::CallStarted,
            EventKind::CallEnded,
            EventKind::CallFinalized,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CallStartedData {
    pub call_id: i64,
    pub workflow_slug: String,
    pub phone_number: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CallEndedData {
    pub call_id: i64,
    pub workflow_slug: String,
    pub phone_number: Option<String>,
    pub duration_seconds: i64,
    pub duration_minutes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CallFinalizedData {
    pub call_id: i64,
    pub call_slug: String,
    pub recording_url: Option<String>,
    pub workflow_id: i64,
    pub organization_id: i64,
    pub egress_info: EgressInfoData,
}

/// LiveKit's egress result as VoiceKit publishes it: nanosecond times, duration and
/// size as decimal strings, the status by its enum name, the file type by extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EgressInfoData {
    pub egress_id: String,
    pub room_id: String,
    pub room_name: String,
    pub status: String,
    pub started_at: String,
    pub ended_at: String,
    pub duration: String,
    pub file_size: String,
    /// `null` when the egress produced no file.
    pub file_type: Option<String>,
}

/// An outgoing event: what happened, when, and its data.
// Short-lived (a few per webhook, serialised at once): boxing would buy nothing. The
// variants are VoiceKit's event names.
#[allow(clippy::large_enum_variant, clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VoiceKitEvent {
    CallStarted { at_ms: i64, data: CallStartedData },
    CallEnded { at_ms: i64, data: CallEndedData },
    CallFinalized { at_ms: i64, data: CallFinalizedData },
}

#[derive(Serialize, Deserialize)]
struct Envelope<'a, T> {
    event: &'a str,
    timestamp: String,
    data: T,
}

impl VoiceKitEvent {
    pub(crate) fn kind(&self) -> EventKind {
        match self {
            VoiceKitEvent::CallStarted { .. } => EventKind::CallStarted,
            VoiceKitEvent::CallEnded { .. } => EventKind::CallEnded,
            VoiceKitEvent::CallFinalized { .. } => EventKind::CallFinalized,
        }
    }

    /// The JSON body delivered to the workflow's endpoint.
    pub(crate) fn to_json(&self) -> String {
        fn envelope<T: Serialize>(kind: EventKind, at_ms: i64, data: &T) -> String {
            serde_json::to_string(&Envelope {
                event: kind.as_str(),
                timestamp: rfc3339_ms(at_ms),
                data,
            })
            .expect("VoiceKit payloads always serialise")
        }
        match self {
            VoiceKitEvent::CallStarted { at_ms, data } => envelope(self.kind(), *at_ms, data),
            VoiceKitEvent::CallEnded { at_ms, data } => envelope(self.kind(), *at_ms, data),
            VoiceKitEvent::CallFinalized { at_ms, data } => envelope(self.kind(), *at_ms, data),
        }
    }
}

/// Fills in `recording_url` of a stored `call_finalized` body once the recording is
/// confirmed, keeping every other byte as it was.
pub(crate) fn with_recording_url(
    body: &str,
    url: Option<&str>,
) -> Result<String, serde_json::Error> {
    let mut envelope: Envelope<'_, CallFinalizedData> = serde_json::from_str(body)?;
    envelope.data.recording_url = url.map(str::to_owned);
    serde_json::to_string(&envelope)
}

const RFC3339_MS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// `2024-01-15T10:30:00.000Z` for a unix time in milliseconds.
pub(crate) fn rfc3339_ms(unix_ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(RFC3339_MS)
        .expect("the format has only fields every date has")
}

/// Whole minutes billed: at least one, any started minute counts.
pub(crate) fn duration_minutes(duration_seconds: i64) -> i64 {
    ((duration_seconds.max(0) + 59) / 60).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_matches_the_document_byte_for_byte() {
        let e = VoiceKitEvent::CallEnded {
            at_ms: 1705314750000,
            data: CallEndedData {
                call_id: 123,
                workflow_slug: "customer-support".into(),
                phone_number: Some("+1234567890".into()),
                duration_seconds: 150,
                duration_minutes: 3,
            },
        };
        assert_eq!(
            e.to_json(),
            r#"{"event":"call_ended","timestamp":"2024-01-15T10:32:30.000Z","data":{"call_id":123,"workflow_slug":"customer-support","phone_number":"+1234567890","duration_seconds":150,"duration_minutes":3}}"#
        );
    }

    #[test]
    fn timestamps_have_milliseconds_in_utc() {
        assert_eq!(rfc3339_ms(1761234568456), "2025-10-23T15:49:28.456Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn minutes_round_up_with_a_one_minute_minimum() {
        for (s, m) in [
            (0, 1),
            (1, 1),
            (59, 1),
            (60, 1),
            (61, 2),
            (150, 3),
            (3600, 60),
        ] {
            assert_eq!(duration_minutes(s), m, "{s} s");
        }
    }

    /// VoiceKit's own `call_finalized` example, timed as the document times it.
    fn document_example() -> VoiceKitEvent {
        let mut e =
            crate::cli::test_event::sample(EventKind::CallFinalized, "customer-support", 456, 789);
        if let VoiceKitEvent::CallFinalized { at_ms, .. } = &mut e {
            *at_ms = 1705314780000;
        }
        e
    }

    #[test]
    fn call_finalized_matches_the_document_byte_for_byte() {
        assert_eq!(
            document_example().to_json(),
            concat!(
                r#"{"event":"call_finalized","timestamp":"2024-01-15T10:33:00.000Z","data":{"call_id":123,"#,
                r#""call_slug":"abc12345","recording_url":"https://recordings.voicekit.com/path/to/audio.ogg","#,
                r#""workflow_id":456,"organization_id":789,"egress_info":{"egress_id":"EG_dmi8xHQYNX6r","#,
                r#""room_id":"RM_kfWfYGzHvVYy","room_name":"VOICEKIT_workflow_abc12345_8453","#,
                r#""status":"EGRESS_COMPLETE","started_at":"1749599674369480049","#,
                r#""ended_at":"1749599765791839485","duration":"88756989820","file_size":"1442477","#,
                r#""file_type":"ogg"}}}"#
            )
        );
    }

    #[test]
    fn recording_url_is_filled_in_without_touching_the_rest() {
        let mut e = document_example();
        if let VoiceKitEvent::CallFinalized { data, .. } = &mut e {
            data.recording_url = None;
        }
        let body = e.to_json();
        let filled = with_recording_url(
            &body,
            Some("https://recordings.voicekit.com/path/to/audio.ogg"),
        )
        .unwrap();
        assert_eq!(
            filled,
            body.replace(
                r#""recording_url":null"#,
                r#""recording_url":"https://recordings.voicekit.com/path/to/audio.ogg""#
            )
        );
        assert!(filled.starts_with(r#"{"event":"call_finalized","timestamp":"#));
    }
}
