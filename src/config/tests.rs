//! Loading and validating whole configuration files.

use std::time::Duration;

use super::{
    secrets::{EXAMPLE_LIVEKIT_SECRET, expand_credentials_directory, exposed_inline_secrets},
    *,
};
use std::collections::HashMap;

struct FakeEnv(HashMap<&'static str, &'static str>);
impl Env for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|v| v.to_string())
    }
}
fn no_env() -> FakeEnv {
    FakeEnv(HashMap::new())
}

const MINIMAL: &str = r#"
[livekit]
api_key = "devkey"
api_secret = "secret"

[recordings]
bucket = "b"

[[workflows]]
id = 456
slug = "customer-support"
organization_id = 789
events_webhook_url = "https://example.com/hook"
room_pattern = '^VOICEKIT_workflow_(?P<call_slug>[A-Za-z0-9]+)_\d+$'
"#;

fn err(text: &str) -> String {
    Config::parse(text, &no_env()).unwrap_err().to_string()
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = Config::parse(MINIMAL, &no_env()).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8787");
    assert_eq!(c.server.webhook_path, "/livekit/webhook");
    assert_eq!(c.server.max_body_bytes, 1_048_576);
    assert_eq!(c.store.url, "sqlite://voicekit-bridge.db");
    assert_eq!(c.recordings.url_mode, UrlMode::Presigned);
    assert_eq!(c.recordings.presign_expiry, Duration::from_secs(604_800));
    assert!(c.recordings.verify_object);
    assert_eq!(c.delivery.timeout, Duration::from_secs(10));
    assert_eq!(c.livekit.keys[0].key, "devkey");
}

#[test]
fn store_takes_sqlite_or_postgres_and_the_lease_must_outlast_an_attempt() {
    let with = |extra: &str| format!("{extra}\n{MINIMAL}");
    let pg = with("[store]\nurl = \"postgres://bridge@db:5432/vk\"\nmax_connections = 16");
    let c = Config::parse(&pg, &no_env()).unwrap();
    assert_eq!(c.store.max_connections, 16);
    assert_eq!(c.delivery.claim_lease, Duration::from_secs(60));
    let secret = with("[store]\nurl = \"postgres://bridge:hunter2@db/vk\"");
    let debug = format!("{:?}", Config::parse(&secret, &no_env()).unwrap());
    assert!(
        !debug.contains("hunter2") && debug.contains("bridge:***@db"),
        "{debug}"
    );
    let e = err(&with("[store]\nurl = \"mysql://db/vk\""));
    assert!(e.contains("store.url") && e.contains("postgres://"), "{e}");
    let e = err(&with("[store]\nmax_connections = 0"));
    assert!(e.contains("store.max_connections"), "{e}");
    let named = with("[store]\ninstance_id = \"bridge-a\"");
    let c = Config::parse(&named, &no_env()).unwrap();
    assert_eq!(c.store.instance_id.as_deref(), Some("bridge-a"));
    for bad in ["\"\"", "\" \"", "\"a\\nb\""] {
        let e = err(&with(&format!("[store]\ninstance_id = {bad}")));
        assert!(e.contains("store.instance_id"), "{bad}: {e}");
    }
    let e = err(&with(
        "[delivery]\ntimeout_secs = 30\nclaim_lease_secs = 20",
    ));
    assert!(e.contains("delivery.claim_lease_secs"), "{e}");
}

#[test]
fn bundled_example_config_is_valid() {
    let text = include_str!("../../config.toml");
    Config::parse(text, &no_env()).unwrap();
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    let e = err(&MINIMAL.replace("[recordings]", "[recordings]\nbukket = \"x\""));
    assert!(e.contains("bukket"), "{e}");
}

#[test]
fn bad_regex_names_the_workflow_key() {
    let e = err(&MINIMAL.replace(r"(?P<call_slug>", "(?P<call_slug"));
    assert!(
        e.starts_with("workflows[0].room_pattern: invalid regex"),
        "{e}"
    );
}

#[test]
fn public_mode_requires_base_url() {
    let e = err(&MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\nurl_mode = \"public\""));
    assert!(e.starts_with("recordings.public_base_url"), "{e}");
}

#[test]
fn secrets_come_from_the_environment_when_absent() {
    let text = MINIMAL.replace("api_key = \"devkey\"\napi_secret = \"secret\"\n", "");
    let env = FakeEnv(HashMap::from([
        ("LIVEKIT_API_KEY", "envkey"),
        ("LIVEKIT_API_SECRET", "envsecret"),
    ]));
    let c = Config::parse(&text, &env).unwrap();
    assert_eq!(c.livekit.keys[0].key, "envkey");
    assert_eq!(c.livekit.keys[0].secret.expose(), "envsecret");
    let e = err(&text);
    assert!(e.starts_with("livekit.api_key: missing"), "{e}");
}

#[test]
fn secret_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "from-file\n").unwrap();
    let text = MINIMAL.replace(
        "api_secret = \"secret\"",
        &format!("api_secret_file = {:?}", path.display().to_string()),
    );
    let c = Config::parse(&text, &no_env()).unwrap();
    assert_eq!(c.livekit.keys[0].secret.expose(), "from-file");
}

#[test]
fn extra_keys_are_accepted_and_duplicates_rejected() {
    let text =
        format!("{MINIMAL}\n[[livekit.extra_keys]]\napi_key = \"old\"\napi_secret = \"s2\"\n");
    let c = Config::parse(&text, &no_env()).unwrap();
    assert_eq!(c.livekit.keys.len(), 2);
    let dup = text.replace("\"old\"", "\"devkey\"");
    assert!(err(&dup).contains("appears twice"));
}

#[test]
fn duplicate_workflow_ids_are_rejected() {
    let second = MINIMAL
        .split("[[workflows]]")
        .nth(1)
        .unwrap()
        .replace("customer-support", "other");
    let e = err(&format!("{MINIMAL}[[workflows]]{second}"));
    assert!(e.starts_with("workflows[1].id"), "{e}");
}

#[test]
fn secrets_never_show_in_debug_output() {
    let c = Config::parse(MINIMAL, &no_env()).unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("\"secret\""), "{shown}");
}

#[test]
fn credentials_directory_is_expanded_in_file_paths() {
    let env = FakeEnv(HashMap::from([(
        "CREDENTIALS_DIRECTORY",
        "/run/credentials/voicekit-bridge.service/",
    )]));
    for form in ["${CREDENTIALS_DIRECTORY}", "$CREDENTIALS_DIRECTORY"] {
        let path = PathBuf::from(format!("{form}/livekit-api-secret"));
        assert_eq!(
            expand_credentials_directory("k", &path, &env).unwrap(),
            PathBuf::from("/run/credentials/voicekit-bridge.service/livekit-api-secret")
        );
    }
    let plain = PathBuf::from("/etc/voicekit-bridge/secret");
    assert_eq!(
        expand_credentials_directory("k", &plain, &no_env()).unwrap(),
        plain
    );
    let e = expand_credentials_directory(
        "livekit.api_secret_file",
        Path::new("${CREDENTIALS_DIRECTORY}/s"),
        &no_env(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("livekit.api_secret_file: ${CREDENTIALS_DIRECTORY}/s uses"),
        "{e}"
    );
}

#[test]
fn server_limits_have_defaults_and_are_checked() {
    let c = Config::parse(MINIMAL, &no_env()).unwrap();
    assert_eq!(c.server.header_timeout, Duration::from_secs(10));
    assert_eq!(c.server.body_timeout, Duration::from_secs(30));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(95));
    assert_eq!(c.server.max_connections, None);
    assert_eq!(c.log.summary_interval, Duration::from_secs(60));
    assert_eq!(c.api.metrics_refresh, Duration::from_secs(10));
    let with = |extra: &str| format!("[server]\n{extra}\n{MINIMAL}");
    let c = Config::parse(
            &with("header_timeout_secs = 2\nbody_timeout_secs = 3\nidle_timeout_secs = 4\nmax_connections = 50"),
            &no_env(),
        )
        .unwrap();
    assert_eq!(c.server.idle_timeout, Duration::from_secs(4));
    assert_eq!(c.server.max_connections, Some(50));
    for (line, key) in [
        ("header_timeout_secs = 0", "server.header_timeout_secs"),
        ("body_timeout_secs = -1", "server.body_timeout_secs"),
        ("idle_timeout_secs = 1e9", "server.idle_timeout_secs"),
        ("max_connections = 0", "server.max_connections"),
    ] {
        let e = err(&with(line));
        assert!(e.starts_with(key), "{line}: {e}");
    }
}

#[test]
fn an_api_token_must_be_at_least_32_bytes() {
    let with = |token: &str| format!("[api]\ntoken = \"{token}\"\n{MINIMAL}");
    let e = err(&with(&"x".repeat(31)));
    assert!(e.starts_with("api.token: must be at least 32 bytes"), "{e}");
    let e = err(&with(""));
    assert!(e.starts_with("api.token: must be at least 32 bytes"), "{e}");
    let c = Config::parse(&with(&"x".repeat(32)), &no_env()).unwrap();
    assert_eq!(c.api.token.unwrap().expose().len(), 32);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "short\n").unwrap();
    let text = format!(
        "[api]\ntoken_file = {:?}\n{MINIMAL}",
        path.display().to_string()
    );
    let e = err(&text);
    assert!(
        e.starts_with("api.token_file: must be at least 32 bytes"),
        "{e}"
    );
}

#[test]
fn weak_livekit_secrets_are_warned_about_without_showing_them() {
    // MINIMAL's "secret" is short.
    let c = Config::parse(MINIMAL, &no_env()).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("shorter than 32 characters"));
    assert!(!c.warnings[0].contains("\"secret\""));
    let example = MINIMAL.replace("\"secret\"", &format!("{EXAMPLE_LIVEKIT_SECRET:?}"));
    let c = Config::parse(&example, &no_env()).unwrap();
    assert!(
        c.warnings[0].contains("is the example configuration's"),
        "{:?}",
        c.warnings
    );
    assert!(!c.warnings[0].contains(EXAMPLE_LIVEKIT_SECRET));
    let strong = MINIMAL.replace("\"secret\"", &format!("\"{}\"", "k".repeat(40)));
    assert!(
        Config::parse(&strong, &no_env())
            .unwrap()
            .warnings
            .is_empty()
    );
    // The bundled example draws the warning it should.
    let bundled = Config::parse(include_str!("../../config.toml"), &no_env()).unwrap();
    assert!(
        bundled
            .warnings
            .iter()
            .any(|w| w.contains("example configuration"))
    );
}

#[test]
fn a_file_of_inline_secrets_others_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let text = format!(
        "[store]\nurl = \"postgres://u:pw@db/vk\"\n{}",
        MINIMAL.replace(
            "room_pattern",
            "signing_secret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"\nroom_pattern"
        )
    );
    std::fs::write(&path, &text).unwrap();
    let mode = |m| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
    mode(0o644);
    let warning = exposed_inline_secrets(&path, &text).unwrap();
    assert!(
        warning.contains("livekit.api_secret, store.url (password), workflows[0].signing_secret")
            && warning.contains("readable by everyone"),
        "{warning}"
    );
    mode(0o640);
    assert!(
        exposed_inline_secrets(&path, &text)
            .unwrap()
            .contains("its group")
    );
    mode(0o600);
    assert_eq!(exposed_inline_secrets(&path, &text), None);
    mode(0o644);
    let no_inline = "[livekit]\napi_key = \"k\"\napi_secret_file = \"/run/s\"\n";
    assert_eq!(exposed_inline_secrets(&path, no_inline), None);
}

#[test]
fn parse_errors_name_the_place_but_never_quote_the_line() {
    let text = MINIMAL.replace("api_secret = \"secret\"", "api_secret = \"do-not-print-me");
    let e = err(&text);
    assert!(e.contains("line 4, column"), "{e}");
    assert!(!e.contains("do-not-print-me"), "{e}");
}

#[test]
fn durations_are_read_as_seconds_and_bad_ones_name_their_key() {
    let with = |extra: &str| format!("{extra}\n{MINIMAL}");
    let c = Config::parse(
        &with("[delivery]\nretry_schedule_secs = [0.5, 90]\nclaim_lease_secs = 120.25\n[store]\nretention_days = 0.5"),
        &no_env(),
    )
    .unwrap();
    assert_eq!(
        c.delivery.retry_schedule,
        [Duration::from_millis(500), Duration::from_secs(90)]
    );
    assert_eq!(c.delivery.claim_lease, Duration::from_millis(120_250));
    assert_eq!(c.store.retention, Duration::from_secs(43_200));
    for (line, key) in [
        (
            "[delivery]\nclaim_lease_secs = 1e300",
            "delivery.claim_lease_secs",
        ),
        ("[delivery]\ntimeout_secs = nan", "delivery.timeout_secs"),
        (
            "[delivery]\nretry_schedule_secs = [5, -1]",
            "delivery.retry_schedule_secs",
        ),
        (
            "[reconcile]\ninterval_secs = inf",
            "reconcile.interval_secs",
        ),
        (
            "[api]\nmetrics_refresh_secs = -0.5",
            "api.metrics_refresh_secs",
        ),
        ("[store]\nretention_days = 0", "store.retention_days"),
    ] {
        let e = err(&with(line));
        assert!(e.starts_with(&format!("{key}: ")), "{line}: {e}");
    }
}
