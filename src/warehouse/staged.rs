//! Reading a staged load back (the PostgreSQL adapter's COPY): a manifest, then its
//! parts in order, with the next parts' GETs already in flight while one is copied, so
//! a load pays the store's first-byte latency about once per table, not once per part.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::WarehouseError;
use crate::stage::Manifest;
use crate::store::{Body, ObjectStore, StoreError};

/// Parts opened ahead of the one being read. Each is an open response whose body is
/// not read yet: memory is the transport's buffers, not the parts.
pub const PARTS_AHEAD: usize = 4;

/// A manifest's parts, opened in order, [`PARTS_AHEAD`] at a time.
pub struct Parts {
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
    pub async fn next(&mut self) -> Option<Result<(String, Body), WarehouseError>> {
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

/// Reads the manifest at `key` and starts opening its parts.
pub async fn open(store: &Arc<dyn ObjectStore>, key: &str) -> Result<(Manifest, Parts), WarehouseError> {
    let url = store.url(key);
    let mut body = store.get(key).await?;
    let mut text = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut body, &mut text)
        .await
        .map_err(|e| WarehouseError::StagedData {
            url: url.clone(),
            message: e.to_string(),
        })?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| WarehouseError::StagedData {
        url: url.clone(),
        message: format!("not a COPY manifest: {e}"),
    })?;
    let mut waiting = VecDeque::new();
    for entry in &manifest.entries {
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
    Ok((manifest, parts))
}
