use std::sync::atomic::AtomicUsize;

use serde_json::json;
use tokio::sync::oneshot;

use super::*;
use crate::{
    call::EventKind,
    ingest::{plan::CreatedCall, sample},
    store::{Backend, Store, now_ms, test_sqlite_store},
};

fn db(store: &Store) -> &Db {
    match store.backend() {
        Backend::Sqlite(db) => db,
        Backend::Postgres(_) => panic!("not a SQLite store"),
    }
}

fn writer(store: &Store) -> Writer {
    Writer {
        workflows: sample::workflows(),
        delivery: Arc::new(Notify::new()),
        horizon: db(store).horizon.clone(),
        wal_restart_frames: WAL_RESTART_FRAMES,
    }
}

fn batch(bodies: &[serde_json::Value]) -> Vec<Incoming> {
    bodies.iter().map(sample::incoming).collect()
}

/// Commits `bodies` as one batch on `conn`.
fn commit(w: &Writer, conn: &mut IngestConnection, bodies: &[serde_json::Value]) -> Vec<Accepted> {
    w.commit(conn, &batch(bodies), &DeliveryWrites::default())
        .unwrap()
}

/// Everything the writer stores, minus what is random or a clock reading.
async fn dump(store: &Store) -> Vec<String> {
    let rows: Vec<(String,)> = crate::store::fixtures::rows(
        store,
        "SELECT json_array(event_id, event_type, room_sid, call_id) FROM inbound_events
         UNION ALL SELECT json_array(id, room_sid, call_slug, phase, state) FROM calls
         UNION ALL SELECT json_array(call_id, seq, event_type, workflow_id, payload, recording)
                   FROM (SELECT * FROM outbox ORDER BY id)",
        &[],
    )
    .await;
    rows.into_iter().map(|(r,)| r).collect()
}

/// The writer on its own thread with `sync` as its WAL sync, and its queue.
fn start_with_sync(store: &Store, sync: WalSync) -> (WriterHandle, std::thread::JoinHandle<()>) {
    let w = writer(store);
    let conn = store.ingest_connection();
    let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
    let thread = std::thread::spawn(move || w.run(conn, rx, sync));
    (WriterHandle(jobs), thread)
}

/// Queues the event `body`; its answer comes on the receiver.
async fn send_event(
    writer: &WriterHandle,
    body: &serde_json::Value,
) -> oneshot::Receiver<Result<Accepted, Arc<StoreError>>> {
    let (reply, answer) = oneshot::channel();
    let job = EventJob {
        incoming: sample::incoming(body),
        reply,
    };
    writer.accept(job).await.unwrap();
    answer
}

/// A WAL sync that counts its calls, and lets each through only when the test sends on
/// the first channel.
fn gated_sync() -> (std::sync::mpsc::Sender<()>, Arc<AtomicUsize>, WalSync) {
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let syncs = Arc::new(AtomicUsize::new(0));
    let counted = syncs.clone();
    let sync = WalSync::with(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let _ = gate.lock().unwrap().recv();
        Ok(())
    });
    (release, syncs, sync)
}

#[tokio::test]
async fn a_batch_does_what_its_events_do_one_by_one() {
    let (batched, _d1) = test_sqlite_store().await;
    let (single, _d2) = test_sqlite_store().await;
    let (wb, ws) = (writer(&batched), writer(&single));
    let (mut cb, mut cs) = (batched.ingest_connection(), single.ingest_connection());
    let together = commit(&wb, &mut cb, &sample::events());
    let mut one_by_one = Vec::new();
    for body in sample::events() {
        one_by_one.extend(commit(&ws, &mut cs, &[body]));
    }
    assert_eq!(together, one_by_one);
    assert_eq!(dump(&batched).await, dump(&single).await);

    use Accepted::*;
    let applied = |emitted: &[EventKind]| Applied {
        call_id: 1,
        emitted: emitted.to_vec(),
        new_call: None,
    };
    let created = |call_id, room_name: &str, room_sid: &str| Applied {
        call_id,
        emitted: vec![],
        new_call: Some(Box::new(CreatedCall {
            room_name: room_name.into(),
            room_sid: room_sid.into(),
            workflow: "support".into(),
        })),
    };
    assert_eq!(
        together,
        vec![
            created(1, "VK_abc_1", "RM_1"),
            Duplicate,
            applied(&[]),
            applied(&[EventKind::CallStarted]),
            Ignored("room maps to no workflow"),
            Ignored("event type does not concern calls"),
            created(2, "VK_def_2", "RM_3"),
            applied(&[]),
            applied(&[EventKind::CallEnded]),
            Duplicate,
        ]
    );
    let again = commit(&wb, &mut cb, &sample::events());
    assert!(again.iter().all(|a| *a == Duplicate));
    let kinds: Vec<(String,)> =
        crate::store::fixtures::rows(&batched, "SELECT event_type FROM outbox ORDER BY id", &[])
            .await;
    assert_eq!(kinds, [("call_started".into(),), ("call_ended".into(),)]);
}

#[tokio::test]
async fn the_writer_keeps_the_calls_it_committed_until_another_connection_commits() {
    // One connection for all (its cache in use), against a new connection for each
    // event (reading every call from the file).
    let (cached, _d1) = test_sqlite_store().await;
    let (read, _d2) = test_sqlite_store().await;
    let (w, wr) = (writer(&cached), writer(&read));
    let mut conn = cached.ingest_connection();
    let (mut on_cached, mut on_read) = (Vec::new(), Vec::new());
    for body in sample::events() {
        on_cached.extend(commit(&w, &mut conn, std::slice::from_ref(&body)));
        on_read.extend(commit(&wr, &mut read.ingest_connection(), &[body]));
    }
    // Room RM_1's later events found its state in memory, and did what reading the
    // file does.
    assert!(conn.cached_reads() >= 5, "{}", conn.cached_reads());
    assert_eq!(on_cached, on_read);
    assert_eq!(dump(&cached).await, dump(&read).await);

    // The checkpoint task's pass (PASSIVE) is no commit: were it to empty the cache,
    // the cache would hardly ever be used.
    cached.checkpoint().await.unwrap();
    let reads = conn.cached_reads();
    let egress = json!({"id": "EV_8b", "event": "egress_started",
        "room": {"sid": "RM_3", "name": "VK_def_2"}, "createdAt": "1761234571",
        "egressInfo": {"egressId": "EG_0", "roomId": "RM_3", "status": "EGRESS_ACTIVE"}});
    commit(&w, &mut conn, &[egress]);
    assert_eq!(conn.cached_reads(), reads + 1, "RM_3 came from memory");

    // Someone else's commit (here: an edit of RM_3's state through the pool): the
    // writer's next batch reads RM_3 from the file.
    crate::store::fixtures::execute(
        &cached,
        "UPDATE calls SET state = json_set(state, '$.room_metadata', 'edited')
         WHERE room_sid = 'RM_3'",
        &[],
    )
    .await;
    let reads = conn.cached_reads();
    let joined = json!({"id": "EV_9", "event": "participant_joined",
        "room": {"sid": "RM_3", "name": "VK_def_2"}, "createdAt": "1761234571",
        "participant": {"sid": "PA_x", "identity": "x", "kind": "STANDARD"}});
    commit(&w, &mut conn, &[joined]);
    assert_eq!(conn.cached_reads(), reads, "nothing came from memory");
    let (metadata,): (String,) = crate::store::fixtures::row(
        &cached,
        "SELECT state->>'$.room_metadata' FROM calls WHERE room_sid = 'RM_3'",
        &[],
    )
    .await;
    assert_eq!(
        metadata, "edited",
        "the batch applied its event to the file's state"
    );

    // A batch that fails (here: an outcome for a row that does not exist) rolls back,
    // and what it decided for RM_3 never reaches the cache either.
    let bad = Attempt {
        outbox_id: 999_999,
        attempted_at: now_ms(),
        endpoint: "http://127.0.0.1:1/".into(),
        status_code: Some(200),
        error: None,
        latency_ms: 1,
        response_body: None,
    };
    let left = json!({"id": "EV_10", "event": "participant_left",
        "room": {"sid": "RM_3", "name": "VK_def_2"}, "createdAt": "1761234572",
        "participant": {"sid": "PA_x", "identity": "x", "kind": "STANDARD"}});
    let writes = DeliveryWrites {
        records: vec![(bad, AttemptOutcome::Delivered)],
        ..DeliveryWrites::default()
    };
    let failed = w.commit(&mut conn, &batch(&[left]), &writes);
    assert!(failed.is_err(), "{failed:?}");
    let reads = conn.cached_reads();
    let again = json!({"id": "EV_11", "event": "track_published",
        "room": {"sid": "RM_3", "name": "VK_def_2"}, "createdAt": "1761234573"});
    let egress = json!({"id": "EV_12", "event": "egress_started",
        "room": {"sid": "RM_3", "name": "VK_def_2"}, "createdAt": "1761234573",
        "egressInfo": {"egressId": "EG_1", "roomId": "RM_3", "status": "EGRESS_ACTIVE"}});
    commit(&w, &mut conn, &[again, egress]);
    assert_eq!(conn.cached_reads(), reads, "the failed batch left nothing");
    let (present,): (String,) = crate::store::fixtures::row(
        &cached,
        "SELECT state->>'$.present' FROM calls WHERE room_sid = 'RM_3'",
        &[],
    )
    .await;
    assert_eq!(present, r#"["PA_x"]"#, "PA_x's leaving was rolled back");
}

/// The first call's `call_started` row, once room_started, the caller and the agent
/// are committed through `writer`.
async fn call_started(store: &Store, writer: &crate::store::Writer) -> i64 {
    let all = sample::events();
    for body in [&all[0], &all[2], &all[3]] {
        writer.accept(sample::incoming(body)).await.unwrap();
    }
    let (outbox_id,): (i64,) = crate::store::fixtures::row(
        store,
        "SELECT id FROM outbox WHERE event_type = 'call_started'",
        &[],
    )
    .await;
    outbox_id
}

#[tokio::test]
async fn the_writer_records_delivery_outcomes_and_stores_published_bodies() {
    let (store, _dir) = test_sqlite_store().await;
    let (writer, task) = store
        .start_writer(sample::workflows(), Arc::new(Notify::new()))
        .unwrap();
    let outbox_id = call_started(&store, &writer).await;
    // As a `call_finalized` row holds its recording until the URL is published.
    crate::store::fixtures::execute(
        &store,
        "UPDATE outbox SET recording = '{}' WHERE id = $1",
        &[outbox_id.into()],
    )
    .await;
    let published = r#"{"event":"call_finalized","recording_url":"https://r.example/a"}"#;
    writer
        .publish(outbox_id, published.to_string())
        .await
        .unwrap();
    let attempt = Attempt {
        outbox_id,
        attempted_at: now_ms(),
        endpoint: "http://127.0.0.1:1/".into(),
        status_code: Some(200),
        error: None,
        latency_ms: 3,
        response_body: Some("ok".into()),
    };
    writer
        .record(attempt, AttemptOutcome::Delivered)
        .await
        .unwrap();
    let row: (String, Option<String>, String, i64) = crate::store::fixtures::row(
        &store,
        "SELECT payload, recording, status,
                (SELECT count(*) FROM delivery_attempts WHERE outbox_id = o.id)
         FROM outbox o WHERE id = $1",
        &[outbox_id.into()],
    )
    .await;
    assert_eq!(row, (published.to_string(), None, "delivered".into(), 1));
    drop(writer);
    task.await.unwrap();
}

/// A published body goes through the writer (under its fsync), answered only once
/// synced, so a retry after a power loss sends the bytes the first attempt sent.
#[tokio::test]
async fn a_published_body_is_answered_only_after_the_writers_wal_sync() {
    let (store, _dir) = test_sqlite_store().await;
    let (release, syncs, sync) = gated_sync();
    let (handle, thread) = start_with_sync(&store, sync);
    let all = sample::events();
    for body in [&all[0], &all[2], &all[3]] {
        let answer = send_event(&handle, body).await;
        release.send(()).unwrap();
        assert!(matches!(
            answer.await.unwrap(),
            Ok(Accepted::Applied { .. })
        ));
    }
    let (outbox_id,): (i64,) = crate::store::fixtures::row(
        &store,
        "SELECT id FROM outbox WHERE event_type = 'call_started'",
        &[],
    )
    .await;
    let before = syncs.load(Ordering::SeqCst);

    let published = r#"{"event":"call_finalized","recording_url":"https://r.example/b"}"#;
    let (done, mut stored) = oneshot::channel();
    handle
        .publish(outbox_id, published.to_string(), done)
        .await
        .unwrap();
    while syncs.load(Ordering::SeqCst) == before {
        tokio::task::yield_now().await;
    }
    assert!(
        stored.try_recv().is_err(),
        "answered before its sync returned"
    );
    let (payload,): (String,) = crate::store::fixtures::row(
        &store,
        "SELECT payload FROM outbox WHERE id = $1",
        &[outbox_id.into()],
    )
    .await;
    assert_eq!(payload, published, "the sync held covers the body's commit");
    release.send(()).unwrap();
    stored.await.unwrap().unwrap();
    drop((handle, release));
    thread.join().unwrap();
}

/// The writer's statements, cached on its connection and bound anew for every event,
/// are compiled once (`plans.rs`).
#[tokio::test]
async fn the_writers_statements_are_compiled_once_not_at_every_batch() {
    let (store, _dir) = test_sqlite_store().await;
    let w = writer(&store);
    let mut conn = store.ingest_connection();
    for body in sample::events() {
        commit(&w, &mut conn, &[body]);
    }
    assert_eq!(conn.reprepares(), 0);
}

#[tokio::test]
async fn webhooks_are_answered_and_delivered_only_after_the_wal_sync() {
    let (store, _dir) = test_sqlite_store().await;
    let (release, _, sync) = gated_sync();
    let (handle, thread) = start_with_sync(&store, sync);
    let all = sample::events();
    // room_started, the caller, the agent: the agent's join queues call_started.
    let mut answers = Vec::new();
    for body in [&all[0], &all[2], &all[3]] {
        answers.push(send_event(&handle, body).await);
    }
    // The writer commits all three while the first sync is still held.
    let committed = || async {
        crate::store::fixtures::rows::<(i64,)>(
            &store,
            "SELECT id FROM outbox WHERE event_type = 'call_started'",
            &[],
        )
        .await
        .into_iter()
        .next()
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let (outbox_id,) = loop {
        if let Some(row) = committed().await {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "the writer did not commit past a held sync"
        );
        tokio::task::yield_now().await;
    };
    for answer in &mut answers {
        assert!(
            answer.try_recv().is_err(),
            "answered before its commit was synced"
        );
    }
    let due = store
        .due_for_workflow(i64::MAX, 456, false, 10)
        .await
        .unwrap();
    assert!(
        due.is_empty(),
        "delivery read a row whose commit is not synced: {due:?}"
    );

    for _ in 0..3 {
        release.send(()).unwrap();
    }
    for answer in answers {
        assert!(matches!(
            answer.await.unwrap(),
            Ok(Accepted::Applied { .. })
        ));
    }
    let due = store
        .due_for_workflow(i64::MAX, 456, false, 10)
        .await
        .unwrap();
    assert_eq!(due.iter().map(|r| r.id).collect::<Vec<_>>(), [outbox_id]);
    assert_eq!(db(&store).visible_below(), i64::MAX);
    drop((handle, release));
    thread.join().unwrap();
}

#[tokio::test]
async fn after_a_failed_wal_sync_the_writer_takes_nothing_more() {
    let (store, _dir) = test_sqlite_store().await;
    let sync = WalSync::with(|| Err(std::io::Error::other("disk gone")));
    let (handle, thread) = start_with_sync(&store, sync);
    let all = sample::events();
    let first = send_event(&handle, &all[0]).await;
    let first = first.await.unwrap().unwrap_err();
    assert!(matches!(*first, StoreError::WalSync(_)), "{first}");
    let later = send_event(&handle, &all[2]).await;
    let later = later.await.unwrap().unwrap_err();
    assert!(matches!(*later, StoreError::WalSyncFailed), "{later}");
    let (events_stored,): (i64,) =
        crate::store::fixtures::row(&store, "SELECT count(*) FROM inbound_events", &[]).await;
    assert_eq!(
        events_stored, 1,
        "the event after the failed sync was not written"
    );
    drop(handle);
    thread.join().unwrap();
}

#[tokio::test]
async fn the_writers_checkpoint_starts_the_wal_over() {
    let (store, _dir) = test_sqlite_store().await;
    let w = writer(&store);
    let mut conn = store.ingest_connection();
    let calls = |from: usize, n: usize| -> Vec<serde_json::Value> {
        (from..from + n).map(sample::room_started).collect()
    };
    commit(&w, &mut conn, &calls(0, 200));
    let big = conn.wal_frames();
    assert!(big > 0, "the commit's pages are in the WAL");
    let (log, copied) = conn.checkpoint().unwrap();
    assert_eq!(log, big);
    assert_eq!(
        big, copied,
        "with no write in progress every frame is copied"
    );
    commit(&w, &mut conn, &calls(200, 1));
    let small = conn.wal_frames();
    // Appended, the WAL would hold both batches' frames; started over, only the last.
    assert!(small < big, "WAL not restarted: {small} frames after {big}");
}

#[tokio::test]
async fn a_long_wal_is_started_over_by_the_writer() {
    let (store, dir) = test_sqlite_store().await;
    let mut w = writer(&store);
    w.wal_restart_frames = 100;
    let conn = store.ingest_connection();
    let sync = conn.wal_sync().unwrap();
    let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
    let thread = std::thread::spawn(move || w.run(conn, rx, sync));
    let handle = WriterHandle(jobs);
    // No checkpoint task runs here: without the writer's own, the WAL would hold every
    // frame of these 6,000 calls (about 1,200).
    let mut answers = Vec::new();
    for i in 0..6000 {
        answers.push(send_event(&handle, &sample::room_started(i)).await);
    }
    for answer in answers {
        assert!(matches!(answer.await, Ok(Ok(Accepted::Applied { .. }))));
    }
    // A WAL started over is written from its start again: the file, which never
    // shrinks below its high-water mark here, stays near the threshold. (Measured
    // while the writer's connection is open: the last connection to close a database
    // deletes its WAL.)
    let wal = std::fs::metadata(dir.path().join("t.db-wal"))
        .unwrap()
        .len();
    drop(handle);
    thread.join().unwrap();
    let frames = (wal.saturating_sub(32)) / (4096 + 24);
    assert!(frames < 600, "the WAL grew to {frames} frames");
}
