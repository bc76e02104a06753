//! Source pipelines: MongoDB change streams → Kafka.
//!
//! [`SourceSupervisor`] is the actor the root supervisor starts for each `[[source]]`. It
//! joins the pipeline's consumer group (`membership.rs`), which hands it slots
//! (`slots.rs`, `ownership.rs`; what it does when they move is `handover.rs`); for the owned slots with readers, it fences their producers,
//! loads the checkpoints, starts one [`producer::RecordProducer`] per slot and one
//! [`reader::ChangeStreamReader`] per watched namespace of those slots, restarts a failed
//! reader with backoff from its newest acknowledged position (other readers keep running),
//! restarts the whole pipeline when a producer fails, stops and starts only the slots the
//! group moves while the others run on (a fenced producer loses its slot, taken again after
//! a delay unless the group moves it), and drains everything on stop.

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
