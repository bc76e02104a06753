//! Membership (issue 14): a daemon's place among the daemons running one source pipeline,
//! through Kafka's standard consumer group protocol rather than a lease of our own. Each
//! daemon joins the group `mongo-kafka-bridge-source-<name>`, subscribed to the pipeline's
//! checkpoint topic with the cooperative-sticky assignor; the partitions it is assigned are
//! the slots it owns. It reads nothing through the group: assigned partitions are paused at
//! once, and a thread of its own keeps polling so the daemon stays a member (and hears of
//! rebalances) until it leaves.
//!
//! A shell over librdkafka: rebalance callbacks become [`Change`]s (see `ownership.rs` for
//! what to do about them). A revoke or a loss waits, inside the callback, until the owner
//! says the slots are handed over (readers stopped, transaction committed or aborted,
//! producer closed), or until the hand-over deadline: the group gives the slots to another
//! daemon only once the callback returned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::TopicPartitionList;

use super::agreement::{self, Agreement};
use super::ownership::Change;
use crate::clients::{kafka, ClientError};
use crate::config::KafkaConfig;

/// The consumer group of the source pipeline `pipeline`.
pub fn group_id(pipeline: &str) -> String {
    format!("mongo-kafka-bridge-source-{pipeline}")
}

/// The `transactional.id` of slot `slot`'s producer in the source pipeline `pipeline`.
pub fn transactional_id(pipeline: &str, slot: i32) -> String {
    format!("mongo-kafka-bridge-{pipeline}-{slot}")
}

/// A change of the slots owned, and for a revoke or a loss, where to say the slots are
/// handed over.
#[derive(Debug)]
pub struct Rebalanced {
    /// What the group did.
    pub change: Change,
    /// Send on it (or drop it) once the revoked or lost slots are handed over.
    pub handed_over: Option<mpsc::Sender<()>>,
}

/// How a daemon joins the group of a source pipeline.
#[derive(Debug, Clone)]
pub struct Join {
    /// The pipeline's name.
    pub pipeline: String,
    /// Its checkpoint topic (one partition per slot).
    pub topic: String,
    /// The longest a revoke or a loss waits for its hand-over.
    pub handover: Duration,
    /// Publish this fingerprint of the pipeline's configuration to the other members and
    /// compare theirs with it (`agreement.rs`); `None`: no check.
    pub agreement: Option<Agreeing>,
}

/// This daemon's fingerprint, and where to say whether the group agrees with it.
#[derive(Debug, Clone)]
pub struct Agreeing {
    /// The fingerprint of this daemon's pipeline configuration.
    pub fingerprint: String,
    /// Receives the comparison each time its outcome changes.
    pub report: tokio::sync::mpsc::UnboundedSender<Agreement>,
}

/// How often the members' fingerprints are compared (about: one poll of the group waits
/// up to 100 ms).
const COMPARE_EVERY_POLLS: u32 = 20;

/// Compares the fingerprints of the live members of `group` with ours, reporting when the
/// outcome changed. Only a stable group is compared: mid-rebalance, its member list is
/// partial.
fn compare_members(
    consumer: &BaseConsumer<GroupContext>,
    group: &str,
    agreeing: &Agreeing,
    last: &mut Option<Agreement>,
) {
    let list = match consumer.fetch_group_list(Some(group), Duration::from_secs(5)) {
        Ok(list) => list,
        Err(error) => {
            tracing::debug!(group, %error, "could not describe the group to compare configurations");
            return;
        }
    };
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return;
    };
    if info.state() != "Stable" {
        return;
    }
    let outcome = agreement::compare(
        &agreeing.fingerprint,
        info.members().iter().map(|m| m.client_id()),
    );
    if last.as_ref() != Some(&outcome) {
        *last = Some(outcome.clone());
        let _ = agreeing.report.send(outcome);
    }
}

struct GroupContext {
    pipeline: String,
    changes: tokio::sync::mpsc::UnboundedSender<Rebalanced>,
    handover: Duration,
}

fn slots_of(list: &TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        kafka::log_event(&error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let slots = slots_of(revoked);
        if slots.is_empty() {
            return;
        }
        let change = if consumer.assignment_lost() {
            tracing::warn!(pipeline = %self.pipeline, ?slots, "slots lost (this daemon left the group, e.g. paused past the session timeout): dropping them without committing");
            Change::Lost(slots)
        } else {
            tracing::info!(pipeline = %self.pipeline, ?slots, "slots revoked: handing them over");
            Change::Revoked(slots)
        };
        let (handed_over, done) = mpsc::channel();
        if self
            .changes
            .send(Rebalanced {
                change,
                handed_over: Some(handed_over),
            })
            .is_err()
        {
            return;
        }
        // Returning hands the slots to another daemon: not before they are ours no more.
        if let Err(mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(self.handover) {
            tracing::error!(pipeline = %self.pipeline, deadline = ?self.handover, "slots not handed over before the deadline; releasing them anyway (the next owner fences their producers)");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(assigned) = rebalance else {
            return;
        };
        let slots = slots_of(assigned);
        if slots.is_empty() {
            return;
        }
        // Members read nothing through the group: the partitions are the slots' names.
        if let Err(error) = consumer.pause(assigned) {
            tracing::warn!(pipeline = %self.pipeline, %error, "could not pause the assigned checkpoint partitions");
        }
        tracing::info!(pipeline = %self.pipeline, ?slots, "slots assigned");
        let _ = self.changes.send(Rebalanced {
            change: Change::Assigned(slots),
            handed_over: None,
        });
    }
}

/// A daemon's membership in a pipeline's group; it leaves the group when dropped (the
/// group then moves its slots to the others at once, without waiting for a timeout).
pub struct Membership {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Membership {
    /// Joins the group of `join.pipeline`; changes of the slots owned arrive on `changes`.
    pub fn join(
        kafka_config: &KafkaConfig,
        join: &Join,
        changes: tokio::sync::mpsc::UnboundedSender<Rebalanced>,
    ) -> Result<Self, ClientError> {
        let context = GroupContext {
            pipeline: join.pipeline.clone(),
            changes,
            handover: join.handover,
        };
        let mut config = kafka::client_config(kafka_config, kafka::Role::Consumer);
        let new_protocol = kafka::consumer_group_protocol(kafka_config);
        let agreement = join.agreement.as_ref().filter(|_| !new_protocol);
        if new_protocol && join.agreement.is_some() {
            // The classic DescribeGroups the comparison uses does not list the members of a
            // KIP-848 group: say so rather than compare nothing in silence.
            tracing::warn!(pipeline = %join.pipeline, "with `group.protocol = \"consumer\"` the daemons of a source pipeline cannot compare their configurations (librdkafka describes only classic groups): keep them identical; `mkb_source_config_mismatch` stays 0");
        }
        if let Some(agreeing) = agreement {
            let base = config.get("client.id").unwrap_or("mongo-kafka-bridge");
            let id = agreement::client_id(base, &agreeing.fingerprint);
            config.set("client.id", id);
        }
        if !kafka::consumer_group_protocol(kafka_config) {
            // With the classic protocol; KIP-848's broker-side assignment is incremental too.
            config.set("partition.assignment.strategy", "cooperative-sticky");
        }
        let consumer: BaseConsumer<GroupContext> = config
            .set("group.id", group_id(&join.pipeline))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create_with_context(context)
            .map_err(|source| ClientError::Kafka {
                servers: kafka_config.bootstrap_servers.clone(),
                what: "joining the group of a source pipeline",
                source: Box::new(source),
                broker_error: None,
            })?;
        consumer
            .subscribe(&[&join.topic])
            .map_err(|source| ClientError::Kafka {
                servers: kafka_config.bootstrap_servers.clone(),
                what: "subscribing to the checkpoint topic",
                source: Box::new(source),
                broker_error: None,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        let pipeline = join.pipeline.clone();
        let group = group_id(&join.pipeline);
        let agreeing = agreement.cloned();
        let thread = std::thread::Builder::new()
            .name(format!("mkb-group-{pipeline}"))
            .spawn(move || {
                let mut polls = 0u32;
                let mut last = None;
                while !running.load(Ordering::SeqCst) {
                    // Paused partitions return no record: a poll serves the group.
                    if let Some(Err(error)) = consumer.poll(Duration::from_millis(100)) {
                        kafka::log_event(&error, "polling the group of a source pipeline");
                    }
                    polls = polls.wrapping_add(1);
                    if let Some(agreeing) = &agreeing {
                        if polls.is_multiple_of(COMPARE_EVERY_POLLS) {
                            compare_members(&consumer, &group, agreeing, &mut last);
                        }
                    }
                }
                // Leaving: the revoke callback hands the slots over first.
                consumer.unsubscribe();
                for _ in 0..20 {
                    if consumer
                        .assignment()
                        .map(|a| a.count() == 0)
                        .unwrap_or(true)
                    {
                        break;
                    }
                    let _ = consumer.poll(Duration::from_millis(100));
                }
            })
            .map_err(|e| ClientError::Kafka {
                servers: kafka_config.bootstrap_servers.clone(),
                what: "starting the group's thread",
                source: Box::new(KafkaError::Canceled),
                broker_error: Some(e.to_string()),
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Leaves the group (handing the slots over first), waiting for it.
    pub fn leave(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_pipeline_and_slot() {
        assert_eq!(group_id("orders"), "mongo-kafka-bridge-source-orders");
        assert_eq!(transactional_id("orders", 7), "mongo-kafka-bridge-orders-7");
    }
}
