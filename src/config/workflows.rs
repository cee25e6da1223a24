//! The `[[workflows]]` entries: unique ids and slugs, http(s) URLs, a room pattern that
//! compiles, and one source of signing secrets each.

use std::collections::HashSet;

use regex::Regex;

use super::{
    ConfigError, Workflow, file::RawWorkflow, invalid, secrets::read_secret_file,
    validate::check_http_url,
};
use crate::delivery::signing::SigningKey;

pub(super) fn validate(raw: Vec<RawWorkflow>) -> Result<Vec<Workflow>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid(
            "workflows",
            "at least one [[workflows]] entry is required",
        ));
    }
    let mut ids = HashSet::new();
    let mut slugs = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, w) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("workflows[{i}].{field}");
        if !ids.insert(w.id) {
            return Err(invalid(key("id"), format!("id {} is used twice", w.id)));
        }
        if w.slug.is_empty() {
            return Err(invalid(key("slug"), "is empty"));
        }
        if !slugs.insert(w.slug.clone()) {
            return Err(invalid(
                key("slug"),
                format!("slug {:?} is used twice", w.slug),
            ));
        }
        check_http_url(&key("events_webhook_url"), &w.events_webhook_url)?;
        if let Some(hook) = &w.call_started_hook {
            check_http_url(&key("call_started_hook"), hook)?;
        }
        let room_pattern = match w.room_pattern {
            None => None,
            Some(p) => Some(
                Regex::new(&p)
                    .map_err(|e| invalid(key("room_pattern"), format!("invalid regex: {e}")))?,
            ),
        };
        let mut secrets = Vec::new();
        match (w.signing_secret, w.signing_secret_file, w.signing_secrets) {
            (None, None, None) => {}
            (Some(s), None, None) => secrets.push((key("signing_secret"), s)),
            (None, Some(path), None) => {
                let k = key("signing_secret_file");
                let s = read_secret_file(&k, &path)?;
                secrets.push((k, s.expose().to_owned()));
            }
            (None, None, Some(list)) => {
                if list.is_empty() {
                    return Err(invalid(key("signing_secrets"), "is empty"));
                }
                for (j, s) in list.into_iter().enumerate() {
                    secrets.push((key(&format!("signing_secrets[{j}]")), s));
                }
            }
            _ => {
                return Err(invalid(
                    key("signing_secret"),
                    "set only one of signing_secret, signing_secret_file, signing_secrets",
                ));
            }
        }
        let signing_keys = secrets
            .into_iter()
            .map(|(k, s)| SigningKey::parse(&s).map_err(|e| invalid(k, e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Workflow {
            id: w.id,
            slug: w.slug,
            organization_id: w.organization_id,
            events_webhook_url: w.events_webhook_url,
            call_started_hook: w.call_started_hook,
            room_pattern,
            signing_keys,
        });
    }
    Ok(out)
}
