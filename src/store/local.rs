//! A directory as an object store: for local runs, `events-etl clean`, and tests.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;

use super::{Body, Level, ObjectMeta, ObjectStore, StoreError};

/// Keys are `/`-separated paths relative to `root`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// The directory is the store, as a bucket is on S3: listing a missing one is an
    /// error (a typo in the URL), not an empty listing. A missing prefix under it
    /// lists empty, as on S3.
    async fn check_root(&self, prefix: &str) -> Result<(), StoreError> {
        match tokio::fs::metadata(&self.root).await {
            Ok(md) if md.is_dir() => Ok(()),
            Ok(_) => Err(StoreError::systemic(
                "list",
                self.url(prefix),
                format!("{} is not a directory", self.root.display()),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::systemic(
                "list",
                self.url(prefix),
                format!("the directory {} does not exist", self.root.display()),
            )),
            Err(e) => Err(io_error("list", self.url(prefix), &e)),
        }
    }

    /// The directory `root` as a store.
    pub fn new(root: PathBuf) -> Self {
        LocalStore { root }
    }

    fn path(&self, key: &str) -> PathBuf {
        key.split('/').fold(self.root.clone(), |p, seg| p.join(seg))
    }
}

/// The most objects [`LocalStore::list_first_page`] returns, as one S3 page.
const FIRST_PAGE: usize = 1000;

/// Walks `dir`, pushing files whose key starts with `prefix`, and stops once `out`
/// holds more than `limit`. Directories are only entered when they can hold such keys.
fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    limit: usize,
    out: &mut Vec<ObjectMeta>,
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        if out.len() > limit {
            return Ok(());
        }
        let entry = entry?;
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let key = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let ft = entry.file_type()?;
        if ft.is_dir() {
            let as_dir = format!("{key}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(root, &path, prefix, limit, out)?;
            }
        } else if ft.is_file() && key.starts_with(prefix) {
            out.push(object_meta(key, &entry.metadata()?));
        }
    }
    Ok(())
}

/// One level of the directory of `prefix` (empty or ending in `/`): its files and its
/// subdirectories, as a delimiter listing on S3 returns them.
fn level(root: &Path, prefix: &str) -> std::io::Result<Level> {
    let mut level = Level::default();
    let entries = match std::fs::read_dir(root.join(prefix)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(level),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            level.prefixes.push(format!("{prefix}{name}/"));
        } else if ft.is_file() {
            level
                .objects
                .push(object_meta(format!("{prefix}{name}"), &entry.metadata()?));
        }
    }
    level.objects.sort_by(|a, b| a.key.cmp(&b.key));
    level.prefixes.sort();
    Ok(level)
}

/// A file's metadata as an object's: the ETag changes with its size or mtime.
fn object_meta(key: String, md: &std::fs::Metadata) -> ObjectMeta {
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    ObjectMeta {
        key,
        etag: format!("{:x}-{mtime:x}", md.len()),
        size: md.len(),
        archived: false,
        last_modified: md.modified().ok().map(chrono::DateTime::<chrono::Utc>::from),
    }
}

/// A filesystem error's class: a permission or a read-only filesystem is the
/// deployment's (systemic); anything else (a full disk, an interrupted call) may pass.
fn io_error(op: &'static str, url: String, e: &std::io::Error) -> StoreError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => StoreError::systemic(op, url, e),
        _ => StoreError::io(op, url, e),
    }
}

/// Removes the empty directories below `dir` (not `dir` itself), deepest first.
fn remove_empty_dirs_under(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let sub = entry.path();
            remove_empty_dirs_under(&sub);
            let _ = std::fs::remove_dir(&sub);
        }
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.check_root(prefix).await?;
        let root = self.root.clone();
        let p = prefix.to_owned();
        let mut out = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &p, usize::MAX, &mut out).map(|()| out)
        })
        .await
        .map_err(|e| StoreError::io("list", self.url(prefix), e))?
        .map_err(|e| io_error("list", self.url(prefix), &e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// As S3's first page: the whole listing when it holds at most [`FIRST_PAGE`]
    /// objects, else none of it and `false` (discovery then walks the levels), so that a
    /// large tree is never held whole.
    async fn list_first_page(&self, prefix: &str) -> Result<(Vec<ObjectMeta>, bool), StoreError> {
        self.check_root(prefix).await?;
        let root = self.root.clone();
        let p = prefix.to_owned();
        let mut out = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &p, FIRST_PAGE, &mut out).map(|()| out)
        })
        .await
        .map_err(|e| StoreError::io("list", self.url(prefix), e))?
        .map_err(|e| io_error("list", self.url(prefix), &e))?;
        if out.len() > FIRST_PAGE {
            return Ok((Vec::new(), false));
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((out, true))
    }

    async fn list_level(&self, prefix: &str) -> Result<Level, StoreError> {
        if !(prefix.is_empty() || prefix.ends_with('/')) {
            return Ok(Level::of(prefix, self.list(prefix).await?));
        }
        self.check_root(prefix).await?;
        let root = self.root.clone();
        let p = prefix.to_owned();
        tokio::task::spawn_blocking(move || level(&root, &p))
            .await
            .map_err(|e| StoreError::io("list", self.url(prefix), e))?
            .map_err(|e| io_error("list", self.url(prefix), &e))
    }

    async fn get(&self, key: &str) -> Result<Body, StoreError> {
        match tokio::fs::File::open(self.path(key)).await {
            // A directory opens fine on Unix but is only a prefix of keys, not an object.
            Ok(f) if f.metadata().await.is_ok_and(|m| m.is_dir()) => {
                Err(StoreError::NotFound { url: self.url(key) })
            }
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound { url: self.url(key) })
            }
            // Permanent for this file until someone changes its permissions.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(StoreError::Unreadable {
                url: self.url(key),
                code: "EACCES".to_owned(),
                message: e.to_string(),
            }),
            Err(e) => Err(StoreError::io("read", self.url(key), e)),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path(key);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_error("write", self.url(key), &e))?;
        }
        // Write then rename, so a reader never sees half an object. The temporary name is
        // unique: `with_extension` would share one file between `x.a` and `x.b` and
        // overwrite a key named `x.partial`.
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = path.with_file_name(format!(".{name}.{}.partial", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| io_error("write", self.url(key), &e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io_error("write", self.url(key), &e))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let objects = self.list(prefix).await?;
        for o in &objects {
            tokio::fs::remove_file(self.path(&o.key))
                .await
                .map_err(|e| StoreError::io("delete", self.url(&o.key), e))?;
        }
        // Tidy the directories the prefix named, if now empty: the empty directories
        // under it first (a load's events/, rejects/, files/), then it and its empty
        // parents up to the root. Only empty directories go; failure is harmless.
        if let Some(dir) = prefix.strip_suffix('/') {
            let mut p = self.path(dir);
            if p.starts_with(&self.root) && p != self.root {
                remove_empty_dirs_under(&p);
            }
            while p.starts_with(&self.root) && p != self.root && std::fs::remove_dir(&p).is_ok() {
                p.pop();
            }
        }
        Ok(objects.len() as u64)
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        for key in keys {
            match tokio::fs::remove_file(self.path(key)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("delete", self.url(key), e)),
            }
        }
        // Tidy the directories that held them, as `delete_prefix` does: each, if now
        // empty, and its empty parents up to the root. Deepest first, each once. (A
        // write racing this into one of them could find its directory gone: callers
        // delete a load's objects once nothing writes there any more.)
        let mut dirs = std::collections::BTreeSet::new();
        for key in keys {
            let mut p = self.path(key);
            while p.pop() && p.starts_with(&self.root) && p != self.root {
                dirs.insert(p.clone());
            }
        }
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    fn url(&self, key: &str) -> String {
        format!("file://{}", self.path(key).display())
    }

    fn key_of(&self, url: &str) -> Option<String> {
        let path = url.strip_prefix("file://")?;
        let rel = Path::new(path).strip_prefix(&self.root).ok()?;
        Some(
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/"),
        )
    }
}
