use super::*;
use crate::store::{
    fixtures::{execute, insert_call, insert_delivery},
    test_stores,
};

/// A call with a room name, phone number and creation time of its own.
async fn call(store: &Store, sid: &str, room: &str, phone: &str, created_at: i64) -> i64 {
    let id = insert_call(store, sid, 1).await;
    let state = format!(r#"{{"sip_phone":"{phone}","metadata_phone":null}}"#);
    execute(
        store,
        "UPDATE calls SET room_name = $1, state = $2, created_at = $3 WHERE id = $4",
        &[room.into(), state.into(), created_at.into(), id.into()],
    )
    .await;
    id
}

#[tokio::test]
async fn calls_are_found_by_id_room_phone_slug_and_time_newest_first() {
    let (stores, _dir) = test_stores().await;
    for store in stores {
        let a = call(&store, "RM_a", "support_100%_real", "+15550001", 1_000).await;
        let b = call(&store, "RM_b", "Sales_floor", "+15550002", 2_000).await;
        let c = call(&store, "RM_c", "support_night", "+4930123", 3_000).await;
        let ids = async |search: CallSearch| -> Vec<i64> {
            let limit = if search.limit == 0 { 10 } else { search.limit };
            let search = CallSearch { limit, ..search };
            let found = store.search_calls(&search).await.unwrap();
            found.into_iter().map(|c| c.id).collect()
        };
        assert_eq!(ids(CallSearch::default()).await, [c, b, a]);
        assert_eq!(
            ids(CallSearch {
                call_id: Some(b),
                ..CallSearch::default()
            })
            .await,
            [b]
        );
        let room = |r: &str| CallSearch {
            room: Some(r.into()),
            ..CallSearch::default()
        };
        assert_eq!(ids(room("support")).await, [c, a]);
        assert_eq!(
            ids(room("SALES")).await,
            [b],
            "room names match in any case"
        );
        assert_eq!(ids(room("100%")).await, [a], "% matches itself");
        assert_eq!(ids(room("rt_1")).await, [a], "_ matches itself");
        let phone = |p: &str| CallSearch {
            phone: Some(p.into()),
            ..CallSearch::default()
        };
        assert_eq!(ids(phone("+1555")).await, [b, a]);
        assert_eq!(ids(phone("+49")).await, [c]);
        assert_eq!(ids(phone("4930")).await, [c], "the + may be left out");
        assert_eq!(ids(phone("+155500012")).await, Vec::<i64>::new());
        assert_eq!(
            ids(CallSearch {
                slug: Some("RM_b".into()),
                ..CallSearch::default()
            })
            .await,
            [b]
        );
        let range = CallSearch {
            since_ms: Some(1_500),
            until_ms: Some(3_000),
            ..CallSearch::default()
        };
        assert_eq!(ids(range).await, [b]);
        let page = CallSearch {
            before_id: Some(c),
            limit: 1,
            ..CallSearch::default()
        };
        assert_eq!(ids(page).await, [b]);
    }
}

#[tokio::test]
async fn deliveries_are_filtered_by_status_workflow_and_time_and_failed_ones_counted() {
    let (stores, _dir) = test_stores().await;
    for store in stores {
        let c = insert_call(&store, "RM_d", 1).await;
        let mut ids = Vec::new();
        for (seq, (workflow, status, created_at)) in [
            (1, "failed", 1_000),
            (1, "delivered", 2_000),
            (2, "failed", 3_000),
            (1, "failed", 4_000),
        ]
        .into_iter()
        .enumerate()
        {
            let id = insert_delivery(&store, c, seq as i64, "call_started", workflow).await;
            execute(
                &store,
                "UPDATE outbox SET status = $1, created_at = $2 WHERE id = $3",
                &[status.into(), created_at.into(), id.into()],
            )
            .await;
            ids.push(id);
        }
        let found = async |search: DeliverySearch| -> Vec<i64> {
            let limit = if search.limit == 0 { 10 } else { search.limit };
            let search = DeliverySearch { limit, ..search };
            let found = store.search_deliveries(&search).await.unwrap();
            found.into_iter().map(|d| d.id).collect()
        };
        let failed = DeliverySearch {
            status: Some("failed".into()),
            ..DeliverySearch::default()
        };
        assert_eq!(found(failed.clone()).await, [ids[3], ids[2], ids[0]]);
        let of_one = DeliverySearch {
            workflow_id: Some(1),
            ..failed.clone()
        };
        assert_eq!(found(of_one.clone()).await, [ids[3], ids[0]]);
        let early = DeliverySearch {
            until_ms: Some(2_000),
            ..of_one
        };
        assert_eq!(found(early).await, [ids[0]]);
        let page = DeliverySearch {
            before_id: Some(ids[3]),
            limit: 2,
            ..DeliverySearch::default()
        };
        assert_eq!(found(page).await, [ids[2], ids[1]]);
        assert_eq!(store.count_failed(1, 0, 5_000).await.unwrap(), 2);
        assert_eq!(store.count_failed(1, 1_001, 5_000).await.unwrap(), 1);
        assert_eq!(store.count_failed(2, 0, 3_000).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn the_overview_counts_the_last_hour_minute_by_minute() {
    let (stores, _dir) = test_stores().await;
    for store in stores {
        let now = now_ms();
        let live = insert_call(&store, "RM_live", 1).await;
        let ended = insert_call(&store, "RM_ended", 1).await;
        let old = insert_call(&store, "RM_old", 1).await;
        for (id, phase, at) in [(ended, "ended", now), (old, "finalized", now - 7_200_000)] {
            execute(
                &store,
                "UPDATE calls SET phase = $1, updated_at = $2 WHERE id = $3",
                &[phase.into(), at.into(), id.into()],
            )
            .await;
        }
        let pending = insert_delivery(&store, live, 1, "call_started", 1).await;
        execute(
            &store,
            "UPDATE outbox SET created_at = $1 WHERE id = $2",
            &[(now - 90_000).into(), pending.into()],
        )
        .await;
        for (event, at) in [("EV_1", now), ("EV_2", now), ("EV_3", now - 7_200_000)] {
            execute(
                &store,
                "INSERT INTO inbound_events (event_id, event_type, received_at)
                 VALUES ($1, 'room_started', $2)",
                &[event.into(), at.into()],
            )
            .await;
        }
        execute(
            &store,
            "INSERT INTO delivery_attempts (outbox_id, attempted_at, endpoint, latency_ms)
             VALUES ($1, $2, 'http://x', 5)",
            &[pending.into(), now.into()],
        )
        .await;

        let o = store.overview().await.unwrap();
        assert_eq!((o.calls_live, o.calls_ended, o.calls_finalized), (1, 1, 0));
        assert_eq!((o.deliveries_pending, o.deliveries_failed), (1, 0));
        assert_eq!(o.oldest_pending_at, Some(now - 90_000));
        let backlog = WorkflowBacklog {
            workflow_id: 1,
            pending: 1,
            oldest_pending_at: Some(now - 90_000),
            failed: 0,
            oldest_failed_at: None,
        };
        assert_eq!(o.backlog, [backlog]);
        assert!((60..=61).contains(&o.traffic.len()), "{}", o.traffic.len());
        let last = o.traffic.last().unwrap();
        assert_eq!(
            (last.webhooks_in, last.events_out),
            (2, 1),
            "{:?}",
            o.traffic
        );
        let total: i64 = o.traffic.iter().map(|m| m.webhooks_in).sum();
        assert_eq!(total, 2, "an event two hours old is not in the last hour");
    }
}
