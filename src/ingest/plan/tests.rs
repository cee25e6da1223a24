use super::*;
use crate::ingest::sample;

/// Counted identifiers: the same batch always plans the same rows.
#[derive(Default)]
struct Counted(usize);

impl Fresh for Counted {
    fn call_slug(&mut self) -> String {
        self.0 += 1;
        format!("slug{}", self.0)
    }

    fn webhook_id(&mut self) -> String {
        self.0 += 1;
        format!("msg_{}", self.0)
    }
}

/// A store in memory that executes plans as the backends do.
#[derive(Default)]
struct Memory {
    seen: HashSet<String>,
    calls: HashMap<String, CallState>,
    last_id: i64,
    outbox: Vec<NewDelivery>,
    remembered: Vec<(String, Option<i64>)>,
}

impl Memory {
    fn commit(
        &mut self,
        batch: &[Incoming],
        workflows: &[Workflow],
        fresh: &mut Counted,
    ) -> Vec<Accepted> {
        let (keys, rooms) = lookups(batch);
        let known = Known {
            seen: keys
                .iter()
                .filter(|k| self.seen.contains(**k))
                .map(|k| (*k).to_owned())
                .collect(),
            calls: rooms
                .iter()
                .filter_map(|r| self.calls.get(*r).cloned())
                .collect(),
        };
        let admission = admit(batch, known, workflows, fresh);
        let ids: HashMap<String, i64> = admission
            .new_calls
            .iter()
            .map(|c| {
                self.last_id += 1;
                (c.room_sid.to_owned(), self.last_id)
            })
            .collect();
        let plan = admission.settle(batch, &ids, workflows, fresh).unwrap();
        self.outbox.extend(plan.deliveries);
        for seen in plan.seen {
            self.seen.insert(seen.event_id.to_owned());
            self.remembered
                .push((seen.event_id.to_owned(), seen.call_id));
        }
        for state in plan.states {
            self.calls.insert(state.room_sid.clone(), state);
        }
        plan.results
    }
}

fn batch(bodies: &[serde_json::Value]) -> Vec<Incoming> {
    bodies.iter().map(sample::incoming).collect()
}

#[test]
fn a_batch_plans_what_its_events_plan_one_by_one() {
    let workflows = [sample::workflow()];
    let (mut together, mut one_by_one) = (Memory::default(), Memory::default());
    let (mut fresh_t, mut fresh_o) = (Counted::default(), Counted::default());
    let all = batch(&sample::events());
    let at_once = together.commit(&all, &workflows, &mut fresh_t);
    let mut singly = Vec::new();
    for incoming in &all {
        singly.extend(one_by_one.commit(std::slice::from_ref(incoming), &workflows, &mut fresh_o));
    }
    assert_eq!(at_once, singly);
    assert_eq!(together.outbox, one_by_one.outbox);
    assert_eq!(together.calls, one_by_one.calls);
    assert_eq!(together.remembered, one_by_one.remembered);

    assert_eq!(at_once, sample::events_accepted());
    // Every new event is remembered once, with the call it touched; duplicates are not.
    let remembered: Vec<(&str, Option<i64>)> = together
        .remembered
        .iter()
        .map(|(id, call)| (id.as_str(), *call))
        .collect();
    assert_eq!(
        remembered,
        [
            ("EV_1", Some(1)),
            ("EV_2", Some(1)),
            ("EV_3", Some(1)),
            ("EV_4", None),
            ("EV_5", None),
            ("EV_6", Some(2)),
            ("EV_7", Some(1)),
            ("EV_8", Some(1)),
        ]
    );
    let queued: Vec<(i64, i64, &str)> = together
        .outbox
        .iter()
        .map(|d| (d.call_id, d.seq, d.event_type))
        .collect();
    assert_eq!(queued, [(1, 1, "call_started"), (1, 2, "call_ended")]);
    // Planned again, the same batch is all duplicates and writes nothing.
    let again = together.commit(&all, &workflows, &mut fresh_t);
    assert!(again.iter().all(|a| *a == Accepted::Duplicate));
    assert_eq!(together.outbox.len(), 2);
}

#[test]
fn a_new_room_becomes_a_call_with_the_slug_its_name_carries_or_a_fresh_one() {
    let mut by_metadata = sample::events()[4].clone();
    by_metadata["id"] = "EV_m".into();
    by_metadata["room"]["metadata"] = r#"{"workflow_slug":"support"}"#.into();
    let all = batch(&[sample::events()[0].clone(), by_metadata]);
    let workflows = [sample::workflow()];
    let admission = admit(&all, Known::default(), &workflows, &mut Counted::default());
    let rows: Vec<(&str, &str, i64, &str, &str)> = admission
        .new_calls
        .iter()
        .map(|c| {
            let NewCall {
                room_sid,
                room_name,
                workflow_id,
                workflow_slug,
                call_slug,
            } = c;
            (
                *room_sid,
                *room_name,
                *workflow_id,
                *workflow_slug,
                call_slug.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("RM_1", "VK_abc_1", 456, "support", "abc"),
            ("RM_2", "someone-else", 456, "support", "slug1"),
        ]
    );
}

#[test]
fn a_known_room_creates_no_call() {
    let workflows = [sample::workflow()];
    let mut memory = Memory::default();
    let mut fresh = Counted::default();
    memory.commit(&batch(&sample::events()[..1]), &workflows, &mut fresh);
    let all = batch(&sample::events()[2..4]);
    let (_, rooms) = lookups(&all);
    assert_eq!(rooms, ["RM_1"]);
    let known = Known {
        seen: HashSet::new(),
        calls: vec![memory.calls["RM_1"].clone()],
    };
    let admission = admit(&all, known, &workflows, &mut fresh);
    assert!(admission.new_calls.is_empty());
    let plan = admission
        .settle(&all, &HashMap::new(), &workflows, &mut fresh)
        .unwrap();
    assert_eq!(plan.states.len(), 1, "one call touched, saved once");
    assert_eq!(plan.deliveries.len(), 1, "the agent's join starts the call");
}

#[test]
fn a_workflow_with_a_hook_gets_the_call_started_payload_as_its_own_row() {
    let mut workflow = sample::workflow();
    workflow.call_started_hook = Some("http://127.0.0.1:1/hook".into());
    let workflows = [workflow];
    let mut memory = Memory::default();
    let all = sample::events();
    memory.commit(
        &batch(&[all[0].clone(), all[2].clone(), all[3].clone()]),
        &workflows,
        &mut Counted::default(),
    );
    let rows: Vec<(i64, &str)> = memory
        .outbox
        .iter()
        .map(|d| (d.seq, d.event_type))
        .collect();
    assert_eq!(rows, [(1, "call_started"), (0, HOOK_EVENT)]);
    assert_eq!(memory.outbox[0].payload, memory.outbox[1].payload);
    assert_ne!(memory.outbox[0].webhook_id, memory.outbox[1].webhook_id);
}

#[test]
fn slugs_are_eight_lowercase_alphanumerics() {
    let s = random_slug();
    assert_eq!(s.len(), 8);
    assert!(
        s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
    assert_ne!(random_slug(), random_slug());
}

#[test]
fn webhook_ids_are_unique_and_prefixed() {
    let a = new_webhook_id();
    assert!(a.starts_with("msg_") && a.len() == 28);
    assert!(a[4..].chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(a, new_webhook_id());
}

#[test]
fn webhook_ids_sort_in_the_order_they_were_made() {
    // Random ids would come out in this order once in 20! tries.
    let mut made = Vec::new();
    for _ in 0..20 {
        made.push(new_webhook_id());
        // The order is by millisecond: wait for the clock to move on.
        let now = now_ms();
        while now_ms() == now {
            std::hint::spin_loop();
        }
    }
    let mut sorted = made.clone();
    sorted.sort();
    assert_eq!(sorted, made);
}
