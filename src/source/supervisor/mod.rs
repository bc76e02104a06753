//! [`SourceSupervisor`]: the actor the root supervisor starts for each `[[source]]`. It
//! joins the pipeline's consumer group (`membership.rs`), which hands it slots (`slots.rs`);
//! for the owned slots with readers it fences their producers, loads their checkpoints,
//! starts one [`RecordProducer`] per slot and one [`ChangeStreamReader`] per watched
//! namespace of those slots. It restarts a failed reader with backoff from its newest
//! acknowledged position (the other readers keep running), restarts the whole pipeline when
//! a producer fails, stops and starts only the slots the group moves while the others run
//! on (a fenced producer loses its slot, taken again after a delay unless the group moves
//! it), and drains everything on stop.
//!
//! The actor receives and carries out; what it decides is pure code beside it in `source/`:
//! `lifecycle.rs` (which failures count, which start attempt may launch), `policy.rs`
//! (restart a reader, restart the pipeline, or fail), `restart.rs` (where a restarted
//! reader starts, whether a reader stalled) and `handover.rs` over `ownership.rs` (what to
//! do when the group moves slots or a slot is fenced).
//!
//! One file per concern, each stating its rules:
//! - `state.rs`: the supervisor's state (its struct, the records of its readers and of a
//!   launch, its backoffs), which the other files import.
//! - `actor.rs`: what starts with the actor.
//! - `launch.rs`: a start attempt and its launch; `prepare.rs`: what a start prepares on
//!   Kafka (the slots' producers, the known topics).
//! - `readers.rs`: starting, restarting and stall-checking the readers.
//! - `group.rs`: joining and leaving the group, and its reports.
//! - `slot_moves.rs`: the hand-over carried out: slots started and stopped while a launch
//!   runs, fenced slots taken again, the slots owned and fenced reported.
//! - `wind_down.rs`: winding a launch (or some slots) down, and restarting after it.
//! - `failures.rs`: what a reader's or a producer's failure does.
//! - `control.rs`: stop, pause and resume, snapshots on demand.
//!
//! [`RecordProducer`]: crate::source::producer::RecordProducer
//! [`ChangeStreamReader`]: crate::source::reader::ChangeStreamReader

mod actor;
mod control;
mod failures;
mod group;
mod launch;
mod prepare;
mod readers;
mod slot_moves;
mod state;
mod wind_down;

pub use self::state::SourceSupervisor;
