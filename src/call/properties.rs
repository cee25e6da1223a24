//! Property tests of the call state machine: arbitrary sequences of LiveKit events,
//! with arbitrary 64-bit times and strings, never make it panic or break
//! [`super::invariants`], and its state survives the store's JSON round trip.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{invariants, machine::CallState};
use crate::livekit::{event::WebhookEvent, time::sane_ms};

const ROOM: &str = "RM_kfWfYGzHvVYy";

fn call() -> CallState {
    let workflow = crate::testkit::workflow::sample_workflow();
    CallState::new(
        1,
        "abc12345".into(),
        &workflow,
        ROOM,
        "VOICEKIT_workflow_abc12345_8453",
    )
}

/// Any int64, weighted towards the values that matter: the type's edges, zero and -1,
/// and believable times in seconds, milliseconds and nanoseconds (a uniform int64 is
/// almost never one).
fn int64() -> BoxedStrategy<i64> {
    prop_oneof![
        3 => any::<i64>(),
        1 => prop::sample::select(vec![
            i64::MIN, i64::MIN + 1, i64::MAX, 0, -1, 1,
            9_999_999_999_999_999, 4_102_444_800, 946_684_799,
        ]),
        2 => 1_700_000_000i64..1_800_000_000,
        2 => 1_700_000_000_000i64..1_800_000_000_000,
        2 => 1_700_000_000_000_000_000i64..1_800_000_000_000_000_000,
    ]
    .boxed()
}

/// An int64 field as protojson might write it: a string, a number, or absent.
fn int64_field() -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        1 => Just(None),
        3 => int64().prop_map(|n| Some(json!(n.to_string()))),
        1 => int64().prop_map(|n| Some(json!(n))),
    ]
    .boxed()
}

/// Any string, now and then one the machine looks for.
fn text(known: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        2 => prop::sample::select(known).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
    .boxed()
}

fn put(obj: &mut Value, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        obj[key] = v;
    }
}

fn file() -> BoxedStrategy<Value> {
    (
        text(&["rec/a.ogg", "", "x.MP4", "noext"]),
        text(&["https://voicekit-recordings.s3.amazonaws.com/rec/a.ogg", ""]),
        int64_field(),
        int64_field(),
        int64_field(),
        int64_field(),
    )
        .prop_map(|(filename, location, started, ended, duration, size)| {
            let mut f = json!({"filename": filename, "location": location});
            put(&mut f, "startedAt", started);
            put(&mut f, "endedAt", ended);
            put(&mut f, "duration", duration);
            put(&mut f, "size", size);
            f
        })
        .boxed()
}

fn egress_info() -> BoxedStrategy<Value> {
    (
        text(&["EG_1", "EG_2"]),
        prop::option::of(text(&[
            "EGRESS_COMPLETE",
            "EGRESS_FAILED",
            "EGRESS_ABORTED",
            "EGRESS_LIMIT_REACHED",
            "EGRESS_ACTIVE",
        ])),
        (int64_field(), int64_field(), int64_field()),
        prop::collection::vec(file(), 0..3),
        prop::option::of(file()),
    )
        .prop_map(|(id, status, (started, ended, updated), results, legacy)| {
            let mut info = json!({"egressId": id, "roomId": ROOM, "fileResults": results});
            put(&mut info, "status", status.map(Value::from));
            put(&mut info, "startedAt", started);
            put(&mut info, "endedAt", ended);
            put(&mut info, "updatedAt", updated);
            put(&mut info, "file", legacy);
            info
        })
        .boxed()
}

fn participant() -> BoxedStrategy<Value> {
    (
        text(&["PA_agent", "PA_sip", "PA_other"]),
        prop::option::of(text(&["AGENT", "SIP", "EGRESS", "STANDARD"])),
        int64_field(),
        int64_field(),
        prop::option::of(text(&["+15551230001", ""])),
    )
        .prop_map(|(sid, kind, joined_s, joined_ms, phone)| {
            let mut p = json!({"sid": sid});
            put(&mut p, "kind", kind.map(Value::from));
            put(&mut p, "joinedAt", joined_s);
            put(&mut p, "joinedAtMs", joined_ms);
            if let Some(phone) = phone {
                p["attributes"] = json!({"sip.phoneNumber": phone});
            }
            p
        })
        .boxed()
}

fn room() -> BoxedStrategy<Value> {
    (
        int64_field(),
        int64_field(),
        text(&[r#"{"phone_number":"+15559990000"}"#, ""]),
    )
        .prop_map(|(created_s, created_ms, metadata)| {
            let mut r = json!({"sid": ROOM, "name": "VOICEKIT_workflow_abc12345_8453",
                               "metadata": metadata});
            put(&mut r, "creationTime", created_s);
            put(&mut r, "creationTimeMs", created_ms);
            r
        })
        .boxed()
}

/// One LiveKit event body and when it was received.
fn event() -> BoxedStrategy<(String, i64)> {
    (
        text(&[
            "room_started",
            "room_finished",
            "participant_joined",
            "participant_left",
            "participant_connection_aborted",
            "egress_started",
            "egress_updated",
            "egress_ended",
            "bridge_room_timeout",
            "bridge_egress_reconciled",
            "track_published",
        ]),
        prop::option::of(room()),
        prop::option::of(participant()),
        prop::option::of(egress_info()),
        int64_field(),
        int64(),
    )
        .prop_map(|(name, room, participant, egress, created_at, received)| {
            let mut e = json!({"event": name});
            put(&mut e, "room", room);
            put(&mut e, "participant", participant);
            put(&mut e, "egressInfo", egress);
            put(&mut e, "createdAt", created_at);
            (e.to_string(), received)
        })
        .boxed()
}

/// Feeds the events to one call as the daemon would (parsed, then applied) and checks
/// everything emitted.
fn check_run(events: &[(String, i64)]) -> Result<(), TestCaseError> {
    let mut state = call();
    let mut emitted = Vec::new();
    for (body, received) in events {
        let Ok(event) = WebhookEvent::parse_at(body.as_bytes(), *received) else {
            continue;
        };
        let t = state.apply(&event);
        state = t.state;
        emitted.extend(t.emitted);
        let stored = serde_json::to_string(&state).unwrap();
        prop_assert_eq!(&serde_json::from_str::<CallState>(&stored).unwrap(), &state);
        for t in [
            state.started_at_ms,
            state.ended_at_ms,
            state.room_created_at_ms,
        ] {
            prop_assert!(t.is_none_or(|t| sane_ms(t).is_some()), "{t:?} in {state:?}");
        }
        prop_assert!(state.duration_seconds.is_none_or(|s| s >= 0));
    }
    if let Err(broken) = invariants::check(&emitted) {
        return Err(TestCaseError::fail(broken));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_event_sequence_keeps_the_invariants(events in prop::collection::vec(event(), 0..12)) {
        check_run(&events)?;
    }

    /// A whole call whose times are arbitrary: every event kind is there, so
    /// `call_ended` and `call_finalized` are reached on most runs.
    #[test]
    fn a_whole_call_with_arbitrary_times_keeps_the_invariants(
        joined in participant(), left in participant(), finished in room(),
        egress in egress_info(), times in prop::collection::vec((int64_field(), int64()), 5),
    ) {
        let bodies = [
            json!({"event": "participant_joined", "participant": joined.clone()}),
            json!({"event": "participant_joined", "participant": {"sid": "PA_agent", "kind": "AGENT"}}),
            json!({"event": "participant_left", "participant": left}),
            json!({"event": "room_finished", "room": finished}),
            json!({"event": "egress_ended", "egressInfo": egress}),
        ];
        let events: Vec<(String, i64)> = bodies
            .into_iter()
            .zip(times)
            .map(|(mut body, (created_at, received))| {
                put(&mut body, "createdAt", created_at);
                body["room"]["sid"] = json!(ROOM);
                (body.to_string(), received)
            })
            .collect();
        check_run(&events)?;
    }
}
