use std::time::Duration;

use serde_json::json;
use tokio::sync::oneshot;

use super::*;
use crate::{
    call::EventKind,
    ingest::{Incoming, sample},
    store::{
        StoreError,
        outbox::record_attempts_sql,
        postgres::{Db, batch::SAVE_CALLS},
        sql::Dialect,
        test_postgres_store,
    },
};

fn db(store: &Store) -> &Db {
    match store.backend() {
        Backend::Postgres(db) => db,
        Backend::Sqlite(_) => panic!("not a PostgreSQL store"),
    }
}

/// Applies `bodies` as one batch, in a transaction of its own.
async fn commit(store: &Store, bodies: &[serde_json::Value]) -> Vec<Accepted> {
    let batch: Vec<Incoming> = bodies.iter().map(sample::incoming).collect();
    let mut tx = batch::begin(&db(store).pool, &batch::lock_keys(&batch))
        .await
        .unwrap();
    let results = batch::apply(&mut tx, &batch, &[sample::workflow()])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    results
}

/// Everything a batch stores, minus what is random or a clock reading.
async fn dump(store: &Store) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "(SELECT json_build_array(event_id, event_type, room_sid, call_id)::text
          FROM inbound_events ORDER BY event_id)
         UNION ALL (SELECT json_build_array(id, room_sid, call_slug, phase, state)::text
                    FROM calls ORDER BY id)
         UNION ALL (SELECT json_build_array(call_id, seq, event_type, workflow_id, payload,
                                            recording)::text
                    FROM outbox ORDER BY id)",
    )
    .fetch_all(&db(store).pool)
    .await
    .unwrap();
    rows.into_iter().map(|(r,)| r).collect()
}

#[tokio::test]
async fn a_batch_does_what_its_events_do_one_by_one() {
    let (Some(batched), Some(single)) =
        (test_postgres_store(2).await, test_postgres_store(2).await)
    else {
        return;
    };
    let together = commit(&batched, &sample::events()).await;
    let mut one_by_one = Vec::new();
    for body in sample::events() {
        one_by_one.extend(commit(&single, &[body]).await);
    }
    assert_eq!(together, one_by_one);
    assert_eq!(dump(&batched).await, dump(&single).await);
    assert!(
        matches!(&together[3], Accepted::Applied { emitted, .. } if emitted == &[EventKind::CallStarted])
    );
    let again = commit(&batched, &sample::events()).await;
    assert!(again.iter().all(|a| *a == Accepted::Duplicate));
}

#[tokio::test]
async fn ingest_batches_of_one_room_wait_for_each_other_across_instances() {
    let Some(store) = test_postgres_store(4).await else {
        return;
    };
    let pool = db(&store).pool.clone();
    let mut first = batch::begin(&pool, &["RM_shared", "EV_1"]).await.unwrap();
    // Keys in another order and one more: still no cycle, and it must wait.
    let mut second = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = batch::begin(&pool, &["RM_other", "EV_1", "RM_shared"])
                .await
                .unwrap();
            let known = batch::known(&mut tx, &["EV_1"], &[]).await.unwrap();
            tx.commit().await.unwrap();
            known.seen
        }
    });
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut second).await;
    assert!(
        waited.is_err(),
        "the second batch did not wait for the first"
    );
    sqlx::query(
        "INSERT INTO inbound_events (event_id, event_type, room_sid, received_at)
         VALUES ('EV_1', 'room_started', 'RM_shared', 0)",
    )
    .execute(&mut *first)
    .await
    .unwrap();
    first.commit().await.unwrap();
    // It then reads what the first committed: EV_1 is a duplicate.
    assert!(second.await.unwrap().contains("EV_1"));
}

#[tokio::test]
async fn postgres_updates_from_json_rows_probe_the_key_not_the_whole_table() {
    let Some(store) = test_postgres_store(2).await else {
        return;
    };
    let pool = &db(&store).pool;
    // 2,000 ended calls, each with a delivered `call_started`, written after the
    // start-time ANALYZE: the planner's statistics still say the tables are empty.
    sqlx::raw_sql(
        "INSERT INTO calls (room_sid, room_name, workflow_id, workflow_slug, call_slug,
                            phase, state, created_at, updated_at)
         SELECT 'RM_' || g, 'room', 7, 'wf', 's' || g, 'ended', repeat('x', 500), 0, 0
         FROM generate_series(1, 2000) AS g;
         INSERT INTO outbox (webhook_id, call_id, seq, event_type, workflow_id, payload,
                             status, next_attempt_at, created_at)
         SELECT 'msg_' || id, id, 1, 'call_started', 7, repeat('x', 500), 'delivered', 0, 0
         FROM calls",
    )
    .execute(pool)
    .await
    .unwrap();
    let recorded = record_attempts_sql(Dialect::Postgres)[1].clone();
    let saved = SAVE_CALLS.replace("$1", "0").replace("$4", "$1");
    let attempts = r#"[[1,"x","y"],[2,"x","y"]]"#;
    let states = r#"[{"call_id":1,"state":"x","phase":"y"},{"call_id":2,"state":"x","phase":"y"}]"#;
    for (sql, rows, table) in [(recorded, attempts, "outbox"), (saved, states, "calls")] {
        let plan: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
            .bind(rows)
            .fetch_all(pool)
            .await
            .unwrap();
        let plan: Vec<String> = plan.into_iter().map(|(line,)| line).collect();
        assert!(
            !plan
                .iter()
                .any(|l| l.contains(&format!("Seq Scan on {table}"))),
            "{table}: {plan:#?}"
        );
    }
}

/// Queues the event `body` to a writer's queue; its answer comes on the receiver.
async fn send_event(
    jobs: &mpsc::Sender<EventJob>,
    body: serde_json::Value,
) -> oneshot::Receiver<Result<Accepted, Arc<StoreError>>> {
    let (reply, answer) = oneshot::channel();
    let job = EventJob {
        incoming: sample::incoming(&body),
        reply,
    };
    jobs.send(job).await.unwrap();
    answer
}

#[tokio::test]
async fn a_waiting_batch_holds_up_only_the_later_batches_of_its_rooms() {
    let Some(store) = test_postgres_store(8).await else {
        return;
    };
    let (jobs, rx) = mpsc::channel(16);
    let writer = Arc::new(Writer {
        store: store.clone(),
        workflows: sample::workflows(),
        delivery: Arc::new(Notify::new()),
    });
    let writer = tokio::spawn(writer.run(rx, BATCHES_IN_FLIGHT));
    let room = |sid: &str, name: &str| json!({"sid": sid, "name": name, "creationTimeMs": "1761234567000"});
    let (r1, r3) = (room("RM_1", "VK_abc_1"), room("RM_3", "VK_def_2"));
    let agent =
        json!({"sid": "PA_a", "identity": "agent", "kind": "AGENT", "joinedAtMs": "1761234569000"});
    let ev = |id: &str, event: &str, room: &serde_json::Value| json!({"id": id, "event": event, "room": room, "participant": agent, "createdAt": "1761234570"});
    let answer = |a: Result<Result<Accepted, Arc<StoreError>>, _>| a.unwrap().unwrap();
    answer(
        send_event(&jobs, ev("EV_1", "room_started", &r1))
            .await
            .await,
    );

    // Another transaction holds RM_1's call row: the batch of the agent's arrival waits
    // in PostgreSQL for it, with its room's advisory lock taken.
    let pool = &db(&store).pool;
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM calls WHERE room_sid = 'RM_1' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut joined = send_event(&jobs, ev("EV_2", "participant_joined", &r1)).await;
    let waiting = async || {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        n > 0
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while !waiting().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the agent's batch waits for the call row");

    // Another room's batch goes past it and is answered.
    let other = send_event(&jobs, ev("EV_3", "room_started", &r3)).await;
    let other = tokio::time::timeout(Duration::from_secs(10), other)
        .await
        .expect("a batch of another room waited for the waiting one");
    assert!(matches!(answer(other), Accepted::Applied { .. }));
    assert!(joined.try_recv().is_err(), "the waiting batch was answered");

    // A later batch of RM_1 waits for the first, then applies to what it committed.
    let finished = send_event(&jobs, ev("EV_4", "room_finished", &r1)).await;
    holder.rollback().await.unwrap();
    let started = answer(joined.await);
    let ended = answer(finished.await);
    assert!(
        matches!(&started, Accepted::Applied { emitted, .. } if emitted == &[EventKind::CallStarted]),
        "{started:?}"
    );
    assert!(
        matches!(&ended, Accepted::Applied { emitted, .. } if emitted == &[EventKind::CallEnded]),
        "{ended:?}"
    );
    let events: Vec<(i64, String)> = sqlx::query_as(
        "SELECT o.seq, o.event_type FROM outbox o JOIN calls c ON c.id = o.call_id
         WHERE c.room_sid = 'RM_1' ORDER BY o.seq",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        events,
        [(1, "call_started".to_owned()), (2, "call_ended".to_owned())]
    );
    drop(jobs);
    writer.await.unwrap();
}
