//! One conformance suite for every `ObjectStore` adapter (the arrow-rs `object_store`
//! `integration.rs` habit): each case below is an async function over one store
//! (`&Arc<dyn ObjectStore>`, as `Place` holds it, so cases can spawn concurrent puts) and
//! a prefix unique to the test, and [`conformance!`] runs every case against both
//! adapters, as `local::<case>` (a temporary directory) and `s3::<case>` (the in-process
//! S3 server from `tests/support`, one server and bucket per test).
//!
//! Known differences between the adapters, asserted where they show:
//!
//! * **ETag form.** S3 gives the object's ETag with the quotes stripped: for a single-part
//!   PUT the lowercase hex MD5 of the bytes (32 characters), so it changes exactly when
//!   the content does. `LocalStore` gives `<size hex>-<mtime nanos hex>`: it changes when
//!   the size changes, or when the mtime does. An overwrite with the *same size* inside
//!   one filesystem timestamp tick keeps the ETag (Linux stamps mtimes from a coarse
//!   clock, a few milliseconds per tick on tmpfs and ext4), so a same-size rewrite of a
//!   local source file within that window is not seen as a new version; see
//!   [`overwrite_changes_etag`]. Rewriting the same bytes does change the local ETag
//!   (new mtime) but not the S3 one.
//! * **URL form.** `s3://<bucket>/<key>` against `file://<root>/<key>` (the path is not
//!   percent-encoded; `key_of` undoes exactly what `url` did).
//! * **Directories.** Local keys are paths, so a key cannot also be a "directory" of
//!   other keys (`a` and `a/b` cannot both exist); S3 allows it. The suite never needs
//!   both. Listing and `get` otherwise behave the same: a key that is only a prefix of
//!   other keys is not an object.

use crate::support;

use std::sync::Arc;

use events_etl::store::local::LocalStore;
use events_etl::store::s3::S3Store;
use events_etl::store::{ObjectMeta, ObjectStore, Place, StoreError};
use tokio::io::AsyncReadExt as _;

/// Which adapter a case runs against, for the documented differences only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adapter {
    Local,
    S3,
}

const BUCKET: &str = "conformance";

/// A store and whatever keeps it alive (its directory or its server).
struct Fixture {
    store: Arc<dyn ObjectStore>,
    adapter: Adapter,
    _dir: Option<tempfile::TempDir>,
    _server: Option<support::S3Server>,
}

impl Fixture {
    async fn local() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("etl-store-")
            .tempdir_in(support::scratch_base())
            .expect("create local store dir");
        // The root is the store, as the bucket is on S3: it exists before use.
        std::fs::create_dir(dir.path().join("root")).expect("create the store's root");
        Fixture {
            store: Arc::new(LocalStore::new(dir.path().join("root"))),
            adapter: Adapter::Local,
            _dir: Some(dir),
            _server: None,
        }
    }

    async fn s3() -> Fixture {
        let server = support::s3().await;
        server.create_bucket(BUCKET).await;
        let client = server.client().await;
        Fixture {
            store: Arc::new(S3Store::with_client(client, BUCKET)),
            adapter: Adapter::S3,
            _dir: None,
            _server: Some(server),
        }
    }
}

/// A prefix no other test uses: `<case>-<8 hex>/`.
fn unique_prefix(case: &str) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("{case}-{}/", &hex[..8])
}

/// Runs every listed case against both adapters: `local::<case>` and `s3::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let f = super::Fixture::local().await;
                    super::$case(&f.store, f.adapter, &super::unique_prefix(stringify!($case))).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let f = super::Fixture::s3().await;
                    super::$case(&f.store, f.adapter, &super::unique_prefix(stringify!($case))).await;
                }
            )*
        }
    };
}

conformance!(
    put_get_round_trips_bytes,
    list_is_sorted_and_scoped_to_the_prefix,
    etag_form,
    overwrite_changes_etag,
    missing_prefix_lists_empty,
    get_missing_is_not_found,
    delete_prefix_removes_exactly_the_prefix,
    delete_removes_exactly_the_keys_named,
    delete_by_name_spans_more_than_one_batch,
    url_and_key_of_round_trip,
    put_leaves_other_keys_alone,
    list_spans_more_than_one_page,
    list_level_gives_objects_and_prefixes_one_level_down,
    listing_by_day_lists_what_a_full_listing_does,
);

// ---- helpers ----

async fn put(store: &Arc<dyn ObjectStore>, key: &str, bytes: impl Into<Vec<u8>>) {
    store
        .put(key, bytes.into())
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

async fn get(store: &Arc<dyn ObjectStore>, key: &str) -> Vec<u8> {
    let mut body = store.get(key).await.unwrap_or_else(|e| panic!("get {key}: {e}"));
    let mut out = Vec::new();
    body.read_to_end(&mut out)
        .await
        .unwrap_or_else(|e| panic!("read {key}: {e}"));
    out
}

async fn list(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<ObjectMeta> {
    store
        .list(prefix)
        .await
        .unwrap_or_else(|e| panic!("list {prefix:?}: {e}"))
}

async fn keys(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    list(store, prefix).await.into_iter().map(|o| o.key).collect()
}

fn meta<'a>(listing: &'a [ObjectMeta], key: &str) -> &'a ObjectMeta {
    listing
        .iter()
        .find(|o| o.key == key)
        .unwrap_or_else(|| panic!("{key} missing from listing {listing:#?}"))
}

/// Deterministic, non-repeating-looking bytes (so an offset mix-up cannot go unnoticed).
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

async fn assert_not_found(store: &Arc<dyn ObjectStore>, key: &str) {
    match store.get(key).await {
        Err(StoreError::NotFound { url }) => {
            assert_eq!(url, store.url(key), "NotFound must name the object's URL");
            let msg = StoreError::NotFound { url: url.clone() }.to_string();
            assert_eq!(msg, format!("object {url} not found"));
        }
        Err(e) => panic!("get {key}: expected NotFound, got {e:?}"),
        Ok(_) => panic!("get {key}: expected NotFound, got a body"),
    }
}

// ---- cases ----

/// Bytes come back exactly: empty, every byte value, and a multi-megabyte object.
async fn put_get_round_trips_bytes(store: &Arc<dyn ObjectStore>, _: Adapter, p: &str) {
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let big = pattern(3 * 1024 * 1024 + 17);
    let cases: [(&str, Vec<u8>); 4] = [
        ("empty", Vec::new()),
        ("bytes.bin", all_bytes),
        ("big.jsonl", big),
        ("nested/deeper/line.jsonl", b"{\"id\":1}\n".to_vec()),
    ];
    for (rel, bytes) in &cases {
        put(store, &format!("{p}{rel}"), bytes.clone()).await;
    }
    for (rel, bytes) in &cases {
        let got = get(store, &format!("{p}{rel}")).await;
        assert_eq!(got.len(), bytes.len(), "{rel}: length");
        assert!(got == *bytes, "{rel}: content differs");
    }
    let listing = list(store, p).await;
    for (rel, bytes) in &cases {
        assert_eq!(
            meta(&listing, &format!("{p}{rel}")).size,
            bytes.len() as u64,
            "{rel}: size"
        );
    }
    assert_eq!(listing.len(), cases.len(), "{listing:#?}");
}

/// Ascending byte order (not directory-walk order), only keys under the prefix, with size
/// and a non-empty ETag. A prefix without `/` matches like a string prefix, as on S3.
async fn list_is_sorted_and_scoped_to_the_prefix(store: &Arc<dyn ObjectStore>, _: Adapter, p: &str) {
    // Put in scrambled order. Byte order: '-' (0x2d) < '.' (0x2e) < '/' (0x2f) < '0'.
    let rels = [
        "a/x/1",
        "ab/1",
        "a/2",
        "a/x-1",
        "a/10",
        "a/x.json",
        "b",
        "a/1",
        "a/x/sub/2",
        "aa",
    ];
    for (i, rel) in rels.iter().enumerate() {
        put(store, &format!("{p}{rel}"), vec![b'x'; i + 1]).await;
    }
    // Siblings of the test's prefix that share its leading characters.
    let bare = p.trim_end_matches('/');
    put(store, &format!("{bare}-sibling/a/1"), "outside").await;
    put(store, &format!("{bare}x/a/1"), "outside too").await;

    let under_a = list(store, &format!("{p}a/")).await;
    let got: Vec<&str> = under_a.iter().map(|o| o.key.strip_prefix(p).unwrap()).collect();
    assert_eq!(
        got,
        ["a/1", "a/10", "a/2", "a/x-1", "a/x.json", "a/x/1", "a/x/sub/2"],
        "{under_a:#?}"
    );
    for o in &under_a {
        let rel = o.key.strip_prefix(p).unwrap();
        let i = rels.iter().position(|r| *r == rel).unwrap();
        assert_eq!(o.size, i as u64 + 1, "size of {}", o.key);
        assert!(!o.etag.is_empty(), "empty etag for {}", o.key);
        assert!(!o.etag.contains('"'), "etag keeps its quotes: {}", o.etag);
    }

    let rel_keys = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .map(|k| k.strip_prefix(p).expect("key outside prefix").to_owned())
            .collect()
    };
    assert_eq!(
        rel_keys(keys(store, &format!("{p}a")).await),
        [
            "a/1",
            "a/10",
            "a/2",
            "a/x-1",
            "a/x.json",
            "a/x/1",
            "a/x/sub/2",
            "aa",
            "ab/1"
        ]
    );
    assert_eq!(
        rel_keys(keys(store, &format!("{p}a/x/")).await),
        ["a/x/1", "a/x/sub/2"]
    );
    assert_eq!(
        rel_keys(keys(store, &format!("{p}a/x")).await),
        ["a/x-1", "a/x.json", "a/x/1", "a/x/sub/2"]
    );
    assert_eq!(rel_keys(keys(store, &format!("{p}ab/")).await), ["ab/1"]);
    assert_eq!(rel_keys(keys(store, &format!("{p}b")).await), ["b"]);
    let everything = keys(store, p).await;
    assert_eq!(everything.len(), rels.len(), "{everything:#?}");
    let mut sorted = everything.clone();
    sorted.sort();
    assert_eq!(everything, sorted);
}

/// The documented ETag forms (see the module docs).
async fn etag_form(store: &Arc<dyn ObjectStore>, adapter: Adapter, p: &str) {
    let key = format!("{p}obj");
    put(store, &key, "hello").await;
    put(store, &format!("{p}empty"), "").await;
    let listing = list(store, p).await;
    match adapter {
        Adapter::S3 => {
            // MD5 of a single-part PUT, as real S3 sends it.
            assert_eq!(meta(&listing, &key).etag, "5d41402abc4b2a76b9719d911017c592");
            assert_eq!(
                meta(&listing, &format!("{p}empty")).etag,
                "d41d8cd98f00b204e9800998ecf8427e"
            );
        }
        Adapter::Local => {
            for (k, size) in [(key.as_str(), 5u64), (&format!("{p}empty"), 0)] {
                let etag = &meta(&listing, k).etag;
                let (size_hex, mtime_hex) = etag
                    .split_once('-')
                    .unwrap_or_else(|| panic!("local etag {etag:?} is not <size>-<mtime>"));
                assert_eq!(u64::from_str_radix(size_hex, 16).unwrap(), size, "{etag}");
                let mtime = u128::from_str_radix(mtime_hex, 16).unwrap();
                assert!(
                    mtime > 1_600_000_000 * 1_000_000_000,
                    "mtime nanos {mtime} in {etag}"
                );
            }
        }
    }
}

/// A new version of a key gets a new ETag (what `discover` relies on to reload a file).
async fn overwrite_changes_etag(store: &Arc<dyn ObjectStore>, adapter: Adapter, p: &str) {
    let key = format!("{p}versioned.jsonl");
    let etag = |listing: Vec<ObjectMeta>| {
        assert_eq!(listing.len(), 1, "{listing:#?}");
        listing[0].etag.clone()
    };
    put(store, &key, "version one\n").await;
    let v1 = etag(list(store, p).await);

    // Different size: both adapters see it, immediately.
    put(store, &key, "version two, longer\n").await;
    let v2 = etag(list(store, p).await);
    assert_ne!(v1, v2, "a different-size overwrite must change the etag");
    assert_eq!(get(store, &key).await, b"version two, longer\n");

    // Same size, different bytes.
    put(store, &key, "VERSION TWO, LONGER\n").await;
    let v3 = etag(list(store, p).await);
    assert_eq!(get(store, &key).await, b"VERSION TWO, LONGER\n");
    match adapter {
        Adapter::S3 => {
            assert_ne!(v2, v3, "S3: new content, new etag");
            // Same bytes again: same content hash.
            put(store, &key, "VERSION TWO, LONGER\n").await;
            assert_eq!(etag(list(store, p).await), v3, "S3: same content, same etag");
        }
        Adapter::Local => {
            // Only the mtime can differ, and it moves in coarse ticks: v3 may equal v2 when
            // both writes fell in one tick (documented difference). Once the clock has
            // moved on, a same-size rewrite is a new version.
            // Rewrite until the clock has ticked (bounded): waiting for the event, not a
            // guessed interval.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let v4 = loop {
                put(store, &key, "version two, LONGER\n").await;
                let v4 = etag(list(store, p).await);
                if v4 != v3 || std::time::Instant::now() > deadline {
                    break v4;
                }
                tokio::task::yield_now().await;
            };
            assert_ne!(
                v3, v4,
                "local: a same-size overwrite once the clock has moved must change the etag"
            );
            assert_eq!(v4.split_once('-').map(|(s, _)| s), Some("14"), "size 20 in {v4}");
        }
    }
}

/// A prefix with nothing under it is an empty listing, not an error, however deep.
async fn missing_prefix_lists_empty(store: &Arc<dyn ObjectStore>, _: Adapter, p: &str) {
    assert_eq!(list(store, p).await, []);
    assert_eq!(list(store, &format!("{p}no/such/deep/prefix/")).await, []);
    put(store, &format!("{p}file"), "x").await;
    // Under an object's key, as if it were a directory: still nothing.
    assert_eq!(list(store, &format!("{p}file/")).await, []);
    assert_eq!(list(store, &format!("{p}filex")).await, []);
    assert_eq!(store.delete_prefix(&format!("{p}nothing/")).await.unwrap(), 0);
}

/// A missing key is `NotFound` naming the URL; so is a key that is only a prefix.
async fn get_missing_is_not_found(store: &Arc<dyn ObjectStore>, adapter: Adapter, p: &str) {
    assert_not_found(store, &format!("{p}missing.jsonl")).await;
    assert_not_found(store, &format!("{p}no/such/dir/missing.jsonl")).await;
    put(store, &format!("{p}dir/object"), "x").await;
    assert_not_found(store, &format!("{p}dir/obj")).await;
    // A key that is only a prefix of other keys (a directory, for the local store). Real
    // S3 answers NoSuchKey; the s3s-fs test server answers InternalError (it opens the
    // directory), so this runs against the local store only.
    if adapter == Adapter::Local {
        assert_not_found(store, &format!("{p}dir")).await;
    }
}

/// Deletes exactly the objects under the prefix, counts them, and leaves the rest.
async fn delete_prefix_removes_exactly_the_prefix(store: &Arc<dyn ObjectStore>, _: Adapter, p: &str) {
    for rel in ["del/1", "del/sub/2", "del/sub/deeper/3", "delx/4", "de/5", "keep"] {
        put(store, &format!("{p}{rel}"), rel).await;
    }
    assert_eq!(store.delete_prefix(&format!("{p}del/")).await.unwrap(), 3);
    assert_eq!(
        keys(store, p).await,
        [format!("{p}de/5"), format!("{p}delx/4"), format!("{p}keep")]
    );
    assert_not_found(store, &format!("{p}del/1")).await;
    assert_eq!(get(store, &format!("{p}delx/4")).await, b"delx/4");
    // Again: nothing left to delete.
    assert_eq!(store.delete_prefix(&format!("{p}del/")).await.unwrap(), 0);
    // The prefix can be written to again afterwards (local: its directory was tidied).
    put(store, &format!("{p}del/again"), "again").await;
    assert_eq!(get(store, &format!("{p}del/again")).await, b"again");
    assert_eq!(store.delete_prefix(p).await.unwrap(), 4);
    assert_eq!(list(store, p).await, []);
}

/// Deletes exactly the keys named, not the keys they are a prefix of; a key with no
/// object, or no key at all, is not an error.
async fn delete_removes_exactly_the_keys_named(store: &Arc<dyn ObjectStore>, _: Adapter, p: &str) {
    for rel in [
        "L/events/part-1",
        "L/events/part-10",
        "L/events.manifest",
        "L/x/y/z",
        "M/keep",
    ] {
        put(store, &format!("{p}{rel}"), rel).await;
    }
    let named = |rels: &[&str]| rels.iter().map(|r| format!("{p}{r}")).collect::<Vec<_>>();
    store
        .delete(&named(&[
            "L/events/part-1",
            "L/events.manifest",
            "L/x/y/z",
            "L/never-written",
        ]))
        .await
        .expect("delete");
    assert_eq!(keys(store, p).await, named(&["L/events/part-10", "M/keep"]));
    assert_not_found(store, &format!("{p}L/events/part-1")).await;
    // Again, and with nothing named: nothing to do, no error.
    store
        .delete(&named(&["L/events/part-1"]))
        .await
        .expect("delete again");
    store.delete(&[]).await.expect("delete nothing");
    // The directories emptied can be written to again (local: they were tidied).
    put(store, &format!("{p}L/x/y/z"), "again").await;
    assert_eq!(get(store, &format!("{p}L/x/y/z")).await, b"again");
    store
        .delete(&named(&["L/events/part-10", "L/x/y/z", "M/keep"]))
        .await
        .expect("delete the rest");
    assert_eq!(list(store, p).await, []);
}

/// More keys than one DeleteObjects call takes (1,000): all deleted by name, the rest
/// kept.
async fn delete_by_name_spans_more_than_one_batch(store: &Arc<dyn ObjectStore>, _: Adapter, p: &str) {
    const N: usize = 1003;
    const PARALLEL: usize = 16;
    let named: Vec<String> = (0..N).map(|i| format!("{p}L/{i:05}.part")).collect();
    let mut set: tokio::task::JoinSet<Result<(), StoreError>> = tokio::task::JoinSet::new();
    for key in named.iter().chain([&format!("{p}L/keep")]) {
        while set.len() >= PARALLEL {
            set.join_next().await.unwrap().expect("put task").expect("put");
        }
        let store = Arc::clone(store);
        let key = key.clone();
        set.spawn(async move { store.put(&key, b"x".to_vec()).await });
    }
    while let Some(r) = set.join_next().await {
        r.expect("put task").expect("put");
    }
    store.delete(&named).await.expect("delete");
    assert_eq!(keys(store, p).await, [format!("{p}L/keep")]);
}

/// `key_of(url(k)) == k`, and URLs of other stores are refused.
async fn url_and_key_of_round_trip(store: &Arc<dyn ObjectStore>, adapter: Adapter, p: &str) {
    for key in [
        format!("{p}a"),
        format!("{p}x/y/part-00001.jsonl.gz"),
        format!("{p}with space/and=equals"),
    ] {
        let url = store.url(&key);
        assert_eq!(store.key_of(&url).as_deref(), Some(key.as_str()), "url {url}");
        // The URL names a real object once written.
        put(store, &key, "x").await;
        assert_eq!(get(store, &key).await, b"x");
    }

    let url = store.url(&format!("{p}k"));
    let foreign: Vec<String> = match adapter {
        Adapter::S3 => {
            assert_eq!(url, format!("s3://{BUCKET}/{p}k"));
            vec![
                format!("s3://other-bucket/{p}k"),
                format!("s3://{BUCKET}x/{p}k"),
                format!("s3://{BUCKET}"),
                format!("S3://{BUCKET}/{p}k"),
                format!("https://{BUCKET}.s3.amazonaws.com/{p}k"),
                format!("file:///{BUCKET}/{p}k"),
            ]
        }
        Adapter::Local => {
            let path = url.strip_prefix("file://").expect("file:// URL");
            let root = path
                .strip_suffix(&format!("/{p}k"))
                .expect("url ends with /<key>");
            assert!(root.starts_with('/'), "absolute root in {url}");
            vec![
                format!("file://{root}x/{p}k"),
                format!("file:///elsewhere/{p}k"),
                format!("s3://bucket/{p}k"),
                format!("{root}/{p}k"),
            ]
        }
    };
    for url in foreign {
        assert_eq!(
            store.key_of(&url),
            None,
            "key_of({url:?}) must refuse a foreign URL"
        );
    }
    assert_eq!(store.key_of(""), None);
}

/// Writing one key never touches another, even one whose name a local temporary file
/// might take, and concurrent writes to sibling keys do not interfere.
async fn put_leaves_other_keys_alone(store: &Arc<dyn ObjectStore>, _: Adapter, p: &str) {
    put(store, &format!("{p}k.partial"), "keep me").await;
    put(store, &format!("{p}k"), "new").await;
    assert_eq!(get(store, &format!("{p}k.partial")).await, b"keep me");
    assert_eq!(get(store, &format!("{p}k")).await, b"new");

    // Keys that differ only in their last extension, written at the same time.
    let names = ["events.jsonl", "events.manifest", "events.gz", "events"];
    for round in 0..20 {
        let mut set = tokio::task::JoinSet::new();
        for name in names {
            let key = format!("{p}c/{name}");
            let bytes = format!("{name} round {round}").into_bytes();
            let store = Arc::clone(store);
            set.spawn(async move { store.put(&key, bytes).await.map_err(|e| format!("{key}: {e}")) });
        }
        while let Some(r) = set.join_next().await {
            r.expect("put task")
                .unwrap_or_else(|e| panic!("round {round}: put {e}"));
        }
        for name in names {
            let got = get(store, &format!("{p}c/{name}")).await;
            assert_eq!(String::from_utf8_lossy(&got), format!("{name} round {round}"));
        }
    }
    let mut expected: Vec<String> = names.iter().map(|n| format!("{p}c/{n}")).collect();
    expected.sort();
    assert_eq!(
        keys(store, &format!("{p}c/")).await,
        expected,
        "no temporary files left"
    );
}

/// More keys than one S3 listing page (1,000): all listed, in order; deleted in chunks.
async fn list_spans_more_than_one_page(store: &Arc<dyn ObjectStore>, adapter: Adapter, p: &str) {
    const N: usize = 1005;
    const PARALLEL: usize = 16;
    let expected: Vec<String> = (0..N).map(|i| format!("{p}many/{i:05}.jsonl")).collect();
    let mut set: tokio::task::JoinSet<Result<(), StoreError>> = tokio::task::JoinSet::new();
    for key in expected.iter().rev() {
        while set.len() >= PARALLEL {
            set.join_next().await.unwrap().expect("put task").expect("put");
        }
        let store = Arc::clone(store);
        let key = key.clone();
        set.spawn(async move { store.put(&key, key.as_bytes().to_vec()).await });
    }
    while let Some(r) = set.join_next().await {
        r.expect("put task").expect("put");
    }
    put(store, &format!("{p}other"), "not under many/").await;

    let listing = list(store, &format!("{p}many/")).await;
    assert_eq!(listing.len(), N);
    let got: Vec<&String> = listing.iter().map(|o| &o.key).collect();
    assert!(
        got.iter().zip(&expected).all(|(a, b)| *a == b),
        "keys out of order or wrong"
    );
    for o in &listing {
        assert_eq!(o.size, o.key.len() as u64, "size of {}", o.key);
        assert!(!o.etag.is_empty(), "empty etag for {}", o.key);
    }
    // Pages hold 1,000 keys: the first page says it is not the whole listing, and
    // listing by day then walks the levels. (S3's page holds the first 1,000 keys; the
    // local store's holds none, since the walk lists them again.)
    let (page, complete) = store
        .list_first_page(&format!("{p}many/"))
        .await
        .expect("first page");
    assert!(!complete, "{} keys", page.len());
    assert_eq!(page[..], listing[..page.len()]);
    assert_eq!(page.len(), if adapter == Adapter::Local { 0 } else { 1000 });
    let by_day = events_etl::discover::list_by_day(store.as_ref(), &format!("{p}many/"), 4)
        .await
        .expect("list by day");
    assert_eq!(by_day, listing);
    // DeleteObjects takes 1,000 keys a call: this needs two.
    assert_eq!(store.delete_prefix(&format!("{p}many/")).await.unwrap(), N as u64);
    assert_eq!(keys(store, p).await, [format!("{p}other")]);
}

/// Keys in the `YYYY/MM/DD/` layout and around it: at each level, under prefixes that
/// are not a year, month or day, and below a day.
const PARTITIONED: [&str; 10] = [
    "top.json",
    "2020/x.json",
    "2020/01/y.json",
    "2020/01/13/a.json",
    "2020/01/13/deeper/d.json",
    "2020/01/14/b.json",
    "2020/02/01/c.json",
    "2020/1/13/short-month.json",
    "20201/01/01/long-year.json",
    "misc/deep/z.json",
];

async fn put_partitioned(store: &Arc<dyn ObjectStore>, p: &str) {
    for k in PARTITIONED {
        put(store, &format!("{p}{k}"), k).await;
    }
}

async fn list_level_gives_objects_and_prefixes_one_level_down(
    store: &Arc<dyn ObjectStore>,
    _: Adapter,
    p: &str,
) {
    put_partitioned(store, p).await;
    let level = store.list_level(p).await.expect("list level");
    let objects: Vec<&str> = level.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(objects, [format!("{p}top.json")]);
    assert_eq!(
        level.prefixes,
        [format!("{p}2020/"), format!("{p}20201/"), format!("{p}misc/")]
    );
    let year = store.list_level(&format!("{p}2020/")).await.expect("list level");
    let objects: Vec<&str> = year.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(objects, [format!("{p}2020/x.json")]);
    assert_eq!(
        year.prefixes,
        [
            format!("{p}2020/01/"),
            format!("{p}2020/02/"),
            format!("{p}2020/1/")
        ]
    );
    // The same as a full listing's level, metadata included.
    let full = events_etl::store::Level::of(&format!("{p}2020/"), list(store, &format!("{p}2020/")).await);
    assert_eq!(year, full);
    let missing = store
        .list_level(&format!("{p}nothing/"))
        .await
        .expect("list level");
    assert_eq!(missing, Default::default());
}

async fn listing_by_day_lists_what_a_full_listing_does(store: &Arc<dyn ObjectStore>, _: Adapter, p: &str) {
    put_partitioned(store, p).await;
    put(store, &format!("{p}2020/01/15/e.json"), "e").await;
    let full = list(store, p).await;
    assert_eq!(full.len(), PARTITIONED.len() + 1);
    for concurrency in [1, 3] {
        let walked = events_etl::discover::walk_days(store.as_ref(), p, concurrency)
            .await
            .expect("walk the days");
        assert_eq!(walked, full, "concurrency {concurrency}");
    }
    // Listed in one page, so without the walk.
    let by_day = events_etl::discover::list_by_day(store.as_ref(), p, 3)
        .await
        .expect("list by day");
    assert_eq!(by_day, full);
    let (page, complete) = store.list_first_page(p).await.expect("first page");
    assert!(complete);
    assert_eq!(page, full);
}

// ---- a store that does not exist ----

/// Listing a directory that does not exist is an error naming it, as listing a bucket
/// that does not exist is on S3: a typo in `source.url` must not read as "nothing to
/// load".
#[tokio::test]
async fn local_listing_a_missing_root_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("no/such/dir");
    let store = LocalStore::new(root.clone());
    let e = store.list("").await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, StoreError::Io { op: "list", .. }), "{e:?}");
    assert!(
        msg.contains(&format!("the directory {} does not exist", root.display())),
        "{msg}"
    );
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let e = LocalStore::new(dir.path().join("file"))
        .list("")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is not a directory"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_listing_a_missing_bucket_is_an_error_naming_it() {
    let server = support::s3().await;
    let store = S3Store::with_client(server.client().await, "no-such-bucket");
    let e = store.list("events/").await.unwrap_err();
    assert!(matches!(e, StoreError::Io { op: "list", .. }), "{e:?}");
    assert!(e.to_string().contains("s3://no-such-bucket/events/"), "{e}");
}

/// Deleting a prefix leaves no empty directories behind under it (a local load's
/// `<load_id>/events/`, `rejects/`, `files/`), and keeps the root.
#[tokio::test]
async fn local_delete_prefix_leaves_no_empty_directories() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("staging");
    std::fs::create_dir(&root).unwrap();
    let store = LocalStore::new(root.clone());
    for key in [
        "L/events/part-00000.jsonl.gz",
        "L/rejects/part-00000.jsonl.gz",
        "L/files/x/y/part",
        "L/events.manifest",
        "M/keep",
    ] {
        store.put(key, b"x".to_vec()).await.unwrap();
    }
    std::fs::create_dir_all(root.join("L/empty/deeper")).unwrap();
    assert_eq!(store.delete_prefix("L/").await.unwrap(), 4);
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["M"], "{left:?}");
}

/// Deleting a load's objects by name leaves no empty directories behind (a local
/// load's `<load_id>/events/`, `rejects/`, `files/`), and keeps the root and other
/// loads' directories.
#[tokio::test]
async fn local_delete_leaves_no_empty_directories() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("staging");
    std::fs::create_dir(&root).unwrap();
    let store = LocalStore::new(root.clone());
    let load: Vec<String> = [
        "L/events/part-00000.jsonl.gz",
        "L/rejects/part-00000.jsonl.gz",
        "L/files/part-00000.jsonl.gz",
        "L/events.manifest",
    ]
    .map(String::from)
    .to_vec();
    for key in load.iter().chain([&"M/keep".to_owned()]) {
        store.put(key, b"x".to_vec()).await.unwrap();
    }
    store.delete(&load).await.unwrap();
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["M"], "{left:?}");
}

// ---- unit level ----

#[test]
fn place_key_joins_prefix_and_relative_key() {
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new("/nowhere".into()));
    let place = Place {
        store: store.clone(),
        prefix: "events/2024/".to_owned(),
    };
    assert_eq!(place.key("a/b.jsonl"), "events/2024/a/b.jsonl");
    assert_eq!(place.key(""), "events/2024/");
    let root = Place {
        store,
        prefix: String::new(),
    };
    assert_eq!(root.key("a/b.jsonl"), "a/b.jsonl");
}

#[tokio::test]
async fn place_open_local_has_empty_prefix_and_the_root() {
    let location = events_etl::config::Location::Local {
        root: "/data/events".into(),
    };
    let place = Place::open(&location, &events_etl::store::s3::S3Factory::new(false)).await;
    assert_eq!(place.prefix, "");
    assert_eq!(place.key("x/y"), "x/y");
    assert_eq!(place.store.url(&place.key("x/y")), "file:///data/events/x/y");
}
