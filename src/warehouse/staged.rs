//! Reading a staged load back (the PostgreSQL adapter's COPY): a manifest and its parts
//! in order, with the next parts' GETs already in flight while one is copied, so a load
//! pays the store's first-byte latency about once per table, not once per part.
//!
//! The load knows what it staged ([`StagedLoad`](crate::stage::StagedLoad)), so the
//! first parts are opened while the manifest is read, not after: one round trip, not
//! two. The manifest is still read and must list exactly those parts, in that order,
//! with those sizes, as Redshift's COPY would read it; any other manifest is an error
//! naming it, and nothing is copied.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::WarehouseError;
use crate::stage::Manifest;
use crate::store::{Body, ObjectStore, StoreError};

/// Parts opened ahead of the one being read. Each is an open response whose body is
/// not read yet: memory is the transport's buffers, not the parts.
pub(crate) const PARTS_AHEAD: usize = 4;

/// A manifest's parts, opened in order, [`PARTS_AHEAD`] at a time.
pub(crate) struct Parts {
    store: Arc<dyn ObjectStore>,
    /// `(url, key)` of the parts not yet opened.
    waiting: VecDeque<(String, String)>,
    opened: VecDeque<(String, JoinHandle<Result<Body, StoreError>>)>,
}

impl Parts {
    fn open_next(&mut self) {
        if let Some((url, key)) = self.waiting.pop_front() {
            let store = self.store.clone();
            self.opened
                .push_back((url, tokio::spawn(async move { store.get(&key).await })));
        }
    }

    /// The next part's URL and body, in manifest order.
    pub(crate) async fn next(&mut self) -> Option<Result<(String, Body), WarehouseError>> {
        let (url, handle) = self.opened.pop_front()?;
        self.open_next();
        Some(match handle.await {
            Ok(Ok(body)) => Ok((url, body)),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(WarehouseError::StagedData {
                url,
                message: format!("reading task failed: {e}"),
            }),
        })
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        for (_, h) in &self.opened {
            h.abort();
        }
    }
}

/// Reads the manifest at `key`, which this load wrote listing `expected`, and opens its
/// parts: the first [`PARTS_AHEAD`] while the manifest is still being read. The
/// manifest read must equal `expected`; if not, the error names it and the parts
/// opened are dropped unread.
pub(crate) async fn open(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    expected: &Manifest,
) -> Result<(Manifest, Parts), WarehouseError> {
    let url = store.url(key);
    let mut waiting = VecDeque::new();
    for entry in &expected.entries {
        let part_key = store
            .key_of(&entry.url)
            .ok_or_else(|| WarehouseError::StagedData {
                url: entry.url.clone(),
                message: format!("listed in {url} but not in the staging location"),
            })?;
        waiting.push_back((entry.url.clone(), part_key));
    }
    let mut parts = Parts {
        store: store.clone(),
        waiting,
        opened: VecDeque::new(),
    };
    for _ in 0..PARTS_AHEAD {
        parts.open_next();
    }
    let manifest = read_manifest(store, key).await?;
    if manifest != *expected {
        return Err(WarehouseError::StagedData {
            url,
            message: format!(
                "the manifest is not the one this load wrote ({}): staging was changed \
                 under the load; nothing was loaded, rerun",
                difference(&manifest, expected)
            ),
        });
    }
    Ok((manifest, parts))
}

/// Reads and parses the manifest at `key`.
async fn read_manifest(store: &Arc<dyn ObjectStore>, key: &str) -> Result<Manifest, WarehouseError> {
    let url = store.url(key);
    let mut body = store.get(key).await?;
    let mut text = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut body, &mut text)
        .await
        .map_err(|e| WarehouseError::StagedData {
            url: url.clone(),
            message: e.to_string(),
        })?;
    serde_json::from_slice(&text).map_err(|e| WarehouseError::StagedData {
        url,
        message: format!("not a COPY manifest: {e}"),
    })
}

/// Where a manifest read differs from what the load wrote, for the error message: the
/// counts, and the first entry that differs.
fn difference(found: &Manifest, expected: &Manifest) -> String {
    let entry = |e: Option<&crate::stage::part::ManifestEntry>| match e {
        None => "nothing".to_owned(),
        Some(e) if e.mandatory => format!("{} ({} bytes)", e.url, e.meta.content_length),
        Some(e) => format!("{} ({} bytes, not mandatory)", e.url, e.meta.content_length),
    };
    let n = found.entries.len().max(expected.entries.len());
    let first = (0..n)
        .find(|&i| found.entries.get(i) != expected.entries.get(i))
        .map(|i| {
            format!(
                "; entry {} is {}, the load wrote {}",
                i + 1,
                entry(found.entries.get(i)),
                entry(expected.entries.get(i))
            )
        })
        .unwrap_or_default();
    format!(
        "it lists {} parts, the load wrote {}{first}",
        found.entries.len(),
        expected.entries.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    /// A store holding `events.manifest` that lists two parts, and the manifest.
    async fn staged_two_parts(dir: &std::path::Path) -> (Arc<dyn ObjectStore>, Manifest) {
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.to_path_buf()));
        let mut m = Manifest::default();
        for (key, bytes) in [("L/events/p0", "zero"), ("L/events/p1", "one")] {
            store.put(key, bytes.as_bytes().to_vec()).await.unwrap();
            m.push(store.url(key), bytes.len() as u64);
        }
        store.put("L/events.manifest", m.to_json()).await.unwrap();
        (store, m)
    }

    async fn read_all(mut body: Body) -> String {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut body, &mut text)
            .await
            .unwrap();
        text
    }

    /// The manifest the load wrote: its parts come back in order.
    #[tokio::test]
    async fn the_manifest_the_load_wrote_opens_its_parts_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (store, m) = staged_two_parts(dir.path()).await;
        let (read, mut parts) = open(&store, "L/events.manifest", &m).await.unwrap();
        assert_eq!(read, m);
        let mut got = Vec::new();
        while let Some(next) = parts.next().await {
            let (url, body) = next.unwrap();
            got.push((url, read_all(body).await));
        }
        assert_eq!(
            got,
            [
                (store.url("L/events/p0"), "zero".to_owned()),
                (store.url("L/events/p1"), "one".to_owned())
            ]
        );
    }

    /// A manifest on the store that is not the one the load wrote (a part more or less,
    /// another size, another order) is an error naming the manifest and the first
    /// difference, whatever the parts opened meanwhile.
    #[tokio::test]
    async fn a_manifest_other_than_the_one_written_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, written) = staged_two_parts(dir.path()).await;
        let manifest_url = store.url("L/events.manifest");
        let p0 = store.url("L/events/p0");
        let p1 = store.url("L/events/p1");
        let mut fewer = written.clone();
        fewer.entries.pop();
        let mut more = written.clone();
        more.push(store.url("L/events/p2"), 3);
        let mut resized = written.clone();
        resized.entries[1].meta.content_length = 4;
        let mut reordered = written.clone();
        reordered.entries.swap(0, 1);
        let mut optional = written.clone();
        optional.entries[0].mandatory = false;
        for (expected, says) in [
            (
                &fewer,
                format!(
                    "it lists 2 parts, the load wrote 1; entry 2 is {p1} (3 bytes), the load wrote nothing"
                ),
            ),
            (
                &more,
                format!(
                    "it lists 2 parts, the load wrote 3; entry 3 is nothing, the load wrote {}",
                    store.url("L/events/p2")
                ),
            ),
            (
                &resized,
                format!("entry 2 is {p1} (3 bytes), the load wrote {p1} (4 bytes)"),
            ),
            (
                &reordered,
                format!("entry 1 is {p0} (4 bytes), the load wrote {p1} (3 bytes)"),
            ),
            (
                &optional,
                format!("entry 1 is {p0} (4 bytes), the load wrote {p0} (4 bytes, not mandatory)"),
            ),
        ] {
            let Err(e) = open(&store, "L/events.manifest", expected).await else {
                panic!("{says}: must fail");
            };
            match &e {
                WarehouseError::StagedData { url, message } => {
                    assert_eq!(url, &manifest_url);
                    assert!(message.contains(&says), "{message}\nwant: {says}");
                }
                other => panic!("{other:?}"),
            }
            assert!(e.to_string().contains(&manifest_url), "{e}");
        }
    }

    /// A missing manifest fails naming it, even though its parts were opened already.
    #[tokio::test]
    async fn a_missing_manifest_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, written) = staged_two_parts(dir.path()).await;
        let Err(e) = open(&store, "L/rejects.manifest", &written).await else {
            panic!("must fail");
        };
        assert!(e.to_string().contains(&store.url("L/rejects.manifest")), "{e}");
    }
}
