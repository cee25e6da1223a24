//! Checks the parts of the test harness that work without the daemon, so a failing
//! end-to-end test can be trusted to point at the bridge rather than at the harness.
//! (The LiveKit bodies and tokens the tests post are checked by the testkit's own unit
//! tests, against the fixtures and LiveKit's verifier.)

use crate::support;

use std::time::Duration;

use support::{Moto, Receiver};

#[tokio::test]
async fn moto_stores_an_object_and_serves_it_back() {
    let moto = Moto::start().await;
    moto.create_bucket("recordings").await;
    moto.put_object("recordings", "calls/a b/1.ogg", b"OggS fake audio".to_vec())
        .await;

    assert_eq!(
        moto.get_object("recordings", "calls/a b/1.ogg").await,
        b"OggS fake audio"
    );
    let head = moto
        .client()
        .await
        .head_object()
        .bucket("recordings")
        .key("calls/a b/1.ogg")
        .send()
        .await
        .expect("head_object");
    assert_eq!(head.content_length(), Some(15));
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
}

#[tokio::test]
async fn receiver_answers_from_its_script_then_200_and_records_everything() {
    let mut receiver = Receiver::start_with(vec![500]).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    let mut statuses = Vec::new();
    for n in 1..=2 {
        let response = http
            .post(receiver.url("/hooks/voicekit?try=1"))
            .header("webhook-id", format!("msg_{n}"))
            .body(format!(r#"{{"n":{n}}}"#))
            .send()
            .await
            .expect("post to receiver");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [500, 200]);

    for n in 1..=2 {
        let request = receiver.next(Duration::from_secs(5)).await;
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hooks/voicekit");
        assert_eq!(request.query.as_deref(), Some("try=1"));
        assert_eq!(
            request.header("webhook-id"),
            Some(format!("msg_{n}").as_str())
        );
        assert_eq!(request.json()["n"], n);
    }
    assert_eq!(receiver.count(), 2);
    receiver.expect_nothing(Duration::from_millis(200)).await;
}
