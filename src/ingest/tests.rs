use std::sync::Arc;

use super::*;
use crate::store::{Writer, test_sqlite_store};

/// What a `tracing` subscriber wrote, for a test to read.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn lines_with(&self, what: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(what))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test]
async fn calls_and_queued_events_are_logged_by_the_submitter_once_durable() {
    // This thread's subscriber only: what the writer's own threads log is not seen.
    let logs = LogBuffer::default();
    let subscriber = {
        let logs = logs.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish()
    };
    let _guard = tracing::subscriber::set_default(subscriber);
    let all = sample::events();
    let submit = async |ingestor: &Ingestor, body: &serde_json::Value| {
        let incoming = sample::incoming(body);
        ingestor.submit(incoming.event, incoming.dedupe_key).await
    };

    // Every sync fails: the writer commits the call, but it is never durable.
    let (store, _d1) = test_sqlite_store().await;
    let (writer, thread) = Writer::sqlite_with_sync(&store, sample::workflows(), || {
        Err(std::io::Error::other("disk gone"))
    });
    let ingestor = Ingestor::new(writer);
    assert!(submit(&ingestor, &all[0]).await.is_err());
    assert_eq!(logs.lines_with("new call"), Vec::<String>::new());
    drop(ingestor);
    thread.join().unwrap();

    // The same call, synced: room_started makes it, the agent's join queues call_started.
    let (store, _d2) = test_sqlite_store().await;
    let (writer, thread) = Writer::sqlite_with_sync(&store, sample::workflows(), || Ok(()));
    let ingestor = Ingestor::new(writer);
    for body in [&all[0], &all[2], &all[3]] {
        assert!(matches!(
            submit(&ingestor, body).await,
            Ok(Accepted::Applied { .. })
        ));
    }
    let created = logs.lines_with("new call");
    assert_eq!(created.len(), 1, "{created:?}");
    assert!(
        ["call_id=1", "RM_1", "VK_abc_1", "support"]
            .iter()
            .all(|part| created[0].contains(part)),
        "{}",
        created[0]
    );
    let queued = logs.lines_with("queued VoiceKit event");
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert!(
        queued[0].contains("call_id=1") && queued[0].contains("call_started"),
        "{}",
        queued[0]
    );
    drop(ingestor);
    thread.join().unwrap();
}
