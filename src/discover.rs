//! Step 1, discover: list the source prefix (by date partition, concurrently), keep
//! event files, drop versions the control table already holds.

use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt as _, TryStreamExt as _};

use crate::store::{ObjectMeta, ObjectStore, StoreError};

/// Event-log extensions, each optionally followed by `.gz`.
const EXTENSIONS: [&str; 3] = [".json", ".jsonl", ".ndjson"];

/// Whether a key names an event log. Other keys are ignored and never recorded.
pub fn is_event_file(key: &str) -> bool {
    let k = key.strip_suffix(".gz").unwrap_or(key);
    EXTENSIONS
        .iter()
        .any(|ext| k.ends_with(ext) && k.len() > ext.len() && !k.ends_with(&format!("/{ext}")))
}

/// The listing prefixes of the date partitions `from..=to` under `prefix`
/// (`<prefix>YYYY/MM/DD/`), so that a date range lists only those days.
pub fn day_prefixes(prefix: &str, from: chrono::NaiveDate, to: chrono::NaiveDate) -> Vec<String> {
    from.iter_days()
        .take_while(|d| *d <= to)
        .map(|d| format!("{prefix}{}/", d.format("%Y/%m/%d")))
        .collect()
}

/// The key range `[low, high)` of the date partitions `from..=to` under `prefix`: every
/// key of those days sorts (bytewise, as S3 and Redshift compare) within it, and no
/// other day's key does.
pub fn day_range(prefix: &str, from: chrono::NaiveDate, to: chrono::NaiveDate) -> (String, String) {
    let after = to.succ_opt().unwrap_or(to);
    (
        format!("{prefix}{}/", from.format("%Y/%m/%d")),
        format!("{prefix}{}/", after.format("%Y/%m/%d")),
    )
}

/// The key range `[prefix, end)` of every key under `prefix`: `end` is the prefix with
/// its last character raised by one (bytewise order), or above any key when `prefix` is
/// empty.
pub fn prefix_range(prefix: &str) -> (String, String) {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return (prefix.to_owned(), chars.into_iter().collect());
        }
    }
    (prefix.to_owned(), char::MAX.to_string())
}

/// A stream of listings that together hold every object under a prefix once: what one
/// pass over the source yields, one segment at a time, so that a caller holds the
/// segments it is working on, never the whole source.
pub type Segments<'a> = BoxStream<'a, Result<Vec<ObjectMeta>, StoreError>>;

/// Every object under `prefix` (empty or ending in `/`), as [`Segments`], listed by date
/// partition: one delimiter listing per level finds the `YYYY/`, `MM/` and `DD/`
/// prefixes, then the days are listed `concurrency` at a time, each day one segment. A
/// sequential listing of a 28-day window is thousands of pages one after the other; this
/// is the few levels plus the largest day, and at most `concurrency` days' listings are
/// held at once. Objects outside the layout (at a level, or under a prefix that is not a
/// year, month or day) are listed too, once each. A source whose listing fits in one
/// page is listed in that one request, one segment. Segments come in no particular key
/// order.
pub fn segments<'a>(store: &'a dyn ObjectStore, prefix: &'a str, concurrency: usize) -> Segments<'a> {
    stream::once(async move {
        let (first, complete) = store.list_first_page(prefix).await?;
        if complete {
            return Ok(stream::iter([Ok(first)]).boxed());
        }
        let (loose, prefixes) = walk_levels(store, prefix, concurrency).await?;
        Ok(stream::iter([Ok(loose)])
            .chain(each(store, prefixes, concurrency))
            .boxed())
    })
    .try_flatten()
    .boxed()
}

/// The listing of each of `prefixes` as a segment, `concurrency` at a time, in the order
/// of the prefixes.
pub fn each<'a>(store: &'a dyn ObjectStore, prefixes: Vec<String>, concurrency: usize) -> Segments<'a> {
    stream::iter(prefixes)
        .map(move |p| async move { store.list(&p).await })
        .buffered(concurrency.max(1))
        .boxed()
}

/// The level walk of [`segments`]: the objects found at the levels, and the prefixes to
/// list whole (the days, then the prefixes outside the layout).
async fn walk_levels(
    store: &dyn ObjectStore,
    prefix: &str,
    concurrency: usize,
) -> Result<(Vec<ObjectMeta>, Vec<String>), StoreError> {
    let mut loose = Vec::new();
    let mut whole = Vec::new();
    let mut level = vec![prefix.to_owned()];
    for digits in [4, 2, 2] {
        let levels: Vec<(String, crate::store::Level)> = stream::iter(level)
            .map(|p| async move { store.list_level(&p).await.map(|l| (p, l)) })
            .buffered(concurrency.max(1))
            .try_collect()
            .await?;
        level = Vec::new();
        for (parent, l) in levels {
            loose.extend(l.objects);
            for sub in l.prefixes {
                let name = sub[parent.len()..].trim_end_matches('/');
                if name.len() == digits && name.bytes().all(|b| b.is_ascii_digit()) {
                    level.push(sub);
                } else {
                    whole.push(sub);
                }
            }
        }
    }
    level.extend(whole);
    Ok((loose, level))
}

/// Every object under `prefix`, in key order: [`segments`], collected. For callers that
/// need the whole listing at once (tests, benchmarks); a run works segment by segment.
pub async fn list_by_day(
    store: &dyn ObjectStore,
    prefix: &str,
    concurrency: usize,
) -> Result<Vec<ObjectMeta>, StoreError> {
    collect_sorted(segments(store, prefix, concurrency)).await
}

/// [`list_by_day`] without the one-page shortcut: always the level walk.
pub async fn walk_days(
    store: &dyn ObjectStore,
    prefix: &str,
    concurrency: usize,
) -> Result<Vec<ObjectMeta>, StoreError> {
    let (loose, prefixes) = walk_levels(store, prefix, concurrency).await?;
    let rest = collect_sorted(each(store, prefixes, concurrency)).await?;
    let mut out = loose;
    out.extend(rest);
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

async fn collect_sorted(segments: Segments<'_>) -> Result<Vec<ObjectMeta>, StoreError> {
    let lists: Vec<Vec<ObjectMeta>> = segments.try_collect().await?;
    let mut out: Vec<ObjectMeta> = lists.into_iter().flatten().collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Every object under each of `prefixes`, listed `concurrency` at a time, in the order
/// of the prefixes.
pub async fn list_each(
    store: &dyn ObjectStore,
    prefixes: Vec<String>,
    concurrency: usize,
) -> Result<Vec<ObjectMeta>, StoreError> {
    let lists: Vec<Vec<ObjectMeta>> = each(store, prefixes, concurrency).try_collect().await?;
    Ok(lists.into_iter().flatten().collect())
}

/// Pending file versions, held compactly: their keys and ETags in one string, and per
/// version its offsets, size, time and storage class (about 56 bytes plus the text,
/// where an [`ObjectMeta`] costs about 80 plus two allocations). A run holds its pending
/// versions from discovery to the end; loads take them a few thousand at a time, as
/// [`ObjectMeta`]s again.
#[derive(Debug, Default, Clone)]
pub struct Pending {
    text: String,
    items: Vec<Item>,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    start: usize,
    key_len: usize,
    etag_len: usize,
    size: u64,
    last_modified: Option<chrono::DateTime<chrono::Utc>>,
    archived: bool,
}

impl Item {
    fn key<'t>(&self, text: &'t str) -> &'t str {
        &text[self.start..self.start + self.key_len]
    }

    fn etag<'t>(&self, text: &'t str) -> &'t str {
        let from = self.start + self.key_len;
        &text[from..from + self.etag_len]
    }
}

impl Pending {
    /// Adds a version.
    pub fn push(&mut self, o: ObjectMeta) {
        let start = self.text.len();
        self.text.push_str(&o.key);
        self.text.push_str(&o.etag);
        self.items.push(Item {
            start,
            key_len: o.key.len(),
            etag_len: o.etag.len(),
            size: o.size,
            last_modified: o.last_modified,
            archived: o.archived,
        });
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn key(&self, i: usize) -> &str {
        self.items[i].key(&self.text)
    }

    pub fn etag(&self, i: usize) -> &str {
        self.items[i].etag(&self.text)
    }

    pub fn size(&self, i: usize) -> u64 {
        self.items[i].size
    }

    pub fn last_modified(&self, i: usize) -> Option<chrono::DateTime<chrono::Utc>> {
        self.items[i].last_modified
    }

    /// Version `i` as an [`ObjectMeta`].
    pub fn get(&self, i: usize) -> ObjectMeta {
        let item = &self.items[i];
        ObjectMeta {
            key: item.key(&self.text).to_owned(),
            etag: item.etag(&self.text).to_owned(),
            size: item.size,
            archived: item.archived,
            last_modified: item.last_modified,
        }
    }

    /// Every version, as [`ObjectMeta`]s.
    pub fn to_vec(&self) -> Vec<ObjectMeta> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }

    /// Puts the versions in key order (bytewise, as S3 lists them): the order loads
    /// take them in, which decides which copy of a repeated event id is first.
    pub fn sort(&mut self) {
        let text = &self.text;
        self.items.sort_by(|a, b| a.key(text).cmp(b.key(text)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_hold_exactly_the_prefixs_keys() {
        let (low, high) = prefix_range("events/");
        assert_eq!((low.as_str(), high.as_str()), ("events/", "events0"));
        let inside = |k: &str| low.as_str() <= k && k < high.as_str();
        assert!(inside("events/2020/01/01/a.json") && inside("events/\u{10FFFF}"));
        assert!(!inside("events0") && !inside("event") && !inside("eventsa"));
        assert_eq!(prefix_range("a\u{D7FF}").1, "a\u{E000}", "surrogates are skipped");
        let (low, high) = prefix_range("");
        assert!(low.as_str() <= "x" && "\u{10FFFE}z" < high.as_str());
    }

    #[test]
    fn day_ranges_hold_exactly_the_days_keys() {
        let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let (low, high) = day_range("events/", d("2020-01-31"), d("2020-02-01"));
        assert_eq!(
            (low.as_str(), high.as_str()),
            ("events/2020/01/31/", "events/2020/02/02/")
        );
        let inside = |k: &str| low.as_str() <= k && k < high.as_str();
        assert!(inside("events/2020/01/31/a.json"));
        assert!(inside("events/2020/02/01/zz\\'{x}.json"));
        assert!(!inside("events/2020/01/30/z.json"));
        assert!(!inside("events/2020/02/02/a.json"));
        assert!(!inside("events/2020/01/31"));
    }

    #[test]
    fn day_prefixes_cover_the_range_inclusive() {
        let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            day_prefixes("events/", d("2020-01-31"), d("2020-02-01")),
            ["events/2020/01/31/", "events/2020/02/01/"]
        );
        assert_eq!(
            day_prefixes("", d("2020-01-02"), d("2020-01-01")),
            Vec::<String>::new()
        );
    }

    fn meta(key: &str, etag: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            etag: etag.into(),
            size: 1,
            archived: false,
            last_modified: None,
        }
    }

    #[test]
    fn event_file_extensions() {
        for k in [
            "events/2020/01/01/a.json",
            "a.jsonl",
            "a.ndjson",
            "a.json.gz",
            "a.jsonl.gz",
            "x/a.ndjson.gz",
        ] {
            assert!(is_event_file(k), "{k}");
        }
        for k in [
            "a.txt",
            "a.json.bak",
            "a.gz",
            "a.csv.gz",
            "a.JSON",
            "events/",
            "x/.json",
            "a.json/",
        ] {
            assert!(!is_event_file(k), "{k}");
        }
    }

    #[test]
    fn pending_versions_come_back_whole_and_in_key_order() {
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 5).unwrap();
        let mut listed = vec![
            meta("b/é.json", "e1"),
            meta("a.json", ""),
            meta("B.json", "etag-3"),
        ];
        listed[0].last_modified = Some(t);
        listed[1].archived = true;
        listed[2].size = 7;
        let mut p = Pending::default();
        assert!(p.is_empty());
        for o in listed.clone() {
            p.push(o);
        }
        assert_eq!(p.to_vec(), listed);
        p.sort();
        let keys: Vec<&str> = (0..p.len()).map(|i| p.key(i)).collect();
        assert_eq!(keys, ["B.json", "a.json", "b/é.json"]);
        assert_eq!((p.etag(0), p.size(0)), ("etag-3", 7));
        assert_eq!(p.get(1), listed[1]);
        assert_eq!((p.get(2), p.last_modified(2)), (listed[0].clone(), Some(t)));
    }
}
