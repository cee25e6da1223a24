//! How the dashboard writes and reads times and links: UTC throughout, to the second,
//! in the form a `datetime-local` field takes and gives.

use time::{
    OffsetDateTime, PrimitiveDateTime, format_description::well_known::Rfc3339,
    macros::format_description,
};

/// `2026-12-06 18:49:33`, UTC, for unix milliseconds.
pub fn time(ms: i64) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// `2026-12-06T18:49`, as a `datetime-local` field shows it.
pub fn field_time(ms: i64) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// Unix milliseconds of a time typed in a form: a `datetime-local` value (UTC), with
/// or without seconds, or RFC 3339. `None` for an empty field.
pub fn parse_time(field: &str, value: &str) -> Result<Option<i64>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let local = [
        format_description!("[year]-[month]-[day]T[hour]:[minute]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    ];
    let parsed = local
        .iter()
        .find_map(|f| PrimitiveDateTime::parse(value, f).ok())
        .map(PrimitiveDateTime::assume_utc)
        .or_else(|| OffsetDateTime::parse(value, &Rfc3339).ok())
        .ok_or_else(|| format!("{field}: not a time like 2026-12-06T18:00 (UTC)"))?;
    Ok(Some((parsed.unix_timestamp_nanos() / 1_000_000) as i64))
}

/// How long ago `ms` was, roughly: `42 s`, `5 min`, `3 h 20 min`, `2 d 4 h`.
pub fn age(ms: i64, now_ms: i64) -> String {
    let s = (now_ms - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `text` percent-encoded for a query string's value.
pub fn url_encoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A query string of the non-empty pairs, `a=1&b=2`.
pub fn query(pairs: &[(&str, String)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        out.append_pair(name, value);
    }
    out.finish()
}

/// A path within the dashboard to go back to after a form, or `/` for anything else
/// (another site's address, `//host`).
pub fn local_path(path: &str) -> &str {
    if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') {
        path
    } else {
        "/"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_back_as_written() {
        let ms = 1_765_046_973_000;
        assert_eq!(time(ms), "2025-12-06 18:49:33");
        assert_eq!(
            parse_time("since", &field_time(ms)).unwrap(),
            Some(ms - 33_000)
        );
        assert_eq!(
            parse_time("since", "2025-12-06T18:49:33Z").unwrap(),
            Some(ms)
        );
        assert_eq!(parse_time("since", " ").unwrap(), None);
        assert!(
            parse_time("since", "yesterday")
                .unwrap_err()
                .starts_with("since:")
        );
    }

    #[test]
    fn only_local_paths_are_gone_back_to() {
        assert_eq!(local_path("/calls/4?x=1"), "/calls/4?x=1");
        for elsewhere in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "",
        ] {
            assert_eq!(local_path(elsewhere), "/", "{elsewhere}");
        }
    }

    #[test]
    fn ages_are_rounded_to_what_an_operator_reads() {
        assert_eq!(age(0, 42_000), "42 s");
        assert_eq!(age(0, 12_000_000), "3 h 20 min");
        assert_eq!(age(0, 187_200_000), "2 d 4 h");
    }
}
