//! How much librdkafka fetches ahead for a sink pipeline's partitions: one byte budget,
//! shared by the partitions of the pipeline's topics.
//!
//! Each partition's queue is split off to its writer, and librdkafka then bounds each queue
//! on its own (`queued.max.messages.kbytes`), plus the fetch on its way
//! (`max.partition.fetch.bytes`): a fixed size per partition grows with the partitions. Under
//! a backlog more so: a fetch answer carries several partitions' records in one buffer,
//! freed only once each of them was taken, and a partition waiting for one of the
//! pipeline's write turns holds its part (heaptrack, 32 partitions at 640 KiB + 256 KiB:
//! 35.6 MiB of fetch buffers at the peak).
//!
//! Rules:
//! - The pipeline's prefetch budget is an eighth of its `memory_budget` (8 MiB by default).
//! - It is shared by the partitions its topics have when the pipeline starts (the topics it
//!   names, and those its `topics_regex` matches), whichever daemon of the group is assigned
//!   them: each partition gets the same share, at least [`MIN_SHARE`] and at most
//!   [`MAX_SHARE`].
//! - Of a partition's share, five sevenths are its queue and two sevenths its fetch: at the
//!   most, 640 KiB of queue, one default batch of 1 KB records ahead of its writer, and a
//!   256 KiB fetch (the sizes 8 partitions get with the default budget).
//! - When the partitions cannot be counted (the cluster did not answer in time), the share is
//!   the smallest: memory stays bounded, the next start counts again.
//! - The user's `queued.max.messages.kbytes` and `max.partition.fetch.bytes` (in
//!   `[kafka.consumer]` or `[kafka.properties]`) win over these.

use crate::clients::kafka::Prefetch;

/// The smallest share of a partition, in KiB (68 KiB of queue, a 28 KiB fetch).
pub const MIN_SHARE_KIB: u64 = 96;
/// The largest share of a partition, in KiB (640 KiB of queue, a 256 KiB fetch).
pub const MAX_SHARE_KIB: u64 = 896;
/// The smallest share, in bytes.
pub const MIN_SHARE: u64 = MIN_SHARE_KIB * 1024;
/// The largest share, in bytes.
pub const MAX_SHARE: u64 = MAX_SHARE_KIB * 1024;

/// The prefetch budget of a pipeline with `memory_budget` bytes.
pub fn budget(memory_budget: u64) -> u64 {
    memory_budget / 8
}

/// What each partition prefetches when `partitions` share `budget` bytes (`None`: they could
/// not be counted).
pub fn per_partition(budget: u64, partitions: Option<usize>) -> Prefetch {
    let share_kib = match partitions {
        Some(n) => (budget / 1024 / (n.max(1) as u64)).clamp(MIN_SHARE_KIB, MAX_SHARE_KIB),
        None => MIN_SHARE_KIB,
    };
    let queued_kib = share_kib * 5 / 7;
    Prefetch {
        queued_kib,
        partition_fetch_bytes: (share_kib - queued_kib) * 1024,
    }
}

/// The partitions of the topics `topics` names and of those `regex` matches (anchored at
/// both ends, as the subscription is), among `cluster`'s topics and their partition counts.
pub fn counted<'a>(
    cluster: impl IntoIterator<Item = (&'a str, usize)>,
    topics: &[String],
    regex: Option<&regex::Regex>,
) -> usize {
    cluster
        .into_iter()
        .filter(|(name, _)| {
            topics.iter().any(|t| t == name) || regex.is_some_and(|r| r.is_match(name))
        })
        .map(|(_, partitions)| partitions)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn total(prefetch: Prefetch, partitions: u64) -> u64 {
        (prefetch.queued_kib * 1024 + prefetch.partition_fetch_bytes) * partitions
    }

    #[test]
    fn up_to_eight_partitions_keep_a_batch_ahead_and_more_share_the_budget() {
        let budget = budget(64 * MIB);
        assert_eq!(budget, 8 * MIB);
        for n in [1, 4, 8] {
            let p = per_partition(budget, Some(n));
            assert_eq!((p.queued_kib, p.partition_fetch_bytes), (640, 256 * 1024));
        }
        let p = per_partition(budget, Some(32));
        assert_eq!((p.queued_kib, p.partition_fetch_bytes), (182, 74 * 1024));
        assert!(total(p, 32) <= budget);
    }

    #[test]
    fn the_prefetch_of_all_partitions_stays_within_the_budget_down_to_the_smallest_share() {
        for memory in [MIB, 8 * MIB, 64 * MIB, 512 * MIB] {
            let budget = budget(memory);
            for n in 1..=400u64 {
                let p = per_partition(budget, Some(n as usize));
                let share = p.queued_kib * 1024 + p.partition_fetch_bytes;
                assert!((MIN_SHARE..=MAX_SHARE).contains(&share), "{n}: {share}");
                if share > MIN_SHARE {
                    assert!(total(p, n) <= budget, "{memory} {n}: {}", total(p, n));
                }
                assert!(p.queued_kib >= 68 && p.partition_fetch_bytes >= 28 * 1024);
            }
        }
    }

    #[test]
    fn uncounted_partitions_get_the_smallest_share() {
        let p = per_partition(budget(64 * MIB), None);
        assert_eq!((p.queued_kib, p.partition_fetch_bytes), (68, 28 * 1024));
    }

    #[test]
    fn the_named_topics_and_the_matched_ones_are_counted() -> Result<(), regex::Error> {
        let cluster = [
            ("orders", 12),
            ("orders-dlq", 1),
            ("audit.a", 3),
            ("audit.b", 5),
        ];
        let named = vec!["orders".to_owned()];
        assert_eq!(counted(cluster, &named, None), 12);
        let regex = regex::Regex::new("^(audit\\..*)$")?;
        assert_eq!(counted(cluster, &named, Some(&regex)), 20);
        assert_eq!(counted(cluster, &[], Some(&regex)), 8);
        assert_eq!(counted(cluster, &["missing".to_owned()], None), 0);
        Ok(())
    }
}
