//! Sample batches for the tests of ingest and of the store's writers: one workflow and a
//! batch that shows every kind of decision.

use std::sync::Arc;

use serde_json::json;

use super::{Accepted, Incoming, plan::CreatedCall};
use crate::{
    call::{EventKind, Workflow},
    config::SharedWorkflows,
    livekit::event::WebhookEvent,
};

/// Workflow 456, `support`: rooms named `VK_<slug>_<n>`.
pub(crate) fn workflow() -> Workflow {
    Workflow {
        id: 456,
        slug: "support".into(),
        organization_id: 789,
        events_webhook_url: "http://127.0.0.1:1/".into(),
        call_started_hook: None,
        room_pattern: Some(regex::Regex::new(r"^VK_(?P<call_slug>[a-z0-9]+)_\d+$").unwrap()),
        signing_keys: vec![],
    }
}

pub(crate) fn workflows() -> SharedWorkflows {
    Arc::new(arc_swap::ArcSwap::from_pointee(vec![workflow()]))
}

/// A LiveKit body as the store's writer receives it, keyed by its id.
pub(crate) fn incoming(body: &serde_json::Value) -> Incoming {
    let event = WebhookEvent::parse(body.to_string().as_bytes()).unwrap();
    Incoming {
        dedupe_key: event.id.clone().unwrap(),
        event,
    }
}

/// `room_started` of a new room `RM_<n>` named `VK_c<n>_1`.
pub(crate) fn room_started(n: usize) -> serde_json::Value {
    let room = json!({"sid": format!("RM_{n}"), "name": format!("VK_c{n}_1")});
    json!({"id": format!("EV_{n}"), "event": "room_started", "room": room})
}

/// Room RM_1 (a whole call), a duplicate in the batch and one of an earlier event, a
/// room of no workflow, an event type that concerns no call, and a second new room.
pub(crate) fn events() -> Vec<serde_json::Value> {
    let room = |sid: &str, name: &str| json!({"sid": sid, "name": name, "creationTimeMs": "1761234567000"});
    let r1 = room("RM_1", "VK_abc_1");
    let agent =
        json!({"sid": "PA_a", "identity": "agent", "kind": "AGENT", "joinedAtMs": "1761234569000"});
    let sip = json!({"sid": "PA_s", "identity": "sip", "kind": "SIP", "joinedAtMs": "1761234568000",
                     "attributes": {"sip.phoneNumber": "+15551230001"}});
    let ev = |id: &str, event: &str, room: &serde_json::Value, extra: serde_json::Value| {
        let mut v = json!({"id": id, "event": event, "room": room, "createdAt": "1761234570"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    vec![
        ev("EV_1", "room_started", &r1, json!({})),
        ev("EV_1", "room_started", &r1, json!({})),
        ev(
            "EV_2",
            "participant_joined",
            &r1,
            json!({"participant": sip}),
        ),
        ev(
            "EV_3",
            "participant_joined",
            &r1,
            json!({"participant": agent}),
        ),
        ev(
            "EV_4",
            "room_started",
            &room("RM_2", "someone-else"),
            json!({}),
        ),
        ev("EV_5", "track_published", &r1, json!({})),
        ev("EV_6", "room_started", &room("RM_3", "VK_def_2"), json!({})),
        ev(
            "EV_7",
            "participant_left",
            &r1,
            json!({"participant": agent}),
        ),
        ev("EV_8", "room_finished", &r1, json!({})),
        ev(
            "EV_3",
            "participant_joined",
            &r1,
            json!({"participant": agent}),
        ),
    ]
}

/// What [`events`] come to, in order, committed together or one by one.
pub(crate) fn events_accepted() -> Vec<Accepted> {
    let applied = |emitted: &[EventKind]| Accepted::Applied {
        call_id: 1,
        emitted: emitted.to_vec(),
        new_call: None,
    };
    let created = |call_id, room_name: &str, room_sid: &str| Accepted::Applied {
        call_id,
        emitted: vec![],
        new_call: Some(Box::new(CreatedCall {
            room_name: room_name.into(),
            room_sid: room_sid.into(),
            workflow: "support".into(),
        })),
    };
    vec![
        created(1, "VK_abc_1", "RM_1"),
        Accepted::Duplicate,
        applied(&[]),
        applied(&[EventKind::CallStarted]),
        Accepted::Ignored("room maps to no workflow"),
        Accepted::Ignored("event type does not concern calls"),
        created(2, "VK_def_2", "RM_3"),
        applied(&[]),
        applied(&[EventKind::CallEnded]),
        Accepted::Duplicate,
    ]
}
