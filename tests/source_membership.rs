//! Membership of source daemons in their pipeline's consumer group (issue 14), against the
//! real broker: the slots (partitions of the checkpoint topic) the group hands out, through
//! joins and leaves, are owned by exactly one member each, and every slot by one.
//!
//! The members here are the membership shells with the pure ownership state machine on
//! top, as a daemon uses them, without the readers behind them.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongo_kafka_bridge::source::membership::{Join, Membership, Rebalanced};
use mongo_kafka_bridge::source::ownership::{Change, Ownership};

const SLOTS: u32 = 16;
const WAIT: Duration = Duration::from_secs(90);

/// A member: its membership and the slots it owns, kept by [`Ownership`] from what the
/// group said; hand-overs are acknowledged at once.
struct Member {
    membership: Option<Membership>,
    ownership: Arc<Mutex<Ownership>>,
    changes: Arc<Mutex<Vec<Change>>>,
}

impl Member {
    fn join(pipeline: &str, topic: &str) -> Self {
        let config = common::config("");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Rebalanced>();
        let join = Join {
            pipeline: pipeline.to_owned(),
            topic: topic.to_owned(),
            handover: Duration::from_secs(10),
            agreement: None,
        };
        let membership = Membership::join(&config.kafka, &join, tx)
            .unwrap_or_else(|e| panic!("joining the group: {e}"));
        let ownership = Arc::new(Mutex::new(Ownership::new(SLOTS)));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let (owned, seen) = (ownership.clone(), changes.clone());
        tokio::spawn(async move {
            while let Some(Rebalanced {
                change,
                handed_over,
            }) = rx.recv().await
            {
                owned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(&change);
                seen.lock().unwrap_or_else(|p| p.into_inner()).push(change);
                if let Some(done) = handed_over {
                    let _ = done.send(());
                }
            }
        });
        Self {
            membership: Some(membership),
            ownership,
            changes,
        }
    }

    fn owned(&self) -> BTreeSet<i32> {
        self.ownership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .owned()
            .clone()
    }

    fn leave(&mut self) {
        if let Some(membership) = self.membership.take() {
            tokio::task::block_in_place(|| membership.leave());
        }
    }
}

/// Whether the members' slots are disjoint and cover every slot; otherwise what is wrong.
fn partition_of_slots(members: &[&Member]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for (index, member) in members.iter().enumerate() {
        for slot in member.owned() {
            if !seen.insert(slot) {
                return Err(format!("slot {slot} owned twice (again by member {index})"));
            }
        }
    }
    let all: BTreeSet<i32> = (0..16).collect();
    let missing: Vec<_> = all.difference(&seen).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("slots owned by nobody: {missing:?}"))
    }
}

async fn settle(members: &[&Member], what: &str) {
    let settled = common::eventually(WAIT, || {
        let ok =
            partition_of_slots(members).is_ok() && members.iter().all(|m| !m.owned().is_empty());
        async move { ok }
    })
    .await;
    let owned: Vec<BTreeSet<i32>> = members.iter().map(|m| m.owned()).collect();
    assert!(
        settled,
        "{what}: {:?}; owned: {owned:?}",
        partition_of_slots(members)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_are_owned_once_each_through_joins_and_leaves() {
    let topic = common::unique("own_grp");
    common::create_topic_with(&topic, 16, &[("cleanup.policy", "compact")]).await;
    let pipeline = common::unique("own_grpsrc");

    let mut first = Member::join(&pipeline, &topic);
    settle(&[&first], "one member alone").await;
    assert_eq!(first.owned().len(), 16, "one member owns every slot");

    let second = Member::join(&pipeline, &topic);
    let third = Member::join(&pipeline, &topic);
    settle(&[&first, &second, &third], "three members").await;

    // One leaves: its slots go to the others, each slot handed over (revoked) first.
    let left: BTreeSet<i32> = first.owned();
    first.leave();
    settle(&[&second, &third], "after a member left").await;
    let revoked: BTreeSet<i32> = first
        .changes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|c| match c {
            Change::Revoked(slots) => Some(slots.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        left.is_subset(&revoked),
        "the leaving member handed over {revoked:?}, it owned {left:?}"
    );

    // A fourth joins: it takes some, nobody else's stay doubled.
    let fourth = Member::join(&pipeline, &topic);
    settle(&[&second, &third, &fourth], "after a member joined").await;
    // Cooperative-sticky: the remaining members never lost slots they kept.
    for member in [&second, &third] {
        let lost = member
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|c| matches!(c, Change::Lost(_)));
        assert!(!lost, "a member lost slots without leaving");
    }
    for mut member in [second, third, fourth] {
        member.leave();
    }
}
