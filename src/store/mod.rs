//! Object stores: where source files are listed and read, and staged parts written.
//! One small trait, two adapters (S3 and a local directory), one conformance suite
//! (`tests/it/store_conformance.rs`) that both pass.

pub mod local;
pub mod s3;

use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use crate::failure::FailureClass;

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the store's root (the bucket, or the directory).
    pub key: String,
    /// Version marker: the S3 ETag (quotes stripped), or size and mtime for local files.
    /// A key seen with a new ETag is a new file version and is loaded again.
    pub etag: String,
    pub size: u64,
    /// Listed in an archive storage class (S3 GLACIER, DEEP_ARCHIVE). Shown, never
    /// trusted: a restored object still lists as archived, so the object is read and
    /// only the store's answer (`InvalidObjectState`) sets it aside.
    pub archived: bool,
    /// When the object was written (S3 LastModified, the file's mtime): how old a
    /// pending file is, and how long before the source deletes it.
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// A lifecycle rule that deletes the objects under `prefix` `days` after they were
/// written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiration {
    pub prefix: String,
    pub days: u32,
}

/// One level of a listing with the delimiter `/`: the objects directly under a prefix,
/// and the prefixes one level down (each ending in `/`), both in ascending key order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Level {
    pub objects: Vec<ObjectMeta>,
    pub prefixes: Vec<String>,
}

impl Level {
    /// The level of `prefix` in a full listing of it.
    pub fn of(prefix: &str, listed: Vec<ObjectMeta>) -> Level {
        let mut level = Level::default();
        for o in listed {
            let Some(rest) = o.key.strip_prefix(prefix) else {
                continue;
            };
            match rest.find('/') {
                None => level.objects.push(o),
                // A listing is in key order: a prefix's keys are adjacent.
                Some(i) => {
                    let sub = &o.key[..prefix.len() + i + 1];
                    if level.prefixes.last().map(String::as_str) != Some(sub) {
                        level.prefixes.push(sub.to_owned());
                    }
                }
            }
        }
        level
    }
}

/// A streaming object body (defined where bodies are read).
pub use crate::read::Body;

/// An object-store failure, naming the object and what to check. Each variant knows
/// its [`FailureClass`], decided by the adapter from the store's own error code.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Listed, then gone when read: expired (the source deletes files after its
    /// retention) or removed. Nothing is left to load; the version is recorded as lost.
    #[error("object {url} not found")]
    NotFound { url: String },
    /// In an archive storage class and not restored (S3 `InvalidObjectState`): readable
    /// once restored.
    #[error("object {url} is archived and cannot be read until it is restored: {message}")]
    Archived { url: String, message: String },
    /// The store refuses this object's bytes with a permanent error (`code`): access
    /// denied to it (a KMS key or object ownership the tool lacks), or another 4xx.
    #[error("object {url} cannot be read: {message}")]
    Unreadable {
        url: String,
        /// The store's error code (S3: `AccessDenied`, `KMS.DisabledException`, ...).
        code: String,
        message: String,
    },
    #[error("cannot {op} {url}: {message} ({})", class.advice())]
    Io {
        op: &'static str,
        url: String,
        message: String,
        /// [`FailureClass::Transient`] or [`FailureClass::Systemic`].
        class: FailureClass,
    },
}

impl StoreError {
    /// A failure that may pass on its own (throttling, a timeout, a 5xx).
    pub(crate) fn io(op: &'static str, url: String, e: impl std::fmt::Display) -> Self {
        StoreError::Io {
            op,
            url,
            message: e.to_string(),
            class: FailureClass::Transient,
        }
    }

    /// A failure of the configuration or a permission: every object would fail alike.
    pub(crate) fn systemic(op: &'static str, url: String, e: impl std::fmt::Display) -> Self {
        StoreError::Io {
            op,
            url,
            message: e.to_string(),
            class: FailureClass::Systemic,
        }
    }

    /// How the pipeline handles this failure.
    pub fn class(&self) -> FailureClass {
        match self {
            StoreError::NotFound { .. } | StoreError::Archived { .. } | StoreError::Unreadable { .. } => {
                FailureClass::Object
            }
            StoreError::Io { class, .. } => *class,
        }
    }
}

/// The operations the pipeline needs, nothing more.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Every object whose key starts with `prefix`, in ascending key order, across all
    /// pages of the listing.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    /// The first page of a listing of `prefix`, and whether it is the whole listing: a
    /// small source is listed in one request, with no level walk. The default lists
    /// everything.
    async fn list_first_page(&self, prefix: &str) -> Result<(Vec<ObjectMeta>, bool), StoreError> {
        Ok((self.list(prefix).await?, true))
    }
    /// One level under `prefix` (empty or ending in `/`): what discovery walks to find
    /// the day partitions without listing every object of the window in one sequence.
    /// The default derives it from a full listing.
    async fn list_level(&self, prefix: &str) -> Result<Level, StoreError> {
        Ok(Level::of(prefix, self.list(prefix).await?))
    }
    /// Streams one object.
    async fn get(&self, key: &str) -> Result<Body, StoreError>;
    /// Writes one object whole (parts are bounded by `staging.part_size_mb`).
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError>;
    /// Deletes every object under `prefix`; returns how many were deleted.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError>;
    /// Deletes exactly these objects; a key with no object is not an error (as S3's
    /// DeleteObjects has it). A load knows every key it wrote, so deleting them by name
    /// costs no listing: on S3 that is one round trip instead of two.
    async fn delete(&self, keys: &[String]) -> Result<(), StoreError>;
    /// The lifecycle rules that delete objects, or `None` for a store that has no
    /// lifecycle (a local directory). `check` compares them with staging and
    /// `source.retention_days`.
    async fn expirations(&self) -> Result<Option<Vec<Expiration>>, StoreError> {
        Ok(None)
    }
    /// The URL of `key`, as COPY manifests and messages name it.
    fn url(&self, key: &str) -> String;
    /// The key of a URL this store produced with [`ObjectStore::url`], if it is one.
    fn key_of(&self, url: &str) -> Option<String>;
}

/// Where objects live: an S3 bucket and key prefix, or a local directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `prefix` is empty or ends in `/`.
    S3 { bucket: String, prefix: String },
    /// An absolute directory; keys are `/`-separated paths below it.
    Local { root: std::path::PathBuf },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::Local { root } => write!(f, "file://{}/", root.display()),
        }
    }
}

/// A store and the key prefix inside it that a config URL named.
#[derive(Debug, Clone)]
pub struct Place {
    pub store: Arc<dyn ObjectStore>,
    /// Empty or ending in `/`.
    pub prefix: String,
}

impl Place {
    /// Opens the store a [`Location`] names. S3 stores share one SDK configuration.
    pub async fn open(location: &Location, s3: &s3::S3Factory) -> Place {
        match location {
            Location::S3 { bucket, prefix } => Place {
                store: Arc::new(s3.store(bucket).await),
                prefix: prefix.clone(),
            },
            Location::Local { root } => Place {
                store: Arc::new(local::LocalStore::new(root.clone())),
                prefix: String::new(),
            },
        }
    }

    /// The full key of `rel` under this place's prefix.
    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }
}
