//! How a source supervisor hands slots over (issue 24): what it does when the group moves
//! slots, when a slot's producer is fenced, when a fenced slot is taken again and when a
//! launch finished winding down. Pure: the supervisor reports what happened and performs
//! the [`Action`]s answered; the slots owned are kept by [`Ownership`] inside.
//!
//! The rules:
//! - A change that leaves the owned slots as they were changes nothing: its hand-over (a
//!   revoke or a loss waits in the group's callback) is acknowledged at once.
//! - Before the first start (the group's first assignment starts the pipeline: starting
//!   earlier would fence and read checkpoints for no slot, then again), or once stopped,
//!   nothing runs: the hand-over is acknowledged at once. The first change of the slots
//!   makes the first start attempt ([`Action::Start`]), unless the pipeline is paused (the
//!   resume makes it, [`Handover::started`]) or stopped.
//! - While a launch runs, only the slots that moved stop or start; the slots kept run on
//!   untouched. Revoked or lost slots stop ([`Action::StopSlots`]): their readers stop after
//!   whole batches, their open transactions are committed (revoked) or aborted (lost),
//!   their producers close; the hand-over waits for that. Assigned slots start
//!   ([`Action::StartSlots`]): their producers are fenced, their checkpoints loaded, their
//!   readers started. A slot start finishing late starts only the slots still owned whose
//!   latest start it is ([`Handover::slots_started`]): a slot revoked meanwhile, or
//!   assigned again (a newer start), is not started twice.
//! - While the pipeline starts (no launch runs yet), a change of the slots restarts it
//!   ([`Action::Restart`]): the start attempt under way is overtaken, and the next one
//!   takes the slots owned then.
//! - A restart already under way (a failure, an earlier change, a pause) takes the slots
//!   owned when it starts again: the hand-over waits for its wind-down if one runs, and is
//!   acknowledged at once if only its backoff is pending (nothing runs then).
//! - Every wind-down (a restart, a pause, a stop, a failure, slots stopping) and every slot
//!   start under way is counted ([`Handover::winding_down`]): the hand-overs waiting are
//!   acknowledged only when the last one finished, never while a producer of a revoked slot
//!   may still commit, nor while a start may still fence its producer.
//! - A slot whose producer was fenced is dropped and taken again after a delay
//!   ([`Action::RetakeLater`]), unless the group moves it meanwhile; the pipeline restarts
//!   without it, its transactions aborted. Taking it again restarts the pipeline with the
//!   slots owned then (see `ownership.rs`).

use std::collections::{BTreeMap, BTreeSet};

use super::ledger::Ending;
use super::lifecycle::{Lifecycle, Phase};
use super::ownership::{Change, Ownership, Reaction};

/// What the supervisor does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<T> {
    /// Tell the group these revoked or lost slots are handed over.
    Acknowledge(Vec<T>),
    /// Make this start attempt (the first one: the group assigned the first slots).
    Start(u64),
    /// Wind the launch down, ending its open transactions this way, then start again with
    /// the slots owned then; the hand-overs waiting are acknowledged once it is wound down
    /// ([`Handover::wound_down`]).
    Restart(Ending),
    /// Take this fenced slot again after the fence delay ([`Handover::take_again`]).
    RetakeLater(i32),
    /// Stop these slots, ending their open transactions this way; the others run on. The
    /// hand-overs waiting are acknowledged once they stopped ([`Handover::wound_down`]).
    StopSlots {
        /// The slots given up.
        slots: Vec<i32>,
        /// Committed (revoked) or aborted (lost).
        ending: Ending,
    },
    /// Start these slots beside those running; once prepared, start only those
    /// [`Handover::slots_started`] answers.
    StartSlots {
        /// Which start this is.
        ticket: u64,
        /// The slots taken.
        slots: Vec<i32>,
    },
}

/// The hand-over state of one source pipeline; `T` is how a hand-over is acknowledged.
#[derive(Debug)]
pub struct Handover<T> {
    ownership: Ownership,
    /// The first start attempt began (at the group's first assignment).
    started: bool,
    /// Wind-downs under way.
    winding_down: usize,
    /// Revoked or lost slots waiting for the wind-downs under way.
    waiting: Vec<T>,
    /// The latest start of each slot starting.
    starting: BTreeMap<i32, u64>,
    /// The last ticket handed out.
    tickets: u64,
}

impl<T> Handover<T> {
    /// Nothing owned yet of `slots`, nothing started.
    pub fn new(slots: u32) -> Self {
        Self {
            ownership: Ownership::new(slots),
            started: false,
            winding_down: 0,
            waiting: Vec::new(),
            starting: BTreeMap::new(),
            tickets: 0,
        }
    }

    /// The slots owned, and those waiting after a fence.
    pub fn ownership(&self) -> &Ownership {
        &self.ownership
    }

    /// Whether the first start attempt began: a resume starts the pipeline only then.
    pub fn started(&self) -> bool {
        self.started
    }

    /// The group changed the slots (`done`: the revoke or loss waiting for its hand-over).
    pub fn slots_changed(
        &mut self,
        change: &Change,
        done: Option<T>,
        life: &mut Lifecycle,
    ) -> Vec<Action<T>> {
        let before = self.ownership.owned().clone();
        let Reaction::Restart(ending) = self.ownership.apply(change) else {
            return acknowledge(done.into_iter().collect());
        };
        if life.is_stopped() || !self.started {
            let mut actions = acknowledge(done.into_iter().collect());
            if !life.is_stopped() {
                self.started = true;
                // Paused before it: the resume starts it.
                if !life.is_paused() {
                    actions.push(Action::Start(life.attempt()));
                }
            }
            return actions;
        }
        self.waiting.extend(done);
        if life.phase() == Phase::Running {
            return self.move_slots(&before, ending);
        }
        if life.restart() {
            self.starting.clear();
            vec![Action::Restart(ending)]
        } else if self.winding_down == 0 {
            // Waiting for a restart's backoff: nothing runs, and the next start takes the
            // slots owned then.
            acknowledge(std::mem::take(&mut self.waiting))
        } else {
            Vec::new()
        }
    }

    /// A launch runs: the slots given up stop, the slots taken start, `before` being the
    /// slots owned before the change.
    fn move_slots(&mut self, before: &BTreeSet<i32>, ending: Ending) -> Vec<Action<T>> {
        let owned = self.ownership.owned();
        let given: Vec<i32> = before.difference(owned).copied().collect();
        let taken: Vec<i32> = owned.difference(before).copied().collect();
        let mut actions = Vec::new();
        if given.is_empty() {
            if self.winding_down == 0 {
                actions = acknowledge(std::mem::take(&mut self.waiting));
            }
        } else {
            for slot in &given {
                self.starting.remove(slot);
            }
            actions.push(Action::StopSlots {
                slots: given,
                ending,
            });
        }
        if !taken.is_empty() {
            self.tickets += 1;
            for &slot in &taken {
                self.starting.insert(slot, self.tickets);
            }
            actions.push(Action::StartSlots {
                ticket: self.tickets,
                slots: taken,
            });
        }
        actions
    }

    /// The start `ticket` of `slots` is prepared: the slots to start now, those still owned
    /// whose latest start it is.
    pub fn slots_started(&mut self, ticket: u64, slots: &[i32]) -> Vec<i32> {
        slots
            .iter()
            .copied()
            .filter(|slot| {
                let latest = self.starting.get(slot) == Some(&ticket);
                if latest {
                    self.starting.remove(slot);
                }
                latest && self.ownership.owned().contains(slot)
            })
            .collect()
    }

    /// The producer of `slot` was fenced.
    pub fn fenced(&mut self, slot: i32, life: &mut Lifecycle) -> Vec<Action<T>> {
        let mut actions = Vec::new();
        if self.ownership.fenced(slot) != Reaction::Unchanged {
            actions.push(Action::RetakeLater(slot));
        }
        if life.restart() {
            self.starting.clear();
            actions.push(Action::Restart(Ending::Failure));
        }
        actions
    }

    /// The fence delay passed: the fenced slots the group still assigns here are taken
    /// again. `None` when there is none to take; else whether that restarts the pipeline
    /// now (a restart under way takes them when it starts again).
    pub fn take_again(&mut self, life: &mut Lifecycle) -> Option<Vec<Action<T>>> {
        if life.is_stopped() {
            return None;
        }
        let Reaction::Restart(ending) = self.ownership.take_again() else {
            return None;
        };
        Some(if life.restart() {
            self.starting.clear();
            vec![Action::Restart(ending)]
        } else {
            Vec::new()
        })
    }

    /// A wind-down of the launch (a restart, a pause, a stop, a failure) begins.
    pub fn winding_down(&mut self) {
        self.winding_down += 1;
    }

    /// A wind-down finished: the hand-overs to acknowledge now (once none runs any more).
    pub fn wound_down(&mut self) -> Vec<T> {
        self.winding_down = self.winding_down.saturating_sub(1);
        if self.winding_down > 0 {
            return Vec::new();
        }
        std::mem::take(&mut self.waiting)
    }
}

fn acknowledge<T>(done: Vec<T>) -> Vec<Action<T>> {
    if done.is_empty() {
        Vec::new()
    } else {
        vec![Action::Acknowledge(done)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::source::lifecycle::Origin;

    type Plan = Vec<Action<&'static str>>;

    const CLEAN: Action<&str> = Action::Restart(Ending::Stop);

    fn owned(handover: &Handover<&'static str>) -> Vec<i32> {
        handover.ownership().owned().iter().copied().collect()
    }
    const ABORTED: Action<&str> = Action::Restart(Ending::Failure);

    /// Started and running (launch 1) with slots 0..4.
    fn running() -> (Handover<&'static str>, Lifecycle) {
        let mut handover = Handover::new(4);
        let mut life = Lifecycle::new();
        let plan = handover.slots_changed(&Change::Assigned(vec![0, 1, 2, 3]), None, &mut life);
        assert_eq!(plan, [Action::Start(1)]);
        assert_eq!(life.prepared(1), Some(1));
        (handover, life)
    }

    /// The restart `plan` asked for runs its wind-down to the end: what it acknowledges.
    fn wind_down(handover: &mut Handover<&'static str>) -> Vec<&'static str> {
        handover.winding_down();
        handover.wound_down()
    }

    #[test]
    fn the_first_assignment_makes_the_first_start_and_nothing_runs_before() {
        let mut handover = Handover::new(4);
        let mut life = Lifecycle::new();
        assert!(!handover.started());
        let plan: Plan = handover.slots_changed(&Change::Assigned(vec![1]), None, &mut life);
        assert_eq!(plan, [Action::Start(1)]);
        assert!(handover.started());
        // Assigned more before the start attempt finished: it restarts (the attempt under
        // way is overtaken and launches nothing).
        let plan = handover.slots_changed(&Change::Assigned(vec![2]), None, &mut life);
        assert_eq!(plan, [CLEAN]);
    }

    #[test]
    fn a_revoke_before_the_first_start_is_acknowledged_at_once() {
        let mut handover = Handover::new(4);
        let mut life = Lifecycle::new();
        // A revoke of nothing owned changes nothing.
        let plan = handover.slots_changed(&Change::Revoked(vec![1]), Some("r"), &mut life);
        assert_eq!(plan, [Action::Acknowledge(vec!["r"])]);
        assert!(!handover.started());
    }

    #[test]
    fn a_change_leaving_the_owned_slots_as_they_were_is_acknowledged_at_once() {
        let (mut handover, mut life) = running();
        let plan = handover.slots_changed(&Change::Assigned(vec![2]), None, &mut life);
        assert!(plan.is_empty(), "{plan:?}");
        let plan = handover.slots_changed(&Change::Lost(vec![7]), Some("lost"), &mut life);
        assert_eq!(plan, [Action::Acknowledge(vec!["lost"])]);
        assert!(life.is_current(Origin::Launch(1)));
    }

    #[test]
    fn a_first_assignment_while_paused_waits_for_the_resume() {
        let mut handover = Handover::new(4);
        let mut life = Lifecycle::new();
        assert!(life.pause());
        let plan: Plan = handover.slots_changed(&Change::Assigned(vec![0]), None, &mut life);
        assert!(plan.is_empty(), "{plan:?}");
        assert!(handover.started(), "the resume starts it");
    }

    #[test]
    fn a_stopped_pipeline_acknowledges_at_once_and_never_starts() {
        let mut handover = Handover::new(4);
        let mut life = Lifecycle::new();
        life.stop();
        let plan: Plan = handover.slots_changed(&Change::Assigned(vec![0]), None, &mut life);
        assert!(plan.is_empty());
        assert!(!handover.started());
        let (mut handover, mut life) = running();
        life.stop();
        let plan = handover.slots_changed(&Change::Revoked(vec![0]), Some("r"), &mut life);
        assert_eq!(plan, [Action::Acknowledge(vec!["r"])]);
    }

    #[test]
    fn a_revoke_while_running_stops_only_the_revoked_slots_committing() {
        let (mut handover, mut life) = running();
        let plan = handover.slots_changed(&Change::Revoked(vec![1, 3]), Some("r"), &mut life);
        assert_eq!(
            plan,
            [Action::StopSlots {
                slots: vec![1, 3],
                ending: Ending::Stop
            }]
        );
        assert!(
            life.is_current(Origin::Launch(1)),
            "the launch runs on with slots 0 and 2"
        );
        assert_eq!(wind_down(&mut handover), ["r"]);
        assert_eq!(owned(&handover), [0, 2]);
    }

    #[test]
    fn a_loss_while_running_stops_the_lost_slots_aborting() {
        let (mut handover, mut life) = running();
        let plan = handover.slots_changed(&Change::Lost(vec![1, 2]), Some("l"), &mut life);
        assert_eq!(
            plan,
            [Action::StopSlots {
                slots: vec![1, 2],
                ending: Ending::Failure
            }]
        );
        assert!(life.is_current(Origin::Launch(1)));
        assert_eq!(wind_down(&mut handover), ["l"]);
    }

    #[test]
    fn an_assignment_while_running_starts_only_the_new_slots() {
        let (mut handover, mut life) = running();
        handover.slots_changed(&Change::Revoked(vec![2, 3]), None, &mut life);
        let plan = handover.slots_changed(&Change::Assigned(vec![1, 2, 3]), None, &mut life);
        assert_eq!(
            plan,
            [Action::StartSlots {
                ticket: 1,
                slots: vec![2, 3]
            }]
        );
        assert!(life.is_current(Origin::Launch(1)));
        assert_eq!(handover.slots_started(1, &[2, 3]), [2, 3]);
        assert_eq!(
            handover.slots_started(1, &[2, 3]),
            [0_i32; 0],
            "started once"
        );
    }

    #[test]
    fn a_slot_revoked_while_it_starts_is_not_started() {
        let (mut handover, mut life) = running();
        handover.slots_changed(&Change::Revoked(vec![2, 3]), None, &mut life);
        handover.slots_changed(&Change::Assigned(vec![2, 3]), None, &mut life);
        // The start of 2 and 3 is under way (counted): the revoke of 3 waits for it.
        handover.winding_down();
        let plan = handover.slots_changed(&Change::Revoked(vec![3]), Some("r"), &mut life);
        assert_eq!(
            plan,
            [Action::StopSlots {
                slots: vec![3],
                ending: Ending::Stop
            }]
        );
        assert!(wind_down(&mut handover).is_empty(), "the start still runs");
        assert_eq!(handover.slots_started(1, &[2, 3]), [2]);
        assert_eq!(handover.wound_down(), ["r"]);
    }

    #[test]
    fn a_slot_assigned_again_while_its_first_start_runs_starts_once() {
        let (mut handover, mut life) = running();
        handover.slots_changed(&Change::Revoked(vec![3]), None, &mut life);
        handover.slots_changed(&Change::Assigned(vec![3]), None, &mut life);
        handover.slots_changed(&Change::Revoked(vec![3]), None, &mut life);
        let plan = handover.slots_changed(&Change::Assigned(vec![3]), None, &mut life);
        assert_eq!(
            plan,
            [Action::StartSlots {
                ticket: 2,
                slots: vec![3]
            }]
        );
        assert_eq!(handover.slots_started(1, &[3]), [0_i32; 0], "overtaken");
        assert_eq!(handover.slots_started(2, &[3]), [3]);
    }

    #[test]
    fn a_restart_makes_the_slot_starts_under_way_stale() {
        let (mut handover, mut life) = running();
        handover.slots_changed(&Change::Revoked(vec![3]), None, &mut life);
        handover.slots_changed(&Change::Assigned(vec![3]), None, &mut life);
        assert_eq!(
            handover.fenced(0, &mut life),
            [Action::RetakeLater(0), ABORTED]
        );
        assert_eq!(
            handover.slots_started(1, &[3]),
            [0_i32; 0],
            "the restart starts it"
        );
    }

    #[test]
    fn a_change_during_a_restart_waits_for_its_wind_down_and_restarts_nothing_more() {
        let (mut handover, mut life) = running();
        assert!(life.restart(), "a failure");
        handover.winding_down();
        let plan = handover.slots_changed(&Change::Revoked(vec![0]), Some("a"), &mut life);
        assert!(plan.is_empty(), "the restart under way takes it: {plan:?}");
        let plan = handover.slots_changed(&Change::Lost(vec![1]), Some("b"), &mut life);
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(handover.wound_down(), ["a", "b"]);
        assert_eq!(life.start_again(), Some(2), "one start, with slots 2 and 3");
        assert_eq!(owned(&handover), [2, 3]);
    }

    #[test]
    fn a_change_while_only_a_backoff_is_pending_is_acknowledged_at_once() {
        let (mut handover, mut life) = running();
        assert!(life.restart(), "a failure");
        assert!(wind_down(&mut handover).is_empty());
        let plan = handover.slots_changed(&Change::Revoked(vec![3]), Some("r"), &mut life);
        assert_eq!(plan, [Action::Acknowledge(vec!["r"])]);
    }

    /// Two wind-downs at once (slots stopping, then a stop's, which finds nothing left to
    /// stop and ends first): the hand-over waits for the one still closing producers.
    #[test]
    fn hand_overs_wait_for_every_wind_down_under_way() {
        let (mut handover, mut life) = running();
        handover.slots_changed(&Change::Revoked(vec![0]), Some("r"), &mut life);
        handover.winding_down();
        life.stop();
        handover.winding_down();
        assert!(
            handover.wound_down().is_empty(),
            "the slot's stop still runs"
        );
        assert_eq!(handover.wound_down(), ["r"]);
        assert!(
            handover.wound_down().is_empty(),
            "an unmatched end changes nothing"
        );
    }

    #[test]
    fn a_fenced_slot_is_dropped_aborting_and_taken_again_later() {
        let (mut handover, mut life) = running();
        assert_eq!(
            handover.fenced(2, &mut life),
            [Action::RetakeLater(2), ABORTED]
        );
        // Every producer of the launch fails the same way: one restart, one retake each.
        assert_eq!(handover.fenced(2, &mut life), []);
        assert_eq!(handover.fenced(3, &mut life), [Action::RetakeLater(3)]);
        assert!(wind_down(&mut handover).is_empty());
        assert_eq!(life.start_again(), Some(2));
        assert_eq!(life.prepared(2), Some(2));
        assert_eq!(handover.take_again(&mut life), Some(vec![CLEAN]));
        assert_eq!(handover.ownership().owned().len(), 4);
        assert_eq!(handover.take_again(&mut life), None, "taken once");
    }

    #[test]
    fn a_fenced_slot_the_group_moved_meanwhile_is_not_taken_again() {
        let (mut handover, mut life) = running();
        handover.fenced(2, &mut life);
        let plan = handover.slots_changed(&Change::Revoked(vec![2]), Some("r"), &mut life);
        assert_eq!(plan, [Action::Acknowledge(vec!["r"])], "not ours any more");
        assert_eq!(handover.take_again(&mut life), None);
    }

    #[test]
    fn a_fenced_slot_taken_again_during_a_restart_starts_with_it() {
        let (mut handover, mut life) = running();
        handover.fenced(1, &mut life);
        handover.winding_down();
        assert_eq!(handover.take_again(&mut life), Some(vec![]));
        assert_eq!(handover.ownership().owned().len(), 4);
        life.stop();
        handover.fenced(0, &mut life);
        assert_eq!(handover.take_again(&mut life), None, "stopped");
    }
}
