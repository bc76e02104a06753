//! Source pipelines: MongoDB change streams → Kafka.
//!
//! For each `[[source]]` the root supervisor starts a [`SourceSupervisor`]
//! (`supervisor/`): it joins the pipeline's group of daemons, and for the slots the group
//! hands it, runs one [`producer::RecordProducer`] per slot and one
//! [`reader::ChangeStreamReader`] per watched namespace. A reader reads its change stream
//! (or copies the existing documents first) and hands records to its slot's producer, which
//! publishes them to Kafka and writes the reader's checkpoint once every record before it
//! is acknowledged. The actors receive, do the I/O and carry out what the pure modules
//! decide.
//!
//! Where things are:
//! - The actors: `supervisor/` (one pipeline), `reader/` (one namespace's change stream or
//!   copy), `producer.rs` with `acknowledgements.rs` (one slot's Kafka producer).
//! - The supervisor's decisions, pure: `lifecycle.rs` (starting, running, restarting,
//!   stopped), `policy.rs` (what a failure restarts), `restart.rs` (where a restarted reader
//!   starts, whether a reader stalled), `handover.rs` over `ownership.rs` (what to do when
//!   slots move or are fenced).
//! - Spreading the work over daemons: `slots.rs` (which slot a reader hashes onto),
//!   `membership.rs` (the consumer group that hands slots out), `agreement.rs` (whether the
//!   group's daemons run one configuration).
//! - Positions and checkpoints: `model.rs` (what the parts hand each other), `ledger.rs`
//!   (which position may become a checkpoint, and when), `checkpoint.rs` (how checkpoints
//!   are stored and loaded), `liveness.rs` (when a reader last heard from its stream).
//! - Copies: `copy_plan.rs` (a collection split into ranges), `copy_status.rs` (their
//!   progress); `signals.rs` (snapshots on demand written as documents).
//! - Records and topics: `format.rs` (event → record), `topic.rs` (namespace → topic),
//!   `topic_creation.rs` and `topic_creator.rs` (creating topics), `topic_limits.rs` (the
//!   largest record a topic accepts).
//! - `error.rs`: why a pipeline or reader failed ([`error::SourceError`]).

pub mod acknowledgements;
pub mod agreement;
pub mod checkpoint;
pub mod copy_plan;
pub mod copy_status;
pub mod error;
pub mod format;
pub mod handover;
pub mod ledger;
pub mod lifecycle;
pub mod liveness;
pub mod membership;
pub mod model;
pub mod ownership;
pub mod policy;
pub mod producer;
pub mod reader;
pub mod restart;
pub mod signals;
pub mod slots;
mod supervisor;
pub mod topic;
pub mod topic_creation;
pub mod topic_creator;
pub mod topic_limits;

pub use self::supervisor::SourceSupervisor;
