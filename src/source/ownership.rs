//! Which slots of a source pipeline this daemon owns, and what the supervisor does when
//! Kafka's consumer group moves them (issue 14). Pure: the membership (the group's rebalance
//! callbacks) reports [`Change`]s, and [`Ownership::apply`] answers the supervisor's
//! [`Reaction`] (which `handover.rs` turns into what the supervisor does).
//!
//! What the supervisor does about a change (stop or start the moved slots, or restart) is
//! `handover.rs`'s; the [`Ending`] a change carries says how the open transactions of the
//! slots given up end: committed when the change is a clean hand-over ([`Ending::Stop`]:
//! slots assigned or revoked), aborted when slots were lost ([`Ending::Failure`]: the group
//! went on without us, or a produce or commit was fenced).
//! - Starting a slot: its producer (`transactional.id = mongo-kafka-bridge-<name>-<s>`;
//!   exactly-once calls `init_transactions` first, which fences any zombie owner and ends its
//!   open transaction), then its checkpoint partition read `read_committed` to its end, then
//!   its readers.
//! - A change that leaves the owned slots as they were is [`Reaction::Unchanged`].
//! - Fenced while the group still hands the slot to this daemon (a stray producer's
//!   `init_transactions` on the slot's `transactional.id`, an overtaken start attempt, a
//!   transaction the broker aborted): the slot is dropped, then [`Ownership::take_again`]
//!   after a delay takes it over from the start, unless the group revoked or lost it
//!   meanwhile (another daemon owns it: its fence was legitimate). Issue 21: a fenced slot
//!   used to stay dropped for good, its partition still assigned here, so nobody published
//!   its changes.
//!
//! A single daemon is assigned every slot, so it runs every reader, as before slots.

use std::collections::BTreeSet;

use super::ledger::Ending;

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

/// What the supervisor does about a change of the slots it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// The owned slots are as they were.
    Unchanged,
    /// Wind the launch down, ending the open transactions this way, and start again with
    /// the slots owned now.
    Restart(Ending),
}

/// The slots this daemon owns.
#[derive(Debug, Default)]
pub struct Ownership {
    /// The pipeline's slot count: partitions beyond it (a checkpoint topic shared with a
    /// pipeline of more slots) are not slots of this pipeline.
    slots: u32,
    owned: BTreeSet<i32>,
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

    /// What to do about `change`; the owned slots are updated.
    pub fn apply(&mut self, change: &Change) -> Reaction {
        let (slots, ending) = match change {
            Change::Assigned(slots) => {
                let mut taken = false;
                for &slot in slots {
                    self.fenced.remove(&slot);
                    if self.is_slot(slot) {
                        taken |= self.owned.insert(slot);
                    }
                }
                return self.moved(taken, Ending::Stop);
            }
            Change::Revoked(slots) => (slots, Ending::Stop),
            Change::Lost(slots) => (slots, Ending::Failure),
        };
        let mut given_up = false;
        for &slot in slots {
            // The group moved it: whoever owns it now fenced it rightly.
            self.fenced.remove(&slot);
            given_up |= self.owned.remove(&slot);
        }
        self.moved(given_up, ending)
    }

    fn moved(&mut self, moved: bool, ending: Ending) -> Reaction {
        if !moved {
            return Reaction::Unchanged;
        }
        self.rebalances += 1;
        Reaction::Restart(ending)
    }

    /// A produce or commit of `slot` failed with a fencing error: another producer took its
    /// `transactional.id`. The slot is dropped (nothing else restarts) and remembered as
    /// fenced: unless the group moves it meanwhile, [`Ownership::take_again`] takes it back.
    pub fn fenced(&mut self, slot: i32) -> Reaction {
        // Fenced again before it was taken again (a produce and a commit failing alike):
        // dropped already, and still to be taken again.
        if self.fenced.contains(&slot) {
            return Reaction::Unchanged;
        }
        let reaction = self.apply(&Change::Lost(vec![slot]));
        if reaction != Reaction::Unchanged {
            self.fenced.insert(slot);
        }
        reaction
    }

    /// Takes the fenced slots the group still hands to this daemon over again, from the
    /// start (their fence aborts whatever the fencing producer left open).
    pub fn take_again(&mut self) -> Reaction {
        let slots: Vec<i32> = std::mem::take(&mut self.fenced).into_iter().collect();
        self.apply(&Change::Assigned(slots))
    }

    /// The slots dropped after a fence and not taken again yet: their changes wait.
    pub fn fenced_slots(&self) -> &BTreeSet<i32> {
        &self.fenced
    }

    /// The owned slots.
    pub fn owned(&self) -> &BTreeSet<i32> {
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

    const HAND_OVER: Reaction = Reaction::Restart(Ending::Stop);
    const DROPPED: Reaction = Reaction::Restart(Ending::Failure);

    fn owned(ownership: &Ownership) -> Vec<i32> {
        ownership.owned().iter().copied().collect()
    }

    #[test]
    fn assigned_slots_are_taken_over_by_a_clean_restart() {
        let mut ownership = Ownership::new(4);
        assert_eq!(ownership.apply(&Change::Assigned(vec![1, 3])), HAND_OVER);
        // Cooperative rebalancing assigns increments: what is owned already stays.
        assert_eq!(ownership.apply(&Change::Assigned(vec![1, 2])), HAND_OVER);
        assert_eq!(owned(&ownership), [1, 2, 3]);
        assert_eq!(
            ownership.apply(&Change::Assigned(vec![1, 2])),
            Reaction::Unchanged,
            "owned already"
        );
        assert_eq!(ownership.rebalances(), 2);
    }

    #[test]
    fn a_revoked_slot_is_handed_over_committing_and_a_lost_one_aborting() {
        let mut ownership = Ownership::new(4);
        ownership.apply(&Change::Assigned(vec![0, 1, 2]));
        assert_eq!(ownership.apply(&Change::Revoked(vec![1])), HAND_OVER);
        assert_eq!(
            ownership.apply(&Change::Revoked(vec![1])),
            Reaction::Unchanged,
            "not ours any more"
        );
        assert_eq!(ownership.apply(&Change::Lost(vec![0])), DROPPED);
        assert_eq!(ownership.fenced(2), DROPPED);
        assert_eq!(
            ownership.fenced(2),
            Reaction::Unchanged,
            "fenced twice: dropped once"
        );
        assert_eq!(
            ownership.fenced_slots().iter().copied().collect::<Vec<_>>(),
            [2],
            "and still taken again"
        );
        assert!(owned(&ownership).is_empty());
        // Assigned again later: taken over from the start.
        assert_eq!(ownership.apply(&Change::Assigned(vec![2])), HAND_OVER);
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
        assert_eq!(
            ownership.apply(&Change::Revoked(vec![2])),
            Reaction::Unchanged
        );
        assert_eq!(ownership.take_again(), HAND_OVER);
        assert!(ownership.fenced_slots().is_empty());
        assert_eq!(owned(&ownership), [0, 1]);
        assert_eq!(ownership.take_again(), Reaction::Unchanged, "taken once");
        // A slot assigned by the group while waiting is not taken twice.
        ownership.fenced(0);
        assert_eq!(ownership.apply(&Change::Assigned(vec![0])), HAND_OVER);
        assert_eq!(ownership.take_again(), Reaction::Unchanged);
        // Lost to the group while fenced: not ours to take.
        ownership.fenced(0);
        ownership.apply(&Change::Lost(vec![0]));
        assert_eq!(ownership.take_again(), Reaction::Unchanged);
    }

    #[test]
    fn partitions_beyond_the_pipelines_slots_are_not_its_slots() {
        let mut ownership = Ownership::new(2);
        assert_eq!(
            ownership.apply(&Change::Assigned(vec![1, 2, 15, -1])),
            HAND_OVER
        );
        assert_eq!(owned(&ownership), [1]);
        assert_eq!(
            ownership.apply(&Change::Assigned(vec![5])),
            Reaction::Unchanged
        );
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
                for slot in daemon.owned() {
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
        let dead: Vec<i32> = daemons[1].owned().iter().copied().collect();
        let (a, b) = dead.split_at(dead.len() / 2);
        daemons[0].apply(&Change::Assigned(a.to_vec()));
        daemons[2].apply(&Change::Assigned(b.to_vec()));
        daemons.remove(1);
        assert_eq!(owners(&daemons), [1; 16]);
    }
}
