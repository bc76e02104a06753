//! Copying existing documents (`startup_mode = "copy_existing"`): each collection is split
//! into `_id` ranges copied by `copy_existing_parallelism` workers at once, and the progress
//! of every range travels with the reader's checkpoint, so a restart continues the copy
//! where it stopped instead of starting it over.
//!
//! [`CopyCursor`] and the range queries are plain data and functions; the workers that
//! run them live in the reader.

use std::collections::BTreeMap;

use bson::{doc, Bson, Document};
use serde::{Deserialize, Serialize};

/// How far the copy of one reader's namespaces got: only what a restart needs, so the
/// checkpoint stays small however many collections the copy covers. Collections are
/// copied one after the other in ascending order of `db.coll` ([`copy_order`]), so the
/// finished ones collapse into one watermark.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CopyCursor {
    /// Every collection up to this one (`db.coll`, in copy order) is copied completely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_through: Option<String>,
    /// By collection (`db.coll`): the ranges of those started and not finished. A
    /// collection neither listed nor at or below `finished_through` is not started.
    /// (Checkpoints of earlier versions list finished collections here too.)
    #[serde(default)]
    pub collections: BTreeMap<String, Vec<RangeCopy>>,
}

/// Sorts the collections of a copy into the order it goes: ascending `db.coll`, the order
/// [`CopyCursor::finished_through`] counts in.
pub fn copy_order(collections: &mut [(String, String)]) {
    collections.sort_by_cached_key(|(db, coll)| format!("{db}.{coll}"));
}

/// One `_id` range of a collection: `lower <= _id < upper` (an absent bound is open), in
/// MongoDB's order of BSON values, so `_id`s of mixed types are all covered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RangeCopy {
    /// The lowest `_id` of the range (canonical extended JSON); absent: from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<serde_json::Value>,
    /// The first `_id` after the range; absent: to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<serde_json::Value>,
    /// The last `_id` published (and acknowledged, once this is in a checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<serde_json::Value>,
    /// Every document of the range is published.
    #[serde(default)]
    pub done: bool,
}

fn to_json(value: &Bson) -> serde_json::Value {
    value.clone().into_canonical_extjson()
}

fn from_json(value: &serde_json::Value) -> Result<Bson, String> {
    Bson::try_from(value.clone()).map_err(|e| format!("an `_id` in the copy checkpoint: {e}"))
}

impl CopyCursor {
    /// Records the ranges of `namespace`, split at `boundaries` (ascending `_id`s).
    pub fn plan(&mut self, namespace: &str, boundaries: &[Bson]) {
        let mut bounds: Vec<Option<serde_json::Value>> = vec![None];
        bounds.extend(boundaries.iter().map(|b| Some(to_json(b))));
        bounds.push(None);
        let ranges = bounds
            .windows(2)
            .map(|pair| RangeCopy {
                lower: pair[0].clone(),
                upper: pair[1].clone(),
                last: None,
                done: false,
            })
            .collect();
        self.collections.insert(namespace.to_owned(), ranges);
    }

    /// Whether `namespace` is at or below the watermark of finished collections.
    fn finished(&self, namespace: &str) -> bool {
        self.finished_through
            .as_deref()
            .is_some_and(|through| namespace <= through)
    }

    /// The ranges of `namespace` still to copy, by index; `None` when it is not planned.
    pub fn remaining(&self, namespace: &str) -> Option<Vec<(usize, RangeCopy)>> {
        if self.finished(namespace) {
            return Some(Vec::new());
        }
        self.collections.get(namespace).map(|ranges| {
            ranges
                .iter()
                .enumerate()
                .filter(|(_, r)| !r.done)
                .map(|(i, r)| (i, r.clone()))
                .collect()
        })
    }

    /// Records that range `index` of `namespace` is published up to `last` (and, with
    /// `done`, completely).
    pub fn advance(&mut self, namespace: &str, index: usize, last: Option<&Bson>, done: bool) {
        if let Some(range) = self
            .collections
            .get_mut(namespace)
            .and_then(|ranges| ranges.get_mut(index))
        {
            if let Some(last) = last {
                range.last = Some(to_json(last));
            }
            range.done |= done;
        }
        self.collapse(namespace);
    }

    /// Moves the watermark up to `namespace` once it is finished and nothing before it is
    /// left, forgetting the ranges of every collection it covers.
    fn collapse(&mut self, namespace: &str) {
        let all_done = |ranges: &Vec<RangeCopy>| ranges.iter().all(|r| r.done);
        if !self.collections.get(namespace).is_some_and(all_done) {
            return;
        }
        let unfinished_before = self
            .collections
            .iter()
            .take_while(|(ns, _)| ns.as_str() < namespace)
            .any(|(_, ranges)| !all_done(ranges));
        if unfinished_before || self.finished(namespace) {
            return;
        }
        self.finished_through = Some(namespace.to_owned());
        self.collections
            .retain(|ns, ranges| ns.as_str() > namespace || !all_done(ranges));
    }
}

impl RangeCopy {
    /// The `$match` stage selecting what is left of the range: after `last` when some of
    /// it was published, else from `lower`; before `upper`. `$expr` compares across BSON
    /// types (a plain `{_id: {$gt: x}}` only matches `_id`s of `x`'s type).
    pub fn remaining_filter(&self) -> Result<Document, String> {
        let mut conditions = Vec::new();
        match (&self.last, &self.lower) {
            (Some(last), _) => {
                conditions.push(Bson::Document(
                    doc! { "$gt": ["$_id", { "$literal": from_json(last)? }] },
                ));
            }
            (None, Some(lower)) => {
                conditions.push(Bson::Document(
                    doc! { "$gte": ["$_id", { "$literal": from_json(lower)? }] },
                ));
            }
            (None, None) => {}
        }
        if let Some(upper) = &self.upper {
            conditions.push(Bson::Document(
                doc! { "$lt": ["$_id", { "$literal": from_json(upper)? }] },
            ));
        }
        Ok(match conditions.len() {
            0 => doc! { "$match": {} },
            _ => doc! { "$match": { "$expr": { "$and": conditions } } },
        })
    }
}

/// Where to split a collection of `count` documents among `parallelism` workers: the
/// positions (in `_id` order) of the first document of every range but the first.
pub fn split_positions(count: u64, parallelism: usize) -> Vec<u64> {
    let parallelism = parallelism as u64;
    // Fewer than two documents per worker is not worth the extra queries.
    if parallelism <= 1 || count < parallelism * 2 {
        return Vec::new();
    }
    (1..parallelism).map(|i| count * i / parallelism).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_positions_share_the_collection() {
        assert_eq!(split_positions(100, 4), vec![25, 50, 75]);
        assert!(split_positions(100, 1).is_empty());
        assert!(split_positions(5, 4).is_empty());
        assert_eq!(split_positions(8, 4), vec![2, 4, 6]);
    }

    #[test]
    fn ranges_cover_everything_between_their_bounds() {
        let mut p = CopyCursor::default();
        p.plan("db.c", &[Bson::Int32(10), Bson::String("m".into())]);
        let ranges = p.remaining("db.c").unwrap();
        assert_eq!(ranges.len(), 3);
        assert_eq!(
            ranges[0].1.remaining_filter().unwrap(),
            doc! { "$match": { "$expr": { "$and": [{ "$lt": ["$_id", { "$literal": 10 }] }] } } }
        );
        assert_eq!(
            ranges[1].1.remaining_filter().unwrap(),
            doc! { "$match": { "$expr": { "$and": [
                { "$gte": ["$_id", { "$literal": 10 }] },
                { "$lt": ["$_id", { "$literal": "m" }] },
            ] } } }
        );
        assert_eq!(
            ranges[2].1.remaining_filter().unwrap(),
            doc! { "$match": { "$expr": { "$and": [{ "$gte": ["$_id", { "$literal": "m" }] }] } } }
        );
        assert!(p.remaining("db.other").is_none());
        let mut single = CopyCursor::default();
        single.plan("db.c", &[]);
        assert_eq!(
            single.remaining("db.c").unwrap()[0]
                .1
                .remaining_filter()
                .unwrap(),
            doc! { "$match": {} }
        );
    }

    #[test]
    fn progress_resumes_after_the_last_id_and_skips_finished_ranges() {
        let mut p = CopyCursor::default();
        p.plan("db.c", &[Bson::Int64(100)]);
        p.advance("db.c", 0, Some(&Bson::Int64(42)), false);
        p.advance("db.c", 1, Some(&Bson::Int64(150)), true);
        let remaining = p.remaining("db.c").unwrap();
        assert_eq!(remaining.len(), 1);
        assert_eq!(remaining[0].0, 0);
        assert_eq!(
            remaining[0].1.remaining_filter().unwrap(),
            doc! { "$match": { "$expr": { "$and": [
                { "$gt": ["$_id", { "$literal": 42_i64 }] },
                { "$lt": ["$_id", { "$literal": 100_i64 }] },
            ] } } }
        );
        // Ids that look like field paths stay literal values.
        p.plan("db.s", &[Bson::String("$x".into())]);
        let text = p.remaining("db.s").unwrap()[1]
            .1
            .remaining_filter()
            .unwrap()
            .to_string();
        assert!(text.contains("\"$literal\": \"$x\""), "{text}");
        // Progress survives its JSON form.
        let back: CopyCursor = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    /// Issue 12, defect 3: every finished collection kept its ranges in every checkpoint,
    /// so a copy of ~1,500 collections outgrew `message.max.bytes` and restarted for ever.
    #[test]
    fn a_many_collection_copy_keeps_its_checkpoint_small() {
        let mut p = CopyCursor::default();
        let boundaries: Vec<Bson> = (1..4).map(|i| Bson::Int64(i * 1000)).collect();
        for n in 0..1500 {
            let namespace = format!("db.c{n:04}");
            p.plan(&namespace, &boundaries);
            for index in 0..4 {
                p.advance(&namespace, index, Some(&Bson::Int64(4000)), true);
            }
            assert_eq!(
                p.remaining(&namespace),
                Some(Vec::new()),
                "{namespace} is done"
            );
        }
        // Half-way through the next one.
        p.plan("db.c1500", &boundaries);
        p.advance("db.c1500", 1, Some(&Bson::Int64(1500)), false);
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.len() < 1024, "{} bytes: {text:.300}", text.len());
        // What a restart needs is all there: finished collections stay finished, the
        // current one continues where it got.
        let back: CopyCursor = serde_json::from_str(&text).unwrap();
        assert_eq!(back.remaining("db.c0000"), Some(Vec::new()));
        assert_eq!(back.remaining("db.c1499"), Some(Vec::new()));
        let current = back.remaining("db.c1500").unwrap();
        assert_eq!(current.len(), 4);
        assert_eq!(
            current[1].1.last,
            Some(serde_json::json!({ "$numberLong": "1500" }))
        );
        assert_eq!(back.remaining("db.c1501"), None, "not started");
    }

    #[test]
    fn the_watermark_waits_for_every_collection_before_it() {
        let mut p = CopyCursor::default();
        p.plan("db.b", &[]);
        p.plan("db.a", &[]);
        // `db.b` finishes while `db.a` (before it) has not: nothing collapses yet.
        p.advance("db.b", 0, None, true);
        assert_eq!(p.finished_through, None);
        assert_eq!(p.remaining("db.b"), Some(Vec::new()));
        p.advance("db.a", 0, None, true);
        assert_eq!(p.finished_through.as_deref(), Some("db.a"));
        // `db.b` stays listed: a collection between the two may not be started yet.
        assert_eq!(p.collections.keys().collect::<Vec<_>>(), ["db.b"]);
        assert_eq!(p.remaining("db.b"), Some(Vec::new()));
        // A checkpoint of an earlier version, listing a finished collection, still reads.
        let old: CopyCursor = serde_json::from_str(
            r#"{"collections":{"db.x":[{"done":true}],"db.y":[{"last":{"$numberInt":"3"}}]}}"#,
        )
        .unwrap();
        assert_eq!(old.remaining("db.x"), Some(Vec::new()));
        assert_eq!(old.remaining("db.y").map(|r| r.len()), Some(1));
        let mut order = vec![
            ("a-x".to_owned(), "c".to_owned()),
            ("a".to_owned(), "b".to_owned()),
        ];
        copy_order(&mut order);
        assert_eq!(
            order[0].0, "a-x",
            "by `db.coll` as a string, as the watermark compares"
        );
    }
}
