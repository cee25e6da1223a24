//! Ingest as a plan: what the store already knows and a batch of verified LiveKit events
//! in; the rows to write and the VoiceKit events to queue out. Nothing here reads or
//! writes anything: each store backend looks up what [`lookups`] names, asks
//! [`admit`] which rooms become calls, inserts those, and writes what
//! [`Admission::settle`] returns, all in one transaction.
//!
//! A batch is planned as if its events came one by one: an event id seen earlier in the
//! batch is a duplicate, and a room's later events apply to the state its earlier ones
//! left.

use std::collections::{HashMap, HashSet};

use rand::{Rng, distr::Alphanumeric};

use crate::{
    call::{CallState, EventKind, Workflow, machine, workflow},
    livekit::event::WebhookEvent,
    store::{HOOK_EVENT, NewCall, NewDelivery, SeenEvent, now_ms},
};

/// A verified LiveKit event and the key it is deduplicated by (LiveKit's event id, or
/// a hash of the body when it has none).
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub event: WebhookEvent,
    pub dedupe_key: String,
}

/// What became of an accepted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// Applied to a call: the VoiceKit events it queued, in order, and the call itself
    /// when the event's room became one.
    Applied {
        call_id: i64,
        emitted: Vec<EventKind>,
        new_call: Option<Box<CreatedCall>>,
    },
    /// This LiveKit event id was accepted before: nothing happens again.
    Duplicate,
    /// Stored as seen, but it concerns no call.
    Ignored(&'static str),
}

/// A call an event created, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CreatedCall {
    pub room_name: String,
    pub room_sid: String,
    pub workflow: String,
}

/// What the store knows of a batch: which of its keys were accepted before, and the
/// calls of its rooms that exist.
#[derive(Debug, Default)]
pub(crate) struct Known {
    pub seen: HashSet<String>,
    pub calls: Vec<CallState>,
}

/// Where a plan's new identifiers come from: random in the daemon, counted in tests.
pub(crate) trait Fresh {
    /// A slug for a call whose room name carries none.
    fn call_slug(&mut self) -> String;
    /// The Standard Webhooks message id of a queued event.
    fn webhook_id(&mut self) -> String;
}

/// [`Fresh`] identifiers from the thread's random generator and the clock.
pub(crate) struct Random;

impl Fresh for Random {
    fn call_slug(&mut self) -> String {
        random_slug()
    }

    fn webhook_id(&mut self) -> String {
        new_webhook_id()
    }
}

/// What the store must look up for a batch: its dedupe keys, and its rooms (each once).
pub(crate) fn lookups(batch: &[Incoming]) -> (Vec<&str>, Vec<&str>) {
    let keys = batch.iter().map(|i| i.dedupe_key.as_str()).collect();
    let mut rooms: Vec<&str> = batch.iter().filter_map(|i| i.event.room_sid()).collect();
    rooms.sort_unstable();
    rooms.dedup();
    (keys, rooms)
}

/// The first half of a plan: what each event is, and the calls to create. The store
/// inserts [`Admission::new_calls`] and passes the ids it assigned to
/// [`Admission::settle`].
pub(crate) struct Admission<'a> {
    decisions: Vec<Decision<'a>>,
    calls: HashMap<String, CallState>,
    /// The calls to insert, in the order their rooms first appear in the batch.
    pub new_calls: Vec<NewCall<'a>>,
    new_call_workflows: Vec<&'a Workflow>,
}

/// What happens to one event of a batch.
enum Decision<'a> {
    Duplicate,
    Ignored(&'static str),
    /// Apply it to the call of this room.
    Apply(&'a str),
}

/// Decides each event: a duplicate, ignored, or applied to its room's call; a room that
/// is new and maps to a workflow becomes a call.
pub(crate) fn admit<'a>(
    batch: &'a [Incoming],
    known: Known,
    workflows: &'a [Workflow],
    fresh: &mut impl Fresh,
) -> Admission<'a> {
    let mut seen = known.seen;
    let calls: HashMap<String, CallState> = known
        .calls
        .into_iter()
        .map(|c| (c.room_sid.clone(), c))
        .collect();
    let mut new_calls: Vec<NewCall<'a>> = Vec::new();
    let mut new_call_workflows = Vec::new();
    let mut decisions = Vec::with_capacity(batch.len());
    for incoming in batch {
        let event = &incoming.event;
        let decision = if !seen.insert(incoming.dedupe_key.clone()) {
            Decision::Duplicate
        } else if !machine::concerns_calls(&event.event) {
            Decision::Ignored("event type does not concern calls")
        } else if let Some(room_sid) = event.room_sid() {
            if calls.contains_key(room_sid) || new_calls.iter().any(|c| c.room_sid == room_sid) {
                Decision::Apply(room_sid)
            } else {
                let room_name = event.room_name().unwrap_or_default();
                let metadata = event.room.as_ref().map_or("", |r| r.metadata.as_str());
                match workflow::assign(workflows, room_name, metadata) {
                    Some(assignment) => {
                        let wf = workflows
                            .iter()
                            .find(|w| w.id == assignment.workflow_id)
                            .expect("assign returns configured workflows");
                        new_calls.push(NewCall {
                            room_sid,
                            room_name,
                            workflow_id: wf.id,
                            workflow_slug: &wf.slug,
                            call_slug: assignment.call_slug.unwrap_or_else(|| fresh.call_slug()),
                        });
                        new_call_workflows.push(wf);
                        Decision::Apply(room_sid)
                    }
                    None => Decision::Ignored("room maps to no workflow"),
                }
            }
        } else {
            Decision::Ignored("event concerns no room")
        };
        decisions.push(decision);
    }
    Admission {
        decisions,
        calls,
        new_calls,
        new_call_workflows,
    }
}

/// The rows a batch writes, and what became of each of its events (in batch order).
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    /// The VoiceKit events to queue, in order.
    pub deliveries: Vec<NewDelivery>,
    /// The new event ids, with the call each touched.
    pub seen: Vec<SeenEvent<'a>>,
    /// The final state of every call the batch touched.
    pub states: Vec<CallState>,
    pub results: Vec<Accepted>,
}

impl<'a> Admission<'a> {
    /// Runs the state machine over the batch, the new calls having the ids the store
    /// gave them (`ids`, by room sid).
    pub(crate) fn settle(
        self,
        batch: &'a [Incoming],
        ids: &HashMap<String, i64>,
        workflows: &[Workflow],
        fresh: &mut impl Fresh,
    ) -> Result<Plan<'a>, serde_json::Error> {
        let Admission {
            decisions,
            mut calls,
            new_calls,
            new_call_workflows,
        } = self;
        let mut created = HashMap::with_capacity(new_calls.len());
        for (row, wf) in new_calls.into_iter().zip(new_call_workflows) {
            let call_id = *ids
                .get(row.room_sid)
                .expect("the store assigns an id to every new call");
            let state = CallState::new(call_id, row.call_slug, wf, row.room_sid, row.room_name);
            calls.insert(row.room_sid.to_owned(), state);
            let call = CreatedCall {
                room_name: row.room_name.to_owned(),
                room_sid: row.room_sid.to_owned(),
                workflow: wf.slug.clone(),
            };
            created.insert(row.room_sid, Box::new(call));
        }

        let mut plan = Plan {
            deliveries: Vec::new(),
            seen: Vec::with_capacity(batch.len()),
            states: Vec::new(),
            results: Vec::with_capacity(batch.len()),
        };
        let mut touched: Vec<&str> = Vec::new();
        for (incoming, decision) in batch.iter().zip(decisions) {
            let seen = |call_id| SeenEvent {
                event_id: &incoming.dedupe_key,
                event_type: &incoming.event.event,
                room_sid: incoming.event.room_sid(),
                call_id,
            };
            match decision {
                Decision::Duplicate => plan.results.push(Accepted::Duplicate),
                Decision::Ignored(why) => {
                    plan.seen.push(seen(None));
                    plan.results.push(Accepted::Ignored(why));
                }
                Decision::Apply(room_sid) => {
                    let state = calls.remove(room_sid).expect("admitted rooms have a call");
                    let transition = state.apply(&incoming.event);
                    let call = transition.state;
                    queue(
                        &mut plan.deliveries,
                        &call,
                        &transition.emitted,
                        workflows,
                        fresh,
                    )?;
                    plan.seen.push(seen(Some(call.call_id)));
                    plan.results.push(Accepted::Applied {
                        call_id: call.call_id,
                        emitted: transition.emitted.iter().map(|e| e.event.kind()).collect(),
                        // The room's first event in the batch is the one that made it a call.
                        new_call: created.remove(room_sid),
                    });
                    if !touched.contains(&room_sid) {
                        touched.push(room_sid);
                    }
                    calls.insert(room_sid.to_owned(), call);
                }
            }
        }
        plan.states = touched
            .iter()
            .map(|r| calls.remove(*r).expect("touched rooms have a call"))
            .collect();
        Ok(plan)
    }
}

/// A call's VoiceKit events for the outbox, in the batch's order.
fn queue(
    out: &mut Vec<NewDelivery>,
    call: &CallState,
    emitted: &[machine::Emitted],
    workflows: &[Workflow],
    fresh: &mut impl Fresh,
) -> Result<(), serde_json::Error> {
    for emitted in emitted {
        let kind = emitted.event.kind();
        let recording = emitted
            .recording
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        let payload = emitted.event.to_json();
        let has_hook = || {
            workflows
                .iter()
                .any(|w| w.id == call.workflow_id && w.call_started_hook.is_some())
        };
        let hook = (kind == EventKind::CallStarted && has_hook()).then(|| payload.clone());
        out.push(NewDelivery {
            webhook_id: fresh.webhook_id(),
            call_id: call.call_id,
            seq: kind.seq(),
            event_type: kind.as_str(),
            workflow_id: call.workflow_id,
            payload,
            recording,
        });
        if let Some(payload) = hook {
            // The hook gets the call_started payload too, as its own outbox row (seq 0):
            // it never holds up the call's events.
            out.push(NewDelivery {
                webhook_id: fresh.webhook_id(),
                call_id: call.call_id,
                seq: 0,
                event_type: HOOK_EVENT,
                workflow_id: call.workflow_id,
                payload,
                recording: None,
            });
        }
    }
    Ok(())
}

/// An 8-character lowercase alphanumeric call slug, for rooms whose name carries none.
fn random_slug() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// The Standard Webhooks message id: stable across every retry of one event.
///
/// It starts with the time (milliseconds, 7 base-62 digits, in ASCII order) and ends in
/// 17 random characters: ids made close in time sort close together, so each batch's
/// rows land on the last pages of the outbox's unique index instead of one random page
/// each, and a commit writes fewer pages.
fn new_webhook_id() -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(28);
    id.push_str("msg_");
    let mut ms = u64::try_from(now_ms()).unwrap_or(0);
    let mut time = [b'0'; 7];
    for digit in time.iter_mut().rev() {
        *digit = DIGITS[(ms % 62) as usize];
        ms /= 62;
    }
    id.extend(time.iter().map(|&d| d as char));
    id.extend(
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(17)
            .map(char::from),
    );
    id
}

#[cfg(test)]
mod tests;
