//! Continuous traffic for operations and fault tests: a task that inserts numbered
//! documents into MongoDB collections until told to stop, and checks that every one of
//! them arrived somewhere.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, Document};

/// Inserts `{_id: n, payload}` into each of its collections in turn, every `pause`, until
/// stopped; a failed insert is retried (the server may be cut off on purpose).
pub struct Traffic {
    stop: Arc<AtomicBool>,
    next: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    /// Starts inserting into `collections` (one id sequence shared by all).
    pub fn start(collections: Vec<mongodb::Collection<Document>>, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicI64::new(0));
        let (task_stop, task_next) = (stop.clone(), next.clone());
        let task = tokio::spawn(async move {
            // Bounded: at most 20,000 documents, whatever the test does.
            while !task_stop.load(Ordering::SeqCst) && task_next.load(Ordering::SeqCst) < 20_000 {
                let id = task_next.load(Ordering::SeqCst);
                let coll = &collections[usize::try_from(id).unwrap_or(0) % collections.len()];
                match coll
                    .insert_one(doc! { "_id": id, "payload": "x".repeat(200) })
                    .await
                {
                    Ok(_) => {
                        task_next.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if e.to_string().contains("E11000") => {
                        // Written before an error was reported: it counts.
                        task_next.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(pause).await;
            }
        });
        Self { stop, next, task }
    }

    /// How many documents were inserted so far.
    pub fn inserted(&self) -> i64 {
        self.next.load(Ordering::SeqCst)
    }

    /// Stops inserting; answers how many documents were inserted (ids `0..n`).
    pub async fn stop(self) -> i64 {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.next.load(Ordering::SeqCst)
    }
}

/// The ids of `ids` (the ones inserted into one collection) missing from `coll`.
pub async fn missing_ids(
    coll: &mongodb::Collection<Document>,
    ids: impl IntoIterator<Item = i64>,
) -> Vec<i64> {
    use futures_util::TryStreamExt;
    let present: BTreeSet<i64> = match coll.find(doc! {}).await {
        Ok(cursor) => cursor
            .try_collect::<Vec<Document>>()
            .await
            .unwrap_or_default()
            .iter()
            // Relaxed JSON on the way may turn an Int64 into an Int32.
            .filter_map(|d| match d.get("_id") {
                Some(mongodb::bson::Bson::Int64(id)) => Some(*id),
                Some(mongodb::bson::Bson::Int32(id)) => Some(i64::from(*id)),
                _ => None,
            })
            .collect(),
        Err(_) => BTreeSet::new(),
    };
    ids.into_iter().filter(|id| !present.contains(id)).collect()
}

/// The ids inserted into collection `index` of `count` by a [`Traffic`] of `total`.
pub fn ids_of(index: usize, count: usize, total: i64) -> impl Iterator<Item = i64> {
    (0..total).filter(move |id| usize::try_from(*id).unwrap_or(0) % count == index)
}

/// Waits up to `limit` until every id of `ids` is in `coll`; panics naming the missing ones
/// and showing `log`.
pub async fn assert_arrived(
    coll: &mongodb::Collection<Document>,
    ids: Vec<i64>,
    limit: Duration,
    log: impl Fn() -> String,
) {
    let complete = super::eventually(limit, || {
        let (coll, ids) = (coll.clone(), ids.clone());
        async move { missing_ids(&coll, ids).await.is_empty() }
    })
    .await;
    assert!(
        complete,
        "missing: {:?}; log:\n{}",
        missing_ids(coll, ids).await,
        log()
    );
}
