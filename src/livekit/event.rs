//! A tolerant model of LiveKit's `WebhookEvent` as Go's protojson writes it.
//!
//! We do not use `livekit_protocol`'s generated types here: they reject an enum name a
//! newer LiveKit adds, and they insist on one JSON type per field. protojson writes
//! 64-bit integers as strings, omits zero values and may add fields at any time, so
//! every field is optional, integers accept strings or numbers, and enums stay strings.

use std::collections::BTreeMap;

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{self, Visitor},
};

/// Why a body is not a webhook event we can read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the body has no \"event\" field")]
    MissingEvent,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WebhookEvent {
    pub event: String,
    pub id: Option<String>,
    #[serde(deserialize_with = "int")]
    pub created_at: Option<i64>,
    pub room: Option<Room>,
    pub participant: Option<Participant>,
    pub egress_info: Option<EgressInfo>,
}

impl WebhookEvent {
    /// Parses a body, accepting anything LiveKit may add but requiring `event`.
    pub fn parse(body: &[u8]) -> Result<WebhookEvent, EventError> {
        let event: WebhookEvent = serde_json::from_slice(body)?;
        if event.event.is_empty() {
            return Err(EventError::MissingEvent);
        }
        Ok(event)
    }

    /// The room instance the event concerns: the room's own sid, or the egress's.
    pub fn room_sid(&self) -> Option<&str> {
        self.room
            .as_ref()
            .map(|r| r.sid.as_str())
            .filter(|s| !s.is_empty())
            .or_else(|| {
                self.egress_info
                    .as_ref()
                    .map(|e| e.room_id.as_str())
                    .filter(|s| !s.is_empty())
            })
    }

    pub fn room_name(&self) -> Option<&str> {
        self.room
            .as_ref()
            .map(|r| r.name.as_str())
            .filter(|s| !s.is_empty())
            .or_else(|| {
                self.egress_info
                    .as_ref()
                    .map(|e| e.room_name.as_str())
                    .filter(|s| !s.is_empty())
            })
    }

    /// `createdAt` in milliseconds (LiveKit sends seconds).
    pub fn created_at_ms(&self) -> Option<i64> {
        self.created_at.map(|s| s.saturating_mul(1000))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Room {
    pub sid: String,
    pub name: String,
    #[serde(deserialize_with = "int")]
    pub creation_time: Option<i64>,
    #[serde(deserialize_with = "int")]
    pub creation_time_ms: Option<i64>,
    pub metadata: String,
}

impl Room {
    /// Creation time in ms, from the precise field when present.
    pub fn created_at_ms(&self) -> Option<i64> {
        self.creation_time_ms
            .filter(|ms| *ms > 0)
            .or_else(|| self.creation_time.filter(|s| *s > 0).map(|s| s * 1000))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Participant {
    pub sid: String,
    pub identity: String,
    /// `STANDARD` is protojson's zero value and therefore usually absent.
    pub kind: Option<String>,
    #[serde(deserialize_with = "int")]
    pub joined_at: Option<i64>,
    #[serde(deserialize_with = "int")]
    pub joined_at_ms: Option<i64>,
    pub attributes: BTreeMap<String, String>,
}

impl Participant {
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("STANDARD")
    }

    pub fn joined_at_ms(&self) -> Option<i64> {
        self.joined_at_ms
            .filter(|ms| *ms > 0)
            .or_else(|| self.joined_at.filter(|s| *s > 0).map(|s| s * 1000))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EgressInfo {
    pub egress_id: String,
    pub room_id: String,
    pub room_name: String,
    /// `EGRESS_STARTING` is the zero value, so an absent status means starting.
    pub status: Option<String>,
    #[serde(deserialize_with = "int")]
    pub started_at: Option<i64>,
    #[serde(deserialize_with = "int")]
    pub ended_at: Option<i64>,
    pub error: String,
    pub file_results: Vec<FileInfo>,
    /// Deprecated single-file result, still filled by current egress versions.
    pub file: Option<FileInfo>,
}

impl EgressInfo {
    pub fn status(&self) -> &str {
        self.status.as_deref().unwrap_or("EGRESS_STARTING")
    }

    /// The recording file, if the egress produced one.
    pub fn file(&self) -> Option<&FileInfo> {
        self.file_results
            .iter()
            .chain(self.file.as_ref())
            .find(|f| !f.filename.is_empty() || !f.location.is_empty())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FileInfo {
    pub filename: String,
    #[serde(deserialize_with = "int")]
    pub duration: Option<i64>,
    #[serde(deserialize_with = "int")]
    pub size: Option<i64>,
    pub location: String,
}

/// protojson writes 64-bit integers as strings; accept numbers and null too.
///
/// A visitor rather than an untagged enum: serde's untagged enums buffer the value and
/// build an error message for every variant that does not match, which for protojson's
/// string integers was two formatted errors per field on the ingest hot path.
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct Int;
    impl<'de> Visitor<'de> for Int {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer, as a number or a string")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Int)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(i64::try_from(v).unwrap_or(v as f64 as i64)))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v as i64))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            if s.is_empty() {
                return Ok(None);
            }
            s.parse()
                .map(Some)
                .map_err(|_| E::custom(format!("expected an integer, got {s:?}")))
        }
    }
    d.deserialize_option(Int)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_livekit_example_with_string_integers() {
        let body = include_bytes!("../../tests/fixtures/participant_joined_sip.json");
        let e = WebhookEvent::parse(body).unwrap();
        assert_eq!(e.event, "participant_joined");
        assert_eq!(e.id.as_deref(), Some("EV_Lp0oKi9Uj8Yh"));
        assert_eq!(e.created_at, Some(1761234568));
        let room = e.room.as_ref().unwrap();
        assert_eq!(room.created_at_ms(), Some(1761234567123));
        let p = e.participant.unwrap();
        assert_eq!(p.kind(), "SIP");
        assert_eq!(p.joined_at_ms(), Some(1761234568456));
        assert_eq!(p.attributes["sip.phoneNumber"], "+15551230001");
    }

    #[test]
    fn parses_egress_ended_file_results() {
        let body = include_bytes!("../../tests/fixtures/egress_ended.json");
        let e = WebhookEvent::parse(body).unwrap();
        assert_eq!(e.room_sid(), Some("RM_hycBMAjmt6Ub"));
        let info = e.egress_info.unwrap();
        assert_eq!(info.status(), "EGRESS_COMPLETE");
        assert_eq!(info.started_at, Some(1761234569012345678));
        let f = info.file().unwrap();
        assert_eq!(f.size, Some(1948211));
        assert_eq!(f.duration, Some(243887654321));
    }

    #[test]
    fn accepts_numbers_unknown_fields_and_unknown_enums() {
        let body = br#"{"event":"participant_joined", "id":"EV_1","createdAt":17,
            "room":{"sid":"RM_1","name":"r","creationTime":5, "futureField":{"x":1}},
            "participant":{"sid":"PA_1","kind":"HOLOGRAM","joinedAtMs":"123","state":"NEW_STATE"}}"#;
        let e = WebhookEvent::parse(body).unwrap();
        assert_eq!(e.created_at, Some(17));
        assert_eq!(e.room.unwrap().created_at_ms(), Some(5000));
        assert_eq!(e.participant.unwrap().kind(), "HOLOGRAM");
    }

    #[test]
    fn integers_come_as_strings_numbers_floats_empty_or_null() {
        let size = |v: &str| {
            let f: FileInfo = serde_json::from_str(&format!(r#"{{"size":{v}}}"#)).unwrap();
            f.size
        };
        assert_eq!(size(r#""1948211""#), Some(1948211));
        assert_eq!(size("1948211"), Some(1948211));
        assert_eq!(size("-3"), Some(-3));
        assert_eq!(size("12.0"), Some(12));
        assert_eq!(size(r#""""#), None);
        assert_eq!(size("null"), None);
        assert_eq!(size("18446744073709551615"), Some(i64::MAX));
        assert!(serde_json::from_str::<FileInfo>(r#"{"size":"big"}"#).is_err());
        assert!(serde_json::from_str::<FileInfo>(r#"{"size":[1]}"#).is_err());
    }

    #[test]
    fn omitted_zero_values_read_as_defaults() {
        let e = WebhookEvent::parse(
            br#"{"event":"egress_started","egressInfo":{"egressId":"EG_1","roomId":"RM_1"}}"#,
        )
        .unwrap();
        assert_eq!(e.egress_info.unwrap().status(), "EGRESS_STARTING");
        let p: Participant = serde_json::from_str(r#"{"sid":"PA_1"}"#).unwrap();
        assert_eq!(p.kind(), "STANDARD");
    }

    #[test]
    fn rejects_malformed_json_and_missing_event() {
        assert!(matches!(
            WebhookEvent::parse(b"{not json"),
            Err(EventError::Json(_))
        ));
        assert!(matches!(
            WebhookEvent::parse(br#"{"room":{"sid":"RM_1"}}"#),
            Err(EventError::MissingEvent)
        ));
        assert!(matches!(
            WebhookEvent::parse(br#"{"event":"room_started","createdAt":"soon"}"#),
            Err(EventError::Json(_))
        ));
    }
}
