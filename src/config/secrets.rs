//! Secrets: a type whose `Debug` never shows the value, reading them from files
//! (systemd credentials, `${CREDENTIALS_DIRECTORY}`), and warnings about weak or
//! exposed ones.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use super::{ConfigError, Env, LiveKitConfig, ProcessEnv, invalid};

/// A secret string whose `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The LiveKit secret of the bundled example configuration (`config.toml`): fine on a
/// developer's machine, a warning anywhere else.
pub(crate) const EXAMPLE_LIVEKIT_SECRET: &str = "secret-for-local-development-only";

/// The shortest LiveKit secret that does not draw a warning: LiveKit's own generated
/// secrets are longer, and an HS256 key should carry 256 bits.
pub(crate) const MIN_LIVEKIT_SECRET_CHARS: usize = 32;

/// A warning when `path` holds a secret inline (a key the TOML file sets itself, not a
/// `*_file`) and its group or others may read it.
pub(super) fn exposed_inline_secrets(path: &Path, text: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;

    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    if mode & 0o044 == 0 {
        return None;
    }
    let table: toml::Table = toml::from_str(text).ok()?;
    let keys = inline_secret_keys(&table);
    if keys.is_empty() {
        return None;
    }
    Some(format!(
        "{} holds secrets inline ({}) and is readable by {} (mode {:o}): \
         chmod 600 it, or move the secrets to *_file keys (systemd credentials)",
        path.display(),
        keys.join(", "),
        if mode & 0o004 != 0 {
            "everyone"
        } else {
            "its group"
        },
        mode & 0o777
    ))
}

/// The keys of a parsed configuration file that carry a secret inline.
fn inline_secret_keys(table: &toml::Table) -> Vec<String> {
    let mut keys = Vec::new();
    let has = |t: Option<&toml::Value>, key: &str| t.and_then(|t| t.get(key)).is_some();
    if has(table.get("livekit"), "api_secret") {
        keys.push("livekit.api_secret".to_owned());
    }
    let extra = table
        .get("livekit")
        .and_then(|l| l.get("extra_keys"))
        .and_then(|e| e.as_array());
    for (i, key) in extra.into_iter().flatten().enumerate() {
        if key.get("api_secret").is_some() {
            keys.push(format!("livekit.extra_keys[{i}].api_secret"));
        }
    }
    if has(table.get("api"), "token") {
        keys.push("api.token".to_owned());
    }
    let store_url = table
        .get("store")
        .and_then(|s| s.get("url"))
        .and_then(|u| u.as_str());
    if store_url.is_some_and(|u| crate::store::redact_url(u) != u) {
        keys.push("store.url (password)".to_owned());
    }
    let workflows = table.get("workflows").and_then(|w| w.as_array());
    for (i, w) in workflows.into_iter().flatten().enumerate() {
        for key in ["signing_secret", "signing_secrets"] {
            if w.get(key).is_some() {
                keys.push(format!("workflows[{i}].{key}"));
            }
        }
    }
    keys
}

/// Warnings about the LiveKit secrets: shorter than [`MIN_LIVEKIT_SECRET_CHARS`], or the
/// example configuration's.
pub(super) fn livekit_secret_warnings(livekit: &LiveKitConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    for key in &livekit.keys {
        let secret = key.secret.expose();
        if secret == EXAMPLE_LIVEKIT_SECRET {
            warnings.push(format!(
                "the LiveKit secret of api_key {:?} is the example configuration's: \
                 anyone who read config.toml can forge webhooks; generate a new one",
                key.key
            ));
        } else if secret.chars().count() < MIN_LIVEKIT_SECRET_CHARS {
            warnings.push(format!(
                "the LiveKit secret of api_key {:?} is shorter than {MIN_LIVEKIT_SECRET_CHARS} \
                 characters: a short HS256 key can be guessed offline from one captured webhook",
                key.key
            ));
        }
    }
    warnings
}

/// The environment variable systemd sets to the directory holding the unit's
/// `LoadCredential=` files (`/run/credentials/<unit>/`).
pub(crate) const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// `path` with `${CREDENTIALS_DIRECTORY}` (or `$CREDENTIALS_DIRECTORY`) replaced by that
/// variable's value, so a `*_file` key can name a systemd credential without knowing the
/// unit's name; an error naming `key` when the path uses it and it is unset.
pub(crate) fn expand_credentials_directory(
    key: &str,
    path: &Path,
    env: &dyn Env,
) -> Result<PathBuf, ConfigError> {
    let Some(text) = path.to_str() else {
        return Ok(path.to_owned());
    };
    let braced = format!("${{{CREDENTIALS_DIRECTORY}}}");
    let bare = format!("${CREDENTIALS_DIRECTORY}");
    if !text.contains(&bare) && !text.contains(&braced) {
        return Ok(path.to_owned());
    }
    let dir = env.var(CREDENTIALS_DIRECTORY).ok_or_else(|| {
        invalid(
            key,
            format!(
                "{} uses ${CREDENTIALS_DIRECTORY}, which is not set \
                 (systemd sets it for a unit with LoadCredential=)",
                path.display()
            ),
        )
    })?;
    let dir = dir.trim_end_matches('/');
    Ok(PathBuf::from(
        text.replace(&braced, dir).replace(&bare, dir),
    ))
}

pub(super) fn read_secret_file(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    let path = &expand_credentials_directory(key, path, &ProcessEnv)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let value = text.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        return Err(invalid(key, format!("{} is empty", path.display())));
    }
    Ok(Secret(value))
}

/// Picks the one secret source given for a key (inline or file), naming both keys on a clash.
pub(super) fn secret_from(
    prefix: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(
            format!("{prefix}.api_secret"),
            format!("set either api_secret or {prefix}.api_secret_file, not both"),
        )),
        (Some(s), None) if s.is_empty() => Err(invalid(format!("{prefix}.api_secret"), "is empty")),
        (Some(s), None) => Ok(Some(Secret(s))),
        (None, Some(path)) => {
            read_secret_file(&format!("{prefix}.api_secret_file"), &path).map(Some)
        }
        (None, None) => Ok(None),
    }
}
