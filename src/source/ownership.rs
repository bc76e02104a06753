//! Which slots of a source pipeline this daemon owns, and what it must do, in which order,
//! when Kafka's consumer group moves them (issue 14). Pure: the membership (the group's
//! rebalance callbacks) reports [`Change`]s, and the supervisor carries out the
//! [`SlotAction`]s answered, in order, before the callback returns.
//!
//! - Assigned slot `s`: [`SlotAction::Fence`] (a producer with `transactional.id =
//!   mongo-kafka-bridge-<name>-<s>`; exactly-once calls `init_transactions` first, which
//!   fences any zombie owner and ends its open transaction), then
//!   [`SlotAction::ReadCheckpoints`] (partition `s`, `read_committed`, to its end), then
//!   [`SlotAction::StartReaders`].
//! - Revoked: [`SlotAction::StopReaders`], [`SlotAction::EndTransaction`] with commit (the
//!   readers stopped after whole batches), [`SlotAction::CloseProducer`].
//! - Lost (the group went on without us, or a produce/commit was fenced): the same without
//!   committing. A fencing error loses one slot; it is no reason to restart anything else.
//! - Fenced while the group still hands the slot to this daemon (a stray producer's
//!   `init_transactions` on the slot's `transactional.id`, an overtaken start attempt, a
//!   transaction the broker aborted): the slot is dropped, then [`Ownership::take_again`]
//!   after a delay takes it over from the start (fence, checkpoints, readers), unless the
//!   group revoked or lost it meanwhile (another daemon owns it: its fence was legitimate).
//!   Issue 21: a fenced slot used to stay dropped for good, its partition still assigned here,
//!   so nobody published its changes.
//!
//! A single daemon is assigned every slot, so it runs every reader, as before slots.
//!
//! The supervisor (`mod.rs`) keeps one and, for a change with actions, winds its launch
//! down (readers, transactions, producers of every slot) and starts again with the slots
//! owned then: simpler than taking slots over one by one, at the price of a short pause of
//! the slots it keeps.

use std::collections::{BTreeMap, BTreeSet};

/// What the group did to this daemon's slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These slots are ours now.
    Assigned(Vec<i32>),
    /// These slots go to another daemon; hand them over cleanly.
    Revoked(Vec<i32>),
    /// These slots are gone already (session timed out, or fenced): drop them.
    Lost(Vec<i32>),
}

/// One step of taking over or giving up a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAction {
    /// Create the slot's producer; exactly-once: `init_transactions` on it.
    Fence(i32),
    /// Read the slot's checkpoint partition, `read_committed`, to its end.
    ReadCheckpoints(i32),
    /// Start the readers hashed onto the slot.
    StartReaders(i32),
    /// Stop the slot's readers (after their current batch).
    StopReaders(i32),
    /// Exactly-once: commit (`true`) or abort the slot's open transaction.
    EndTransaction {
        /// The slot.
        slot: i32,
        /// Commit it (a clean hand-over) or abort it (lost).
        commit: bool,
    },
    /// Close the slot's producer.
    CloseProducer(i32),
}

/// The state of one owned slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Its producer is fenced and its checkpoints are being read.
    Starting,
    /// Its readers run.
    Running,
}

/// The slots this daemon owns.
#[derive(Debug, Default)]
pub struct Ownership {
    /// The pipeline's slot count: partitions beyond it (a checkpoint topic shared with a
    /// pipeline of more slots) are not slots of this pipeline.
    slots: u32,
    owned: BTreeMap<i32, SlotState>,
    /// Slots dropped because their producer was fenced, which the group did not take from
    /// this daemon (yet): [`Ownership::take_again`] takes them over again.
    fenced: BTreeSet<i32>,
    /// How many times the group moved slots to or from this daemon.
    rebalances: u64,
}

impl Ownership {
    /// No slot owned yet, of `slots`.
    pub fn new(slots: u32) -> Self {
        Self {
            slots,
            ..Self::default()
        }
    }

    fn is_slot(&self, slot: i32) -> bool {
        u32::try_from(slot).is_ok_and(|s| s < self.slots)
    }

    /// What to do about `change`, in order; the owned slots are updated.
    pub fn apply(&mut self, change: &Change) -> Vec<SlotAction> {
        let mut actions = Vec::new();
        let (slots, commit) = match change {
            Change::Assigned(slots) => {
                for &slot in slots {
                    self.fenced.remove(&slot);
                    if self.is_slot(slot) && !self.owned.contains_key(&slot) {
                        self.owned.insert(slot, SlotState::Starting);
                        actions.extend([
                            SlotAction::Fence(slot),
                            SlotAction::ReadCheckpoints(slot),
                            SlotAction::StartReaders(slot),
                        ]);
                    }
                }
                if !actions.is_empty() {
                    self.rebalances += 1;
                }
                return actions;
            }
            Change::Revoked(slots) => (slots, true),
            Change::Lost(slots) => (slots, false),
        };
        for &slot in slots {
            // The group moved it: whoever owns it now fenced it rightly.
            self.fenced.remove(&slot);
            if self.owned.remove(&slot).is_some() {
                actions.extend([
                    SlotAction::StopReaders(slot),
                    SlotAction::EndTransaction { slot, commit },
                    SlotAction::CloseProducer(slot),
                ]);
            }
        }
        if !actions.is_empty() {
            self.rebalances += 1;
        }
        actions
    }

    /// The slot's readers started: it runs.
    pub fn running(&mut self, slot: i32) {
        if let Some(state) = self.owned.get_mut(&slot) {
            *state = SlotState::Running;
        }
    }

    /// A produce or commit of `slot` failed with a fencing error: another producer took its
    /// `transactional.id`. The slot is dropped (nothing else restarts) and remembered as
    /// fenced: unless the group moves it meanwhile, [`Ownership::take_again`] takes it back.
    pub fn fenced(&mut self, slot: i32) -> Vec<SlotAction> {
        let actions = self.apply(&Change::Lost(vec![slot]));
        if !actions.is_empty() {
            self.fenced.insert(slot);
        }
        actions
    }

    /// Takes the fenced slots the group still hands to this daemon over again, from the
    /// start (their fence aborts whatever the fencing producer left open).
    pub fn take_again(&mut self) -> Vec<SlotAction> {
        let slots: Vec<i32> = std::mem::take(&mut self.fenced).into_iter().collect();
        self.apply(&Change::Assigned(slots))
    }

    /// The slots dropped after a fence and not taken again yet: their changes wait.
    pub fn fenced_slots(&self) -> &BTreeSet<i32> {
        &self.fenced
    }

    /// The owned slots and their state.
    pub fn owned(&self) -> &BTreeMap<i32, SlotState> {
        &self.owned
    }

    /// How many times slots moved to or from this daemon.
    pub fn rebalances(&self) -> u64 {
        self.rebalances
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SlotAction::*;

    #[test]
    fn an_assigned_slot_is_fenced_before_its_checkpoints_are_read_and_its_readers_start() {
        let mut ownership = Ownership::new(4);
        assert_eq!(
            ownership.apply(&Change::Assigned(vec![1, 3])),
            [
                Fence(1),
                ReadCheckpoints(1),
                StartReaders(1),
                Fence(3),
                ReadCheckpoints(3),
                StartReaders(3)
            ]
        );
        assert_eq!(ownership.owned().get(&1), Some(&SlotState::Starting));
        ownership.running(1);
        assert_eq!(ownership.owned().get(&1), Some(&SlotState::Running));
        // Cooperative rebalancing assigns increments: what is owned already stays.
        assert_eq!(
            ownership.apply(&Change::Assigned(vec![1, 2])),
            [Fence(2), ReadCheckpoints(2), StartReaders(2)]
        );
        assert_eq!(
            ownership.owned().keys().copied().collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(ownership.rebalances(), 2);
    }

    #[test]
    fn a_revoked_slot_stops_its_readers_commits_and_closes_its_producer() {
        let mut ownership = Ownership::new(4);
        ownership.apply(&Change::Assigned(vec![0, 1]));
        assert_eq!(
            ownership.apply(&Change::Revoked(vec![1])),
            [
                StopReaders(1),
                EndTransaction {
                    slot: 1,
                    commit: true
                },
                CloseProducer(1)
            ]
        );
        assert_eq!(ownership.owned().keys().copied().collect::<Vec<_>>(), [0]);
        assert_eq!(
            ownership.apply(&Change::Revoked(vec![1])),
            [],
            "not ours any more"
        );
    }

    #[test]
    fn a_lost_or_fenced_slot_is_dropped_without_committing() {
        let mut ownership = Ownership::new(4);
        ownership.apply(&Change::Assigned(vec![0, 1, 2]));
        let dropped = |slot| {
            [
                StopReaders(slot),
                EndTransaction {
                    slot,
                    commit: false,
                },
                CloseProducer(slot),
            ]
        };
        assert_eq!(ownership.apply(&Change::Lost(vec![0])), dropped(0));
        assert_eq!(ownership.fenced(2), dropped(2));
        assert_eq!(ownership.fenced(2), [], "fenced twice: dropped once");
        assert_eq!(ownership.owned().keys().copied().collect::<Vec<_>>(), [1]);
        // Assigned again later: taken over from the start.
        assert_eq!(
            ownership.apply(&Change::Assigned(vec![2])),
            [Fence(2), ReadCheckpoints(2), StartReaders(2)]
        );
    }

    /// Issue 21: a slot fenced while the group still assigns it here (a stray producer took
    /// its `transactional.id`) was dropped for good; it is taken again, once, unless the
    /// group moved it meanwhile.
    #[test]
    fn a_fenced_slot_the_group_still_assigns_here_is_taken_again() {
        let mut ownership = Ownership::new(4);
        ownership.apply(&Change::Assigned(vec![0, 1, 2]));
        ownership.fenced(1);
        ownership.fenced(2);
        assert_eq!(
            ownership.fenced_slots().iter().copied().collect::<Vec<_>>(),
            [1, 2]
        );
        // Meanwhile the group gives slot 2 to another daemon (whose fence was legitimate).
        assert_eq!(ownership.apply(&Change::Revoked(vec![2])), []);
        assert_eq!(
            ownership.take_again(),
            [Fence(1), ReadCheckpoints(1), StartReaders(1)]
        );
        assert!(ownership.fenced_slots().is_empty());
        assert_eq!(
            ownership.owned().keys().copied().collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(ownership.take_again(), [], "taken once");
        // A slot assigned by the group while waiting is not taken twice.
        ownership.fenced(0);
        assert_eq!(
            ownership.apply(&Change::Assigned(vec![0])),
            [Fence(0), ReadCheckpoints(0), StartReaders(0)]
        );
        assert_eq!(ownership.take_again(), []);
        // Lost to the group while fenced: not ours to take.
        ownership.fenced(0);
        ownership.apply(&Change::Lost(vec![0]));
        assert_eq!(ownership.take_again(), []);
    }

    #[test]
    fn partitions_beyond_the_pipelines_slots_are_not_its_slots() {
        let mut ownership = Ownership::new(2);
        assert_eq!(
            ownership.apply(&Change::Assigned(vec![1, 2, 15, -1])),
            [Fence(1), ReadCheckpoints(1), StartReaders(1)]
        );
        assert_eq!(ownership.apply(&Change::Assigned(vec![5])), []);
        assert_eq!(ownership.rebalances(), 1);
    }

    /// Three daemons' views of one group: whatever the group hands out, each slot is owned
    /// by one daemon at a time, as long as each carries out its revokes before the group
    /// assigns the slot elsewhere (what cooperative rebalancing guarantees).
    #[test]
    fn slots_moved_between_daemons_are_owned_once() {
        let mut daemons: Vec<Ownership> = (0..3).map(|_| Ownership::new(16)).collect();
        let owners = |daemons: &[Ownership]| {
            let mut count = [0_u8; 16];
            for daemon in daemons {
                for slot in daemon.owned().keys() {
                    count[usize::try_from(*slot).unwrap_or(0)] += 1;
                }
            }
            count
        };
        daemons[0].apply(&Change::Assigned((0..16).collect()));
        assert_eq!(owners(&daemons), [1; 16]);
        // A second daemon joins: daemon 0 gives up 8 slots, then daemon 1 gets them.
        daemons[0].apply(&Change::Revoked((8..16).collect()));
        daemons[1].apply(&Change::Assigned((8..16).collect()));
        // A third: 5 from each.
        daemons[0].apply(&Change::Revoked((0..3).collect()));
        daemons[1].apply(&Change::Revoked((8..10).collect()));
        daemons[2].apply(&Change::Assigned(vec![0, 1, 2, 8, 9]));
        assert_eq!(owners(&daemons), [1; 16]);
        // Daemon 1 is killed: the group hands its slots out; its own view never changes.
        let dead: Vec<i32> = daemons[1].owned().keys().copied().collect();
        let (a, b) = dead.split_at(dead.len() / 2);
        daemons[0].apply(&Change::Assigned(a.to_vec()));
        daemons[2].apply(&Change::Assigned(b.to_vec()));
        daemons.remove(1);
        assert_eq!(owners(&daemons), [1; 16]);
    }
}
