//! From "egress says it uploaded a file" to a URL a customer can download.
//!
//! LiveKit reports where it put the recording in several shapes (virtual-host S3 URL,
//! path-style URL of an S3-compatible server, a presigned URL, or just the key), so the
//! bucket and key are derived robustly. A recording the location puts in another bucket
//! than the configured one is not published: signing its key in our bucket would hand
//! out a URL to some other object, or to nothing. The object is then confirmed with
//! HeadObject (a URL to nothing helps no one) and published either as a presigned GET
//! or under a public base URL.

use aws_sdk_s3::{
    Client,
    config::{BehaviorVersion, Region},
    error::SdkError,
    operation::head_object::HeadObjectError,
    presigning::PresigningConfig,
};

use crate::{
    call::machine::RecordingFile,
    config::{RecordingsConfig, UrlMode},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordingError {
    #[error("recording has neither a location nor a filename")]
    NoKey,
    #[error("S3 HeadObject s3://{bucket}/{key} failed: {message}")]
    Head {
        bucket: String,
        key: String,
        message: String,
    },
    #[error("presigning s3://{bucket}/{key} failed: {message}")]
    Presign {
        bucket: String,
        key: String,
        message: String,
    },
}

/// What publishing a recording came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Published {
    Url(String),
    /// HeadObject found no such object: the call is finalized without a URL.
    Missing {
        bucket: String,
        key: String,
    },
    /// The egress put the recording in `bucket`, not the configured bucket: the call
    /// is finalized without a URL.
    OtherBucket {
        bucket: String,
        key: String,
    },
}

/// Publishes recordings from the configured bucket.
#[derive(Clone)]
pub(crate) struct Recordings {
    client: Client,
    config: RecordingsConfig,
}

impl Recordings {
    /// Builds the S3 client from the standard AWS credential chain.
    pub(crate) async fn new(config: RecordingsConfig) -> Recordings {
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .load()
            .await;
        let mut s3 =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(config.force_path_style);
        if let Some(endpoint) = &config.endpoint {
            s3 = s3.endpoint_url(endpoint);
        }
        Recordings::with_client(Client::from_conf(s3.build()), config)
    }

    pub(crate) fn with_client(client: Client, config: RecordingsConfig) -> Recordings {
        Recordings { client, config }
    }

    /// Confirms the object (when `verify_object`) and returns its URL.
    pub(crate) async fn publish(&self, file: &RecordingFile) -> Result<Published, RecordingError> {
        let bucket = self.config.bucket.clone();
        let object =
            locate(&file.location, &file.filename, &bucket).ok_or(RecordingError::NoKey)?;
        let key = match object.bucket {
            Some(other) if other != bucket => {
                return Ok(Published::OtherBucket {
                    bucket: other,
                    key: object.key,
                });
            }
            _ => object.key,
        };
        if self.config.verify_object {
            match self
                .client
                .head_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
            {
                Ok(_) => {}
                Err(SdkError::ServiceError(e))
                    if matches!(e.err(), HeadObjectError::NotFound(_)) =>
                {
                    return Ok(Published::Missing { bucket, key });
                }
                Err(e) => {
                    crate::metrics::s3_error();
                    return Err(RecordingError::Head {
                        bucket,
                        key,
                        message: error_chain(&e),
                    });
                }
            }
        }
        match self.config.url_mode {
            UrlMode::Public => {
                let base = self.config.public_base_url.as_deref().unwrap_or_default();
                Ok(Published::Url(public_url(base, &key)))
            }
            UrlMode::Presigned => self.presign(bucket, key).await.map(Published::Url),
        }
    }

    async fn presign(&self, bucket: String, key: String) -> Result<String, RecordingError> {
        let fail = |message: String, bucket: String, key: String| RecordingError::Presign {
            bucket,
            key,
            message,
        };
        let expiry = PresigningConfig::expires_in(self.config.presign_expiry)
            .map_err(|e| fail(e.to_string(), bucket.clone(), key.clone()))?;
        match self
            .client
            .get_object()
            .bucket(&bucket)
            .key(&key)
            .presigned(expiry)
            .await
        {
            Ok(req) => Ok(req.uri().to_owned()),
            Err(e) => {
                crate::metrics::s3_error();
                Err(fail(error_chain(&e), bucket, key))
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Where an egress file result says its object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectLocation {
    /// The bucket the location names; `None` when there is only a filename, which is a
    /// key in the configured bucket.
    pub bucket: Option<String>,
    pub key: String,
}

/// The bucket and key of an egress file result.
///
/// `location` is `https://{bucket}.s3[.region].amazonaws.com/{key}` (key not
/// URL-encoded), `{endpoint}/{bucket}/{key}` with path style, or a presigned URL
/// (encoded, with a query); a host that begins with `{configured}.` is a virtual host of
/// the configured bucket on any endpoint. `filename` is the key as egress wrote it and
/// the fallback.
pub(crate) fn locate(location: &str, filename: &str, configured: &str) -> Option<ObjectLocation> {
    let from_location = (|| {
        let (_, rest) = location.split_once("://")?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (path, presigned) = match path.split_once('?') {
            Some((p, _)) => (p, true),
            None => (path, false),
        };
        let path = if presigned {
            percent_decode(path)
        } else {
            path.to_owned()
        };
        let host = host.rsplit('@').next().unwrap_or(host);
        let host = host.split(':').next().unwrap_or(host);
        let own_host = host
            .strip_prefix(configured)
            .is_some_and(|rest| rest.starts_with('.'));
        let (bucket, key) = match aws_virtual_host_bucket(host) {
            Some(bucket) => (bucket.to_owned(), path),
            None if own_host => (configured.to_owned(), path),
            None => {
                // Path style: the first segment is the bucket.
                let (bucket, key) = path.split_once('/')?;
                (bucket.to_owned(), key.to_owned())
            }
        };
        Some(ObjectLocation {
            bucket: Some(bucket).filter(|b| !b.is_empty()),
            key,
        })
        .filter(|o| !o.key.is_empty())
    })();
    from_location.or_else(|| {
        Some(filename.trim_start_matches('/'))
            .filter(|k| !k.is_empty())
            .map(|key| ObjectLocation {
                bucket: None,
                key: key.to_owned(),
            })
    })
}

/// `b` for AWS's virtual-host names `b.s3.amazonaws.com`, `b.s3.region.amazonaws.com`
/// and `b.s3-region.amazonaws.com`; `None` for a path-style host (`s3.amazonaws.com`,
/// an S3-compatible server's).
fn aws_virtual_host_bucket(host: &str) -> Option<&str> {
    let rest = host.strip_suffix(".amazonaws.com")?;
    let at = rest.rfind(".s3")?;
    let after = &rest[at + 3..];
    (after.is_empty() || after.starts_with('.') || after.starts_with('-'))
        .then(|| &rest[..at])
        .filter(|b| !b.is_empty())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(b) = escaped {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `public_base_url` + key, each path segment percent-encoded as a URL path needs.
pub(crate) fn public_url(base: &str, key: &str) -> String {
    let mut url = base.trim_end_matches('/').to_owned();
    for segment in key.split('/') {
        url.push('/');
        for b in segment.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
                url.push(b as char);
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::config::Credentials;

    const KEY: &str = "recordings/call-_+15551230001_7dKqP2sVw9Xr/2025-10-23T154929.ogg";

    const BUCKET: &str = "voicekit-recordings";

    fn located(location: &str, filename: &str) -> Option<(Option<String>, String)> {
        locate(location, filename, BUCKET).map(|o| (o.bucket, o.key))
    }

    fn ours(key: &str) -> Option<(Option<String>, String)> {
        Some((Some(BUCKET.into()), key.into()))
    }

    #[test]
    fn key_from_virtual_host_location() {
        let loc = format!("https://voicekit-recordings.s3.amazonaws.com/{KEY}");
        assert_eq!(located(&loc, ""), ours(KEY));
        let regional = format!("https://voicekit-recordings.s3.eu-west-1.amazonaws.com/{KEY}");
        assert_eq!(located(&regional, ""), ours(KEY));
        let dashed = format!("https://voicekit-recordings.s3-eu-west-1.amazonaws.com/{KEY}");
        assert_eq!(located(&dashed, ""), ours(KEY));
        let own_endpoint = format!("https://voicekit-recordings.minio.example:9000/{KEY}");
        assert_eq!(located(&own_endpoint, ""), ours(KEY));
    }

    #[test]
    fn key_from_path_style_location() {
        let loc = format!("http://127.0.0.1:9000/voicekit-recordings/{KEY}");
        assert_eq!(located(&loc, "x"), ours(KEY));
        let aws = format!("https://s3.eu-west-1.amazonaws.com/voicekit-recordings/{KEY}");
        assert_eq!(located(&aws, "x"), ours(KEY));
    }

    #[test]
    fn another_bucket_in_the_location_is_reported_as_such() {
        let other = |bucket: &str| Some((Some(bucket.to_owned()), KEY.to_owned()));
        let loc = format!("https://other-bucket.s3.amazonaws.com/{KEY}");
        assert_eq!(located(&loc, KEY), other("other-bucket"));
        let path = format!("http://minio:9000/other-bucket/{KEY}");
        assert_eq!(located(&path, KEY), other("other-bucket"));
        let dotted = format!("https://voicekit-recordings.old.s3.amazonaws.com/{KEY}");
        assert_eq!(located(&dotted, KEY), other("voicekit-recordings.old"));
    }

    #[test]
    fn key_from_presigned_location_is_decoded() {
        let loc =
            "https://voicekit-recordings.s3.amazonaws.com/rec/a%2Bb%20c.ogg?X-Amz-Signature=1";
        assert_eq!(located(loc, ""), ours("rec/a+b c.ogg"));
    }

    #[test]
    fn filename_is_the_fallback() {
        assert_eq!(located("", KEY), Some((None, KEY.into())));
        assert_eq!(
            located("https://host-without-a-path", KEY),
            Some((None, KEY.into()))
        );
        assert_eq!(located("", ""), None);
    }

    #[test]
    fn public_url_encodes_what_a_path_cannot_hold() {
        assert_eq!(
            public_url("https://recordings.voicekit.com/", "path/to/a b.ogg"),
            "https://recordings.voicekit.com/path/to/a%20b.ogg"
        );
        assert_eq!(
            public_url("https://r.example", KEY),
            format!("https://r.example/{KEY}")
        );
    }

    fn config(mode: UrlMode) -> RecordingsConfig {
        RecordingsConfig {
            bucket: "voicekit-recordings".into(),
            region: "us-east-1".into(),
            endpoint: None,
            force_path_style: false,
            url_mode: mode,
            public_base_url: Some("https://recordings.voicekit.com".into()),
            presign_expiry: std::time::Duration::from_secs(604_800),
            verify_object: false,
        }
    }

    fn client() -> Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                "AKIDEXAMPLE",
                "SECRETEXAMPLE",
                None,
                None,
                "test",
            ))
            .build();
        Client::from_conf(conf)
    }

    /// moto does not check signatures or expiry, so the presigned URL's shape is proved here.
    #[tokio::test]
    async fn presigned_url_is_a_sigv4_get_with_the_configured_expiry() {
        let r = Recordings::with_client(client(), config(UrlMode::Presigned));
        let file = RecordingFile {
            filename: KEY.into(),
            location: format!("https://voicekit-recordings.s3.amazonaws.com/{KEY}"),
        };
        let Published::Url(url) = r.publish(&file).await.unwrap() else {
            panic!("expected a URL")
        };
        let parsed = url::Url::parse(&url).unwrap();
        assert_eq!(
            parsed.host_str(),
            Some("voicekit-recordings.s3.us-east-1.amazonaws.com")
        );
        assert!(parsed.path().ends_with("2025-10-23T154929.ogg"), "{url}");
        let q: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(q["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(q["X-Amz-Expires"], "604800");
        assert!(q["X-Amz-Credential"].starts_with("AKIDEXAMPLE/"));
        assert_eq!(q["X-Amz-Signature"].len(), 64);
        assert!(!url.contains("SECRETEXAMPLE"));
    }

    /// Signing the same key in our bucket would point the customer at another object
    /// (or at nothing): no URL is published.
    #[tokio::test]
    async fn a_recording_in_another_bucket_is_not_published() {
        for mode in [UrlMode::Presigned, UrlMode::Public] {
            let r = Recordings::with_client(client(), config(mode));
            let file = RecordingFile {
                filename: KEY.into(),
                location: format!("https://other-bucket.s3.amazonaws.com/{KEY}"),
            };
            assert_eq!(
                r.publish(&file).await.unwrap(),
                Published::OtherBucket {
                    bucket: "other-bucket".into(),
                    key: KEY.into()
                }
            );
        }
    }

    #[tokio::test]
    async fn public_mode_joins_base_and_key() {
        let r = Recordings::with_client(client(), config(UrlMode::Public));
        let file = RecordingFile {
            filename: "path/to/audio.ogg".into(),
            location: String::new(),
        };
        assert_eq!(
            r.publish(&file).await.unwrap(),
            Published::Url("https://recordings.voicekit.com/path/to/audio.ogg".into())
        );
    }
}
