mod support;
use std::path::Path;
use std::time::Duration;
use support::Daemon;

#[tokio::test]
async fn probe_daemon_with_fake() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::launch("listen = \"127.0.0.1:0\"\ndb = \"{dir}/bridge.db\"\n")
        .in_dir(dir.path())
        .program(Path::new("/tmp/probe/fake_daemon.py"))
        .start()
        .await;
    println!("base {}", d.base_url());
    let (s, b) = d.post_webhook("{\"x\":1}", Some("tok")).await;
    println!("{s} {b}");
    assert_eq!(s, 202);
    let (s, b) = d.post_signed("{\"x\":2}", "k", "s").await;
    println!("{s} {b}");
    println!("get {:?}", d.get("/healthz").await);
    d.wait_for_stderr("got webhook", Duration::from_secs(5))
        .await;
    println!("STDERR:\n{}\nSTDOUT:\n{}", d.stderr_text(), d.stdout_text());
    assert!(d.stderr_text().contains(&dir.path().display().to_string()));
    let st = d.terminate(Duration::from_secs(5)).await;
    println!("exit {st}");
    let mut d2 = Daemon::launch("x")
        .in_dir(dir.path())
        .program(Path::new("/tmp/probe/fake_daemon.py"))
        .start()
        .await;
    d2.kill().await;
    let d3 = Daemon::launch("x")
        .program(Path::new("/tmp/probe/fake_daemon.py"))
        .start()
        .await;
    let pid = d3.addr();
    drop(d3);
    println!("dropped {pid}");
}

#[tokio::test]
#[should_panic(expected = "config broken")]
async fn probe_daemon_dies() {
    Daemon::launch("x")
        .program(Path::new("/tmp/probe/dies.sh"))
        .start()
        .await;
}

#[tokio::test]
#[should_panic(expected = "timed out")]
async fn probe_wait_stderr_timeout() {
    let d = Daemon::launch("x")
        .program(Path::new("/tmp/probe/fake_daemon.py"))
        .start()
        .await;
    d.wait_for_stderr("never", Duration::from_millis(300)).await;
}
