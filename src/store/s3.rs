//! S3 through aws-sdk-s3. Credentials, region and endpoint come from the standard AWS
//! chain (`AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL[_S3]`, ...), never from our
//! config file.

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::operation::delete_objects::{DeleteObjectsError, DeleteObjectsOutput};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;

use super::{Body, Expiration, Level, ObjectMeta, ObjectStore, StoreError};

/// Builds S3 clients lazily: the AWS chain is only consulted when an `s3://` URL is used,
/// so local runs need no AWS setup at all.
#[derive(Debug)]
pub struct S3Factory {
    force_path_style: bool,
    client: tokio::sync::OnceCell<Client>,
}

impl S3Factory {
    /// A factory; `force_path_style` for S3-compatible servers (`s3.force_path_style`).
    pub fn new(force_path_style: bool) -> Self {
        S3Factory {
            force_path_style,
            client: tokio::sync::OnceCell::new(),
        }
    }

    async fn client(&self) -> Client {
        self.client
            .get_or_init(|| async {
                let shared = crate::aws::sdk_config().await;
                let conf = aws_sdk_s3::config::Builder::from(&shared)
                    .force_path_style(self.force_path_style)
                    .build();
                Client::from_conf(conf)
            })
            .await
            .clone()
    }

    /// A store for one bucket.
    pub async fn store(&self, bucket: &str) -> S3Store {
        S3Store {
            client: self.client().await,
            bucket: bucket.to_owned(),
        }
    }
}

/// One bucket; keys are S3 keys.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

impl S3Store {
    /// A store over an existing client (tests build their own).
    pub fn with_client(client: Client, bucket: &str) -> Self {
        S3Store {
            client,
            bucket: bucket.to_owned(),
        }
    }
}

/// DeleteObjects takes at most 1,000 keys a call.
const DELETE_BATCH: usize = 1000;
/// DeleteObjects calls in flight at once: each is a round trip, so a large delete costs
/// about one, not one per thousand keys.
const DELETE_CALLS_IN_FLIGHT: usize = 8;

/// What one DeleteObjects call gives.
type DeleteCall = Result<DeleteObjectsOutput, aws_sdk_s3::error::SdkError<DeleteObjectsError>>;

impl S3Store {
    /// Deletes `keys` with DeleteObjects, [`DELETE_BATCH`] keys a call, the calls at once
    /// (at most [`DELETE_CALLS_IN_FLIGHT`]). `what` names the objects in errors when no
    /// single key is to blame (the prefix's URL, or the keys').
    async fn delete_keys(&self, keys: &[String], what: &str) -> Result<(), StoreError> {
        let mut calls = tokio::task::JoinSet::new();
        for chunk in keys.chunks(DELETE_BATCH) {
            let ids = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::io("delete", what.to_owned(), e))?;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| StoreError::io("delete", what.to_owned(), e))?;
            while calls.len() >= DELETE_CALLS_IN_FLIGHT {
                self.delete_done(calls.join_next().await, what)?;
            }
            let call = self.client.delete_objects().bucket(&self.bucket).delete(delete);
            calls.spawn(call.send());
        }
        while !calls.is_empty() {
            self.delete_done(calls.join_next().await, what)?;
        }
        Ok(())
    }

    /// The outcome of one DeleteObjects call: quiet mode lists only the keys it failed.
    fn delete_done(
        &self,
        joined: Option<Result<DeleteCall, tokio::task::JoinError>>,
        what: &str,
    ) -> Result<(), StoreError> {
        let Some(joined) = joined else { return Ok(()) };
        let out = joined
            .map_err(|e| StoreError::io("delete", what.to_owned(), e))?
            .map_err(|e| op_error("delete", what.to_owned(), &e))?;
        match out.errors().first() {
            Some(err) => Err(StoreError::io(
                "delete",
                err.key().map_or_else(|| what.to_owned(), |k| self.url(k)),
                err.message().unwrap_or("DeleteObjects reported an error"),
            )),
            None => Ok(()),
        }
    }
}

/// The SDK error with its service code and message when there is one, the whole
/// context otherwise (credential and connection errors live in the context).
fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: &aws_sdk_s3::error::SdkError<E>,
) -> String {
    match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(e).to_string(),
    }
}

/// S3 error codes that every request of this identity to this bucket would get: the
/// credentials, the bucket or the account (AWS: ErrorResponses.html, "List of error
/// codes"). `AccessDenied` is among them for listing and writing; for reading one object
/// it may concern that object alone (see [`get_error`]).
const SYSTEMIC_CODES: [&str; 13] = [
    "AccessDenied",
    "AccountProblem",
    "AllAccessDisabled",
    "AuthorizationHeaderMalformed",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidBucketName",
    "InvalidToken",
    "NoSuchBucket",
    "NotSignedUp",
    "PermanentRedirect",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
];

/// The class of a failed request other than GetObject: systemic for the codes above,
/// transient for anything else (throttling, 5xx, timeouts, a dropped connection).
fn op_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    url: String,
    e: &aws_sdk_s3::error::SdkError<E>,
) -> StoreError {
    match e.code() {
        Some(code) if SYSTEMIC_CODES.contains(&code) => StoreError::systemic(op, url, describe(e)),
        _ => StoreError::io(op, url, describe(e)),
    }
}

/// The class of a failed GetObject, from its error code and HTTP status (AWS:
/// API_GetObject.html, ErrorResponses.html):
/// - `NoSuchKey`: the object is gone (expired or removed since the listing);
/// - `InvalidObjectState`: archived and not restored;
/// - `AccessDenied`, a `KMS.*` code, or another 4xx that is neither throttling nor a
///   timeout: this object cannot be read, permanently (the pipeline treats it as
///   systemic when a large share of a run's objects fail alike);
/// - the credential, bucket and account codes of [`SYSTEMIC_CODES`] other than
///   `AccessDenied`: systemic;
/// - anything else (5xx, `SlowDown`, `RequestTimeout`, no response): transient.
fn get_error(url: String, e: &aws_sdk_s3::error::SdkError<GetObjectError>) -> StoreError {
    if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
        return StoreError::NotFound { url };
    }
    let status = e.raw_response().map(|r| r.status().as_u16());
    match e.code() {
        Some("InvalidObjectState") => StoreError::Archived {
            url,
            message: describe(e),
        },
        Some(code) if code != "AccessDenied" && SYSTEMIC_CODES.contains(&code) => {
            StoreError::systemic("read", url, describe(e))
        }
        Some(code)
            if code == "AccessDenied"
                || code.starts_with("KMS.")
                || status.is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429)
                    && !matches!(code, "SlowDown" | "RequestTimeout" | "RequestTimeTooSkewed") =>
        {
            StoreError::Unreadable {
                url,
                code: code.to_owned(),
                message: describe(e),
            }
        }
        _ => StoreError::io("read", url, describe(e)),
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| op_error("list", self.url(prefix), &e))?;
            out.extend(page.contents().iter().filter_map(object_meta));
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn list_first_page(&self, prefix: &str) -> Result<(Vec<ObjectMeta>, bool), StoreError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .map_err(|e| op_error("list", self.url(prefix), &e))?;
        let mut objects: Vec<ObjectMeta> = page.contents().iter().filter_map(object_meta).collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((objects, !page.is_truncated().unwrap_or(false)))
    }

    async fn list_level(&self, prefix: &str) -> Result<Level, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut level = Level::default();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| op_error("list", self.url(prefix), &e))?;
            level
                .objects
                .extend(page.contents().iter().filter_map(object_meta));
            level.prefixes.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_owned)),
            );
        }
        level.objects.sort_by(|a, b| a.key.cmp(&b.key));
        level.prefixes.sort();
        Ok(level)
    }

    async fn get(&self, key: &str) -> Result<Body, StoreError> {
        let resp = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match resp {
            Ok(r) => Ok(Box::new(r.body.into_async_read())),
            Err(e) => Err(get_error(self.url(key), &e)),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| op_error("write", self.url(key), &e))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let keys: Vec<String> = self.list(prefix).await?.into_iter().map(|o| o.key).collect();
        self.delete_keys(&keys, &self.url(prefix)).await?;
        Ok(keys.len() as u64)
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        let what = match keys {
            [] => return Ok(()),
            [key] => self.url(key),
            [first, rest @ ..] => format!("{} and {} more", self.url(first), rest.len()),
        };
        self.delete_keys(keys, &what).await
    }

    async fn expirations(&self) -> Result<Option<Vec<Expiration>>, StoreError> {
        let out = match self
            .client
            .get_bucket_lifecycle_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => return Ok(Some(Vec::new())),
            Err(e) => return Err(op_error("read the lifecycle of", self.url(""), &e)),
        };
        Ok(Some(
            out.rules()
                .iter()
                .filter(|r| r.status() == &aws_sdk_s3::types::ExpirationStatus::Enabled)
                .filter_map(|r| {
                    let days = u32::try_from(r.expiration()?.days()?).ok()?;
                    #[allow(deprecated)] // the rule-level Prefix of older configurations
                    let prefix = r
                        .filter()
                        .and_then(|f| f.prefix().or_else(|| f.and().and_then(|a| a.prefix())))
                        .or_else(|| r.prefix())
                        .unwrap_or_default()
                        .to_owned();
                    Some(Expiration { prefix, days })
                })
                .collect(),
        ))
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn key_of(&self, url: &str) -> Option<String> {
        url.strip_prefix("s3://")?
            .strip_prefix(self.bucket.as_str())?
            .strip_prefix('/')
            .map(str::to_owned)
    }
}

/// A listed object's metadata; `None` for a "folder" marker (a key ending in `/`).
fn object_meta(o: &aws_sdk_s3::types::Object) -> Option<ObjectMeta> {
    let key = o.key()?;
    if key.ends_with('/') {
        return None;
    }
    Some(ObjectMeta {
        key: key.to_owned(),
        etag: o.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
        size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        archived: o
            .storage_class()
            .is_some_and(|c| matches!(c.as_str(), "GLACIER" | "DEEP_ARCHIVE")),
        last_modified: o
            .last_modified()
            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
    })
}
