//! A tolerant model of LiveKit's `WebhookEvent` as Go's protojson writes it.
//!
//! We do not use `livekit_protocol`'s generated types here: they reject an enum name a
//! newer LiveKit adds, and they insist on one JSON type per field. protojson writes
//! 64-bit integers as strings, omits zero values and may add fields at any time, so
//! every field is optional, integers accept strings or numbers, and enums stay strings.
//! Times are read through [`super::time`]: one outside the sane window is absent.
//!
//! Tolerance stops where the store would choke: a string holding a NUL (PostgreSQL's
//! text cannot hold one) or an id or name longer than [`MAX_ID_BYTES`] (PostgreSQL
//! cannot index one) is refused here, with the same answer on every store, so that such
//! an event fails alone instead of failing the transaction it would share.

use std::collections::BTreeMap;

use std::fmt;

use super::time::{ms_from_nanos, ms_from_secs, sane_ms, sane_nanos};

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
    #[error("a string in the body holds a NUL character (\\u0000)")]
    Nul,
    #[error("{field} is {len} bytes long; at most {MAX_ID_BYTES} are accepted")]
    TooLong { field: &'static str, len: usize },
}

impl EventError {
    /// A short, fixed name for the metric label and the log.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            EventError::Json(_) => "malformed_json",
            EventError::MissingEvent => "missing_event",
            EventError::Nul => "nul_character",
            EventError::TooLong { .. } => "id_too_long",
        }
    }
}

/// The longest event name, id or room name accepted, in bytes. LiveKit's ids are about
/// 15 bytes and its room names at most 256 by default; PostgreSQL cannot index a key
/// of more than about 2,700 bytes.
pub const MAX_ID_BYTES: usize = 1024;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WebhookEvent {
    pub event: String,
    pub id: Option<String>,
    #[serde(deserialize_with = "int")]
    pub(crate) created_at: Option<i64>,
    pub room: Option<Room>,
    pub participant: Option<Participant>,
    pub egress_info: Option<EgressInfo>,
    /// When the bridge received the event (unix ms): the time of last resort when
    /// LiveKit's own times are missing or not believable.
    #[serde(skip)]
    pub(crate) received_at_ms: Option<i64>,
}

impl WebhookEvent {
    /// Parses a body received now, accepting anything LiveKit may add but requiring
    /// `event`.
    pub fn parse(body: &[u8]) -> Result<WebhookEvent, EventError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        WebhookEvent::parse_at(body, now_ms)
    }

    /// [`WebhookEvent::parse`] for a body received at `received_at_ms`.
    pub fn parse_at(body: &[u8], received_at_ms: i64) -> Result<WebhookEvent, EventError> {
        let mut event: WebhookEvent = serde_json::from_slice(body)?;
        if event.event.is_empty() {
            return Err(EventError::MissingEvent);
        }
        if has_escaped_nul(body) {
            return Err(EventError::Nul);
        }
        event.check_lengths()?;
        event.received_at_ms = Some(received_at_ms);
        Ok(event)
    }

    /// Refuses ids and names the store could not index.
    fn check_lengths(&self) -> Result<(), EventError> {
        let room = self.room.as_ref();
        let participant = self.participant.as_ref();
        let egress = self.egress_info.as_ref();
        let fields = [
            ("event", Some(&self.event)),
            ("id", self.id.as_ref()),
            ("room.sid", room.map(|r| &r.sid)),
            ("room.name", room.map(|r| &r.name)),
            ("participant.sid", participant.map(|p| &p.sid)),
            ("participant.identity", participant.map(|p| &p.identity)),
            ("egressInfo.egressId", egress.map(|e| &e.egress_id)),
            ("egressInfo.roomId", egress.map(|e| &e.room_id)),
            ("egressInfo.roomName", egress.map(|e| &e.room_name)),
        ];
        match fields
            .into_iter()
            .find_map(|(field, value)| value.filter(|v| v.len() > MAX_ID_BYTES).map(|v| (field, v)))
        {
            Some((field, value)) => Err(EventError::TooLong {
                field,
                len: value.len(),
            }),
            None => Ok(()),
        }
    }

    /// When the event was received, if that is a sane time.
    pub fn received_at_ms(&self) -> Option<i64> {
        self.received_at_ms.and_then(sane_ms)
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

    /// `createdAt` in milliseconds (LiveKit sends seconds), if it is a sane time.
    pub fn created_at_ms(&self) -> Option<i64> {
        self.created_at.and_then(ms_from_secs)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Room {
    pub(crate) sid: String,
    pub(crate) name: String,
    #[serde(deserialize_with = "int")]
    pub(crate) creation_time: Option<i64>,
    #[serde(deserialize_with = "int")]
    pub(crate) creation_time_ms: Option<i64>,
    pub(crate) metadata: String,
}

impl Room {
    /// Creation time in ms, from the precise field when it is a sane time.
    pub fn created_at_ms(&self) -> Option<i64> {
        self.creation_time_ms
            .and_then(sane_ms)
            .or_else(|| self.creation_time.and_then(ms_from_secs))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Participant {
    pub(crate) sid: String,
    pub(crate) identity: String,
    /// `STANDARD` is protojson's zero value and therefore usually absent.
    pub(crate) kind: Option<String>,
    #[serde(deserialize_with = "int")]
    pub(crate) joined_at: Option<i64>,
    #[serde(deserialize_with = "int")]
    pub(crate) joined_at_ms: Option<i64>,
    pub(crate) attributes: BTreeMap<String, String>,
}

impl Participant {
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("STANDARD")
    }

    /// Join time in ms, from the precise field when it is a sane time.
    pub fn joined_at_ms(&self) -> Option<i64> {
        self.joined_at_ms
            .and_then(sane_ms)
            .or_else(|| self.joined_at.and_then(ms_from_secs))
    }

    /// The caller's (or callee's) number, on a SIP participant that has one.
    pub fn sip_phone_number(&self) -> Option<&str> {
        (self.kind() == "SIP")
            .then(|| self.attributes.get("sip.phoneNumber"))
            .flatten()
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EgressInfo {
    pub(crate) egress_id: String,
    pub(crate) room_id: String,
    pub(crate) room_name: String,
    /// `EGRESS_STARTING` is the zero value, so an absent status means starting.
    pub(crate) status: Option<String>,
    #[serde(deserialize_with = "int")]
    pub(crate) started_at: Option<i64>,
    #[serde(deserialize_with = "int")]
    pub(crate) ended_at: Option<i64>,
    #[serde(deserialize_with = "int")]
    pub(crate) updated_at: Option<i64>,
    pub(crate) error: String,
    pub(crate) file_results: Vec<FileInfo>,
    /// Deprecated single-file result, still filled by current egress versions.
    pub(crate) file: Option<FileInfo>,
}

impl EgressInfo {
    pub fn status(&self) -> &str {
        self.status.as_deref().unwrap_or("EGRESS_STARTING")
    }

    /// `startedAt` in ns, if it is a sane time.
    pub fn started_at_ns(&self) -> Option<i64> {
        self.started_at.and_then(sane_nanos)
    }

    /// `endedAt` in ns, if it is a sane time.
    pub fn ended_at_ns(&self) -> Option<i64> {
        self.ended_at.and_then(sane_nanos)
    }

    /// When the egress ended, in ms: `endedAt`, else its file's `endedAt`, else
    /// `updatedAt` (the last change, which an ended egress's end is).
    pub fn ended_at_ms(&self) -> Option<i64> {
        self.ended_at
            .and_then(ms_from_nanos)
            .or_else(|| self.file().and_then(|f| f.ended_at).and_then(ms_from_nanos))
            .or_else(|| self.updated_at.and_then(ms_from_nanos))
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
    pub(crate) filename: String,
    #[serde(deserialize_with = "int")]
    pub(crate) started_at: Option<i64>,
    #[serde(deserialize_with = "int")]
    pub(crate) ended_at: Option<i64>,
    #[serde(deserialize_with = "int")]
    pub(crate) duration: Option<i64>,
    #[serde(deserialize_with = "int")]
    pub(crate) size: Option<i64>,
    pub(crate) location: String,
}

/// Whether a JSON text holds the escape of a NUL character (`\u0000`) in a string.
/// JSON cannot hold a raw NUL in a string (the parser refuses control characters), so
/// the escape is the only way in; an escaped backslash (`\\u0000`) is no NUL.
fn has_escaped_nul(body: &[u8]) -> bool {
    let mut i = 0;
    while let Some(at) = body[i..].iter().position(|b| *b == b'\\') {
        let escape = i + at;
        if body.get(escape + 1) == Some(&b'u')
            && body.get(escape + 2..escape + 6) == Some(b"0000".as_slice())
        {
            return true;
        }
        // Skip the backslash and the character it escapes.
        i = escape + 2;
        if i >= body.len() {
            return false;
        }
    }
    false
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
            "room":{"sid":"RM_1","name":"r","creationTime":1761234567, "futureField":{"x":1}},
            "participant":{"sid":"PA_1","kind":"HOLOGRAM","joinedAtMs":"123","state":"NEW_STATE"}}"#;
        let e = WebhookEvent::parse(body).unwrap();
        assert_eq!(e.created_at, Some(17));
        assert_eq!(e.room.unwrap().created_at_ms(), Some(1_761_234_567_000));
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
    fn a_nul_in_any_string_is_refused() {
        for body in [
            r#"{"event":"room_started","room":{"sid":"RM_1","metadata":"a\u0000b"}}"#,
            r#"{"event":"room_started","room":{"sid":"RM_\u0000"}}"#,
            r#"{"event":"room_started","unknown\u0000key":1}"#,
            r#"{"event":"participant_joined","participant":{"attributes":{"x":"\u0000"}}}"#,
        ] {
            assert!(
                matches!(WebhookEvent::parse(body.as_bytes()), Err(EventError::Nul)),
                "{body}"
            );
        }
        // An escaped backslash before "u0000" is text, not a NUL.
        let text = br#"{"event":"room_started","room":{"metadata":"C:\\u0000"}}"#;
        assert_eq!(
            WebhookEvent::parse(text).unwrap().room.unwrap().metadata,
            r"C:\u0000"
        );
        assert_eq!(EventError::Nul.reason(), "nul_character");
    }

    #[test]
    fn ids_and_names_longer_than_the_bound_are_refused() {
        let at_bound = "R".repeat(MAX_ID_BYTES);
        let body = format!(r#"{{"event":"room_started","room":{{"sid":"{at_bound}"}}}}"#);
        assert!(WebhookEvent::parse(body.as_bytes()).is_ok());
        let long = "R".repeat(MAX_ID_BYTES + 1);
        for (body, field) in [
            (format!(r#"{{"event":"room_started","id":"{long}"}}"#), "id"),
            (
                format!(r#"{{"event":"room_started","room":{{"sid":"{long}"}}}}"#),
                "room.sid",
            ),
            (format!(r#"{{"event":"{long}"}}"#), "event"),
            (
                format!(r#"{{"event":"egress_ended","egressInfo":{{"roomName":"{long}"}}}}"#),
                "egressInfo.roomName",
            ),
        ] {
            match WebhookEvent::parse(body.as_bytes()) {
                Err(EventError::TooLong { field: f, len }) => {
                    assert_eq!((f, len), (field, MAX_ID_BYTES + 1))
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        // Metadata is no id: LiveKit allows large metadata.
        let body = format!(r#"{{"event":"room_started","room":{{"metadata":"{long}{long}"}}}}"#);
        assert!(WebhookEvent::parse(body.as_bytes()).is_ok());
    }

    #[test]
    fn times_outside_the_window_or_overflowing_read_as_absent() {
        let e = WebhookEvent::parse_at(
            br#"{"event":"participant_joined","createdAt":"-9223372036854775808",
                "room":{"creationTime":"9999999999999999","creationTimeMs":"0"},
                "participant":{"joinedAt":"9999999999999999","joinedAtMs":"-1"},
                "egressInfo":{"startedAt":"5","endedAt":"9223372036854775807","updatedAt":"-3"}}"#,
            1_761_234_567_000,
        )
        .unwrap();
        assert_eq!(e.created_at_ms(), None);
        assert_eq!(e.room.as_ref().unwrap().created_at_ms(), None);
        assert_eq!(e.participant.as_ref().unwrap().joined_at_ms(), None);
        let info = e.egress_info.as_ref().unwrap();
        assert_eq!((info.started_at_ns(), info.ended_at_ns()), (None, None));
        assert_eq!(info.ended_at_ms(), None);
        assert_eq!(e.received_at_ms(), Some(1_761_234_567_000));
        // The time of receipt is believed only inside the window too.
        let e = WebhookEvent::parse_at(br#"{"event":"room_started"}"#, 0).unwrap();
        assert_eq!(e.received_at_ms(), None);
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
