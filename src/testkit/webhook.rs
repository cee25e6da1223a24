//! LiveKit webhook bodies, byte for byte in the style LiveKit sends them.
//!
//! The bridge must accept what LiveKit really emits (DESIGN.md section 2 and the bodies
//! under `tests/fixtures/`): Go protojson field names and order, 64-bit integers as
//! strings, enums by name, zero values omitted, a fresh `EV_...` id per body and
//! `createdAt` in unix seconds. Each builder returns the body as the exact text to sign
//! and post.

use rand::Rng;
use rand::distr::Alphanumeric;

use super::protojson::Obj;

/// A room instance. `sid` is unique per instance; `name` may be reused later.
#[derive(Clone, Debug, Default)]
pub struct Room {
    pub sid: String,
    pub name: String,
    /// Often JSON; omitted from the body when empty.
    pub metadata: String,
    pub creation_time_ms: i64,
    /// Participants in the room as the event reports it; omitted when 0.
    pub num_participants: i64,
}

impl Room {
    pub fn new(sid: &str, name: &str, creation_time_ms: i64) -> Room {
        Room {
            sid: sid.into(),
            name: name.into(),
            creation_time_ms,
            ..Room::default()
        }
    }

    pub fn with_metadata(mut self, metadata: &str) -> Room {
        self.metadata = metadata.into();
        self
    }

    /// The room as an event reports it with `n` participants in it.
    pub fn with_participants(&self, n: i64) -> Room {
        Room {
            num_participants: n,
            ..self.clone()
        }
    }
}

/// A participant. `kind: None` is `STANDARD`, which protojson omits.
#[derive(Clone, Debug, Default)]
pub struct Participant {
    pub sid: String,
    pub identity: String,
    /// The display name; omitted when empty.
    pub name: String,
    /// `"SIP"`, `"AGENT"`, `"EGRESS"`, ...
    pub kind: Option<&'static str>,
    pub joined_at_ms: i64,
    pub attributes: Vec<(String, String)>,
}

impl Participant {
    pub fn standard(sid: &str, identity: &str, joined_at_ms: i64) -> Participant {
        Participant {
            sid: sid.into(),
            identity: identity.into(),
            joined_at_ms,
            ..Default::default()
        }
    }

    pub fn agent(sid: &str, identity: &str, joined_at_ms: i64) -> Participant {
        Participant {
            kind: Some("AGENT"),
            ..Participant::standard(sid, identity, joined_at_ms)
        }
    }

    /// A SIP caller: `phone_number` is `sip.phoneNumber` (the caller on inbound calls),
    /// `trunk_phone_number` is `sip.trunkPhoneNumber` (the number dialled).
    pub fn sip(
        sid: &str,
        phone_number: &str,
        trunk_phone_number: &str,
        joined_at_ms: i64,
    ) -> Participant {
        let call_id = random_suffix();
        Participant {
            kind: Some("SIP"),
            name: format!("Phone {phone_number}"),
            ..Participant::standard(sid, &format!("sip_{phone_number}"), joined_at_ms)
        }
        .with_attribute("sip.callID", &format!("SCL_{call_id}"))
        .with_attribute("sip.callIDFull", &format!("{call_id}@pbx.provider.example"))
        .with_attribute("sip.callStatus", "active")
        .with_attribute("sip.callTag", &format!("LK_{call_id}"))
        .with_attribute("sip.hostname", "pbx.provider.example")
        .with_attribute("sip.phoneNumber", phone_number)
        .with_attribute("sip.ruleID", "SDR_Kq2wE9rT5yUi")
        .with_attribute("sip.trunkID", "ST_Zx7cV4bN1mAs")
        .with_attribute("sip.trunkPhoneNumber", trunk_phone_number)
    }

    /// Adds or replaces one attribute.
    pub fn with_attribute(mut self, key: &str, value: &str) -> Participant {
        self.attributes.retain(|(k, _)| k != key);
        self.attributes.push((key.into(), value.into()));
        self
    }
}

/// One uploaded file of an egress (`fileResults[]` and the legacy `file`).
#[derive(Clone, Debug, Default)]
pub struct FileResult {
    /// The object key, without any configured prefix.
    pub filename: String,
    pub duration_ns: i64,
    pub size: i64,
    /// E.g. `https://{bucket}.s3.amazonaws.com/{key}` or `{endpoint}/{bucket}/{key}`.
    pub location: String,
}

/// A fresh LiveKit event id, `EV_` and 12 random alphanumerics.
pub fn new_event_id() -> String {
    format!("EV_{}", random_suffix())
}

pub fn room_started(room: &Room, created_at_s: i64) -> String {
    event("room_started", full_room(room), None, created_at_s)
}

pub fn room_finished(room: &Room, created_at_s: i64) -> String {
    event("room_finished", full_room(room), None, created_at_s)
}

pub fn participant_joined(room: &Room, p: &Participant, created_at_s: i64) -> String {
    let participant = participant(p, "ACTIVE", "");
    event(
        "participant_joined",
        full_room(room),
        Some(("participant", participant)),
        created_at_s,
    )
}

pub fn participant_left(room: &Room, p: &Participant, created_at_s: i64) -> String {
    let participant = participant(p, "DISCONNECTED", "CLIENT_INITIATED");
    event(
        "participant_left",
        full_room(room),
        Some(("participant", participant)),
        created_at_s,
    )
}

pub fn participant_connection_aborted(room: &Room, p: &Participant, created_at_s: i64) -> String {
    let participant = participant(p, "DISCONNECTED", "CONNECTION_TIMEOUT");
    let room = full_room(room);
    event(
        "participant_connection_aborted",
        room,
        Some(("participant", participant)),
        created_at_s,
    )
}

/// `egress_started` for an audio-only room composite egress to S3. Its status is
/// `EGRESS_STARTING`, the zero value, so the body has no `status`.
pub fn egress_started(room: &Room, egress_id: &str, started_at_ns: i64, filename: &str) -> String {
    let file = Obj::new().string("filename", filename);
    let info = egress_head(room, egress_id, "EGRESS_STARTING")
        .int64("startedAt", started_at_ns)
        .int64("updatedAt", started_at_ns)
        .object("roomComposite", room_composite(room))
        .list("fileResults", vec![file.clone()])
        .object("file", file);
    event(
        "egress_started",
        short_room(room),
        Some(("egressInfo", info)),
        started_at_ns / NS,
    )
}

/// `egress_ended` with `status` such as `EGRESS_COMPLETE`, `EGRESS_FAILED`,
/// `EGRESS_ABORTED` or `EGRESS_LIMIT_REACHED`, and the uploaded file if any.
pub fn egress_ended(
    room: &Room,
    egress_id: &str,
    status: &str,
    started_at_ns: i64,
    ended_at_ns: i64,
    file: Option<&FileResult>,
) -> String {
    let updated_at_ns = ended_at_ns + 100_000_000;
    let file = file.map(|f| {
        Obj::new()
            .string("filename", &f.filename)
            .int64("startedAt", started_at_ns)
            .int64("endedAt", ended_at_ns)
            .int64("duration", f.duration_ns)
            .int64("size", f.size)
            .string("location", &f.location)
    });
    let (details, error) = match status {
        "EGRESS_FAILED" => ("", "pipeline failed"),
        "EGRESS_ABORTED" => ("", "egress aborted"),
        "EGRESS_LIMIT_REACHED" => ("End reason: Limit reached", ""),
        _ => ("End reason: Source closed", ""),
    };
    let mut info = egress_head(room, egress_id, status)
        .int64("startedAt", started_at_ns)
        .int64("endedAt", ended_at_ns)
        .int64("updatedAt", updated_at_ns)
        .object("roomComposite", room_composite(room))
        .list("fileResults", file.iter().cloned().collect())
        .string("details", details)
        .string("error", error);
    if let Some(file) = file {
        info = info.object("file", file);
    }
    event(
        "egress_ended",
        short_room(room),
        Some(("egressInfo", info)),
        updated_at_ns / NS,
    )
}

/// `body` with its event id replaced by `id` (to post one event under a chosen id).
///
/// # Panics
/// When `body` is not a webhook body with its id written once.
pub fn with_id(body: &str, id: &str) -> String {
    let old = format!(
        "\"id\":{}",
        serde_json::to_string(&event_id(body)).expect("id")
    );
    assert_eq!(
        body.matches(&old).count(),
        1,
        "event id must occur once in {body}"
    );
    body.replacen(
        &old,
        &format!("\"id\":{}", serde_json::to_string(id).expect("id")),
        1,
    )
}

/// The `id` of a webhook body.
///
/// # Panics
/// When `body` is not JSON with a string `id`.
pub fn event_id(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).expect("webhook body is JSON");
    value["id"]
        .as_str()
        .expect("webhook body has a string id")
        .to_owned()
}

/// `body` with a space after every comma outside strings, as Go's protojson
/// randomly emits. The JSON value is unchanged, the bytes (and hash) are not.
pub fn with_extra_spaces(body: &str) -> String {
    let mut out = String::with_capacity(body.len() * 11 / 10);
    let (mut in_string, mut escaped) = (false, false);
    for c in body.chars() {
        out.push(c);
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c == ',' {
            out.push(' ');
        }
    }
    out
}

const NS: i64 = 1_000_000_000;

fn event(name: &str, room: Obj, detail: Option<(&str, Obj)>, created_at_s: i64) -> String {
    let mut body = Obj::new().string("event", name).object("room", room);
    if let Some((key, value)) = detail {
        body = body.object(key, value);
    }
    body.string("id", &new_event_id())
        .int64("createdAt", created_at_s)
        .build()
}

/// The room as room and participant events carry it (the TURN password redacted, as
/// LiveKit's webhook sender does).
fn full_room(room: &Room) -> Obj {
    let codecs = ["audio/PCMU", "audio/PCMA", "audio/opus", "audio/red"]
        .map(|mime| Obj::new().string("mime", mime));
    short_room(room)
        .int32("emptyTimeout", 300)
        .int32("departureTimeout", 20)
        .int64("creationTime", room.creation_time_ms / 1000)
        .int64("creationTimeMs", room.creation_time_ms)
        .string("turnPassword", "x9W3s0Zq...redacted")
        .list("enabledCodecs", codecs.into())
        .string("metadata", &room.metadata)
        .int32("numParticipants", room.num_participants)
        .object(
            "version",
            Obj::new().int64("unixMicro", room.creation_time_ms * 1000),
        )
}

/// The room as egress events carry it: only `sid` and `name`.
fn short_room(room: &Room) -> Obj {
    Obj::new()
        .string("sid", &room.sid)
        .string("name", &room.name)
}

fn participant(p: &Participant, state: &str, disconnect_reason: &str) -> Obj {
    let agent = p.kind == Some("AGENT");
    let permission = Obj::new()
        .boolean("canSubscribe", true)
        .boolean("canPublish", true)
        .boolean("canPublishData", true)
        .boolean("canUpdateMetadata", true)
        .boolean("agent", agent);
    Obj::new()
        .string("sid", &p.sid)
        .string("identity", &p.identity)
        .enumeration("state", state, "JOINING")
        .int64("joinedAt", p.joined_at_ms / 1000)
        .int64("joinedAtMs", p.joined_at_ms)
        .string("name", &p.name)
        .int32("version", 2)
        .object("permission", permission)
        .enumeration("kind", p.kind.unwrap_or("STANDARD"), "STANDARD")
        .map("attributes", &p.attributes)
        .enumeration("disconnectReason", disconnect_reason, "")
}

fn egress_head(room: &Room, egress_id: &str, status: &str) -> Obj {
    Obj::new()
        .string("egressId", egress_id)
        .string("roomId", &room.sid)
        .string("roomName", &room.name)
        .enumeration(
            "sourceType",
            "EGRESS_SOURCE_TYPE_SDK",
            "EGRESS_SOURCE_TYPE_WEB",
        )
        .enumeration("status", status, "EGRESS_STARTING")
}

/// The egress request, with credentials redacted as LiveKit sends it.
fn room_composite(room: &Room) -> Obj {
    let s3 = Obj::new()
        .string("accessKey", "{access_key}")
        .string("secret", "{secret}")
        .string("region", "us-east-1")
        .string("bucket", "voicekit-recordings");
    let output = Obj::new()
        .enumeration("fileType", "OGG", "DEFAULT_FILETYPE")
        .string("filepath", "recordings/{room_name}/{time}")
        .object("s3", s3);
    Obj::new()
        .string("roomName", &room.name)
        .boolean("audioOnly", true)
        .list("fileOutputs", vec![output])
}

fn random_suffix() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(12)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The object keys of a JSON text in the order written, each with its nesting depth.
    fn keys_in_order(text: &str) -> Vec<(usize, String)> {
        let (mut keys, mut depth, mut chars) = (Vec::new(), 0, text.chars().peekable());
        while let Some(c) = chars.next() {
            match c {
                '{' | '[' => depth += 1,
                '}' | ']' => depth -= 1,
                '"' => {
                    let mut s = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => s.extend(chars.next()),
                            '"' => break,
                            c => s.push(c),
                        }
                    }
                    while chars.peek() == Some(&' ') {
                        chars.next();
                    }
                    if chars.peek() == Some(&':') {
                        keys.push((depth, s));
                    }
                }
                _ => {}
            }
        }
        keys
    }

    /// Asserts that the keys `built` and `fixture` share come in the same order (arrays
    /// may differ in length), and that `built` writes none the fixture lacks.
    fn assert_same_order(built: &str, fixture: &str) {
        let (built, fixture) = (keys_in_order(built), keys_in_order(fixture));
        let extra: Vec<_> = built.iter().filter(|k| !fixture.contains(k)).collect();
        assert!(extra.is_empty(), "keys LiveKit does not send: {extra:?}");
        let shared = |a: &[(usize, String)], b: &[(usize, String)]| {
            let mut keys: Vec<(usize, String)> =
                a.iter().filter(|k| b.contains(k)).cloned().collect();
            keys.dedup();
            keys
        };
        assert_eq!(shared(&built, &fixture), shared(&fixture, &built));
    }

    fn fixture_room() -> Room {
        Room::new(
            "RM_hycBMAjmt6Ub",
            "call-_+15551230001_7dKqP2sVw9Xr",
            1_761_234_567_123,
        )
    }

    #[test]
    fn a_sip_caller_joining_is_written_in_livekits_field_order() {
        let caller = Participant::sip(
            "PA_Jx4fZ8nQ2wEr",
            "+15551230001",
            "+15557650002",
            1_761_234_568_456,
        );
        let built =
            participant_joined(&fixture_room().with_participants(1), &caller, 1_761_234_568);
        let fixture = include_str!("../../tests/fixtures/participant_joined_sip.json");
        assert_same_order(&built, fixture);
        let (built, fixture): (Value, Value) = (
            serde_json::from_str(&built).unwrap(),
            serde_json::from_str(fixture).unwrap(),
        );
        for key in [
            "sid",
            "identity",
            "state",
            "joinedAtMs",
            "name",
            "kind",
            "permission",
        ] {
            assert_eq!(
                built["participant"][key], fixture["participant"][key],
                "{key}"
            );
        }
        assert_eq!(
            built["room"]["creationTimeMs"],
            fixture["room"]["creationTimeMs"]
        );
        assert_eq!(built["createdAt"], fixture["createdAt"]);
    }

    #[test]
    fn room_and_egress_events_are_written_in_livekits_field_order() {
        let room = fixture_room();
        let key = "recordings/call-_+15551230001_7dKqP2sVw9Xr/2025-10-23T154929.ogg";
        let file = FileResult {
            filename: key.into(),
            duration_ns: 243_887_654_321,
            size: 1_948_211,
            location: format!("https://voicekit-recordings.s3.amazonaws.com/{key}"),
        };
        let cases = [
            (
                room_started(&room, 1_761_234_567),
                include_str!("../../tests/fixtures/room_started.json"),
            ),
            (
                room_finished(&room, 1_761_234_812),
                include_str!("../../tests/fixtures/room_finished.json"),
            ),
            (
                egress_started(&room, "EG_Qw3eR5tY7uI9", 1_761_234_569_012_345_678, key),
                include_str!("../../tests/fixtures/egress_started.json"),
            ),
            (
                egress_ended(
                    &room,
                    "EG_Qw3eR5tY7uI9",
                    "EGRESS_COMPLETE",
                    1_761_234_569_012_345_678,
                    1_761_234_813_987_654_321,
                    Some(&file),
                ),
                include_str!("../../tests/fixtures/egress_ended.json"),
            ),
        ];
        for (built, fixture) in cases {
            assert_same_order(&built, fixture);
        }
    }

    #[test]
    fn zero_values_are_left_out_and_64_bit_integers_are_strings() {
        let web_user = Participant::standard("PA_y", "web-user", 1_761_234_568_000);
        let left: Value =
            serde_json::from_str(&participant_left(&fixture_room(), &web_user, 1_761_234_600))
                .unwrap();
        assert!(
            left["participant"].get("kind").is_none(),
            "STANDARD is omitted"
        );
        assert!(
            left["room"].get("numParticipants").is_none(),
            "0 is omitted"
        );
        assert!(left["room"].get("metadata").is_none(), "empty is omitted");
        assert_eq!(left["participant"]["joinedAtMs"], "1761234568000");
        assert_eq!(left["room"]["emptyTimeout"], 300);
        let started: Value =
            serde_json::from_str(&egress_started(&fixture_room(), "EG_x", 1, "a.ogg")).unwrap();
        assert!(
            started["egressInfo"].get("status").is_none(),
            "EGRESS_STARTING is omitted"
        );
    }

    #[test]
    fn each_body_gets_a_fresh_id_and_with_id_replaces_only_the_id() {
        let room = fixture_room();
        let (a, b) = (room_started(&room, 1), room_started(&room, 1));
        assert!(event_id(&a).starts_with("EV_") && event_id(&a).len() == 15);
        assert_ne!(event_id(&a), event_id(&b));
        let fixed = with_id(&a, "EV_fixed");
        assert_eq!(event_id(&fixed), "EV_fixed");
        assert_eq!(fixed.replace("EV_fixed", &event_id(&a)), a);
    }

    #[test]
    fn extra_spaces_change_the_bytes_but_not_the_value() {
        let body = participant_joined(
            &fixture_room().with_metadata(r#"{"a":1,"b":"x, y"}"#),
            &Participant::agent("PA_a", "agent", 1),
            1,
        );
        let spaced = with_extra_spaces(&body);
        assert_ne!(spaced, body);
        assert!(spaced.contains(r#"x, y"#) && !spaced.contains(r#"x,  y"#));
        assert_eq!(
            serde_json::from_str::<Value>(&spaced).unwrap(),
            serde_json::from_str::<Value>(&body).unwrap()
        );
    }
}
