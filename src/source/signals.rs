//! The signal collection (`signal_collection`): commands written as documents, by Debezium's
//! convention, so any MongoDB client can start or cancel a snapshot on demand. Polled every
//! [`POLL_EVERY`]; each signal is claimed by marking it `processed` (one `findAndModify`, so
//! a signal is taken once even by several daemons) and handed to the pipeline's supervisor
//! as the HTTP endpoint's commands are. What a signal says is read by
//! [`crate::source::reader::snapshot::parse_signal`].

use std::time::Duration;

use actix::WeakRecipient;
use bson::{doc, Document};

use super::reader::snapshot::{parse_signal, Signal};
use crate::ops::control::{Snapshot, SnapshotCommand};

/// How often the signal collection is read.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// Reads `signals` (`db.coll`) of `pipeline` until the supervisor stops.
pub async fn watch(
    pipeline: String,
    signals: String,
    mongo: mongodb::Client,
    supervisor: WeakRecipient<Snapshot>,
) {
    let Some((db, coll)) = signals.split_once('.') else {
        return;
    };
    let collection = mongo.database(db).collection::<Document>(coll);
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        let Some(addr) = supervisor.upgrade() else {
            return;
        };
        loop {
            let claimed = collection
                .find_one_and_update(
                    doc! {"processed": {"$exists": false}},
                    doc! {"$set": {"processed": bson::DateTime::now(), "processed_by": &pipeline}},
                )
                .sort(doc! {"_id": 1})
                .await;
            let signal = match claimed {
                Ok(Some(signal)) => signal,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(pipeline = %pipeline, signal_collection = %signals, %error, "cannot read the signal collection; trying again");
                    break;
                }
            };
            let command = match parse_signal(&signal) {
                Ok(Signal::Execute(request)) => SnapshotCommand::Start(request),
                Ok(Signal::Stop) => SnapshotCommand::Cancel,
                Ok(Signal::Other(kind)) => {
                    tracing::info!(pipeline = %pipeline, signal_collection = %signals, %kind, "signal of a type this daemon does not act on; ignored");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(pipeline = %pipeline, signal_collection = %signals, %error, "signal refused");
                    continue;
                }
            };
            match addr.send(Snapshot(command)).await {
                Ok(Ok(())) => {
                    tracing::info!(pipeline = %pipeline, signal_collection = %signals, id = ?signal.get("_id"), "signal taken");
                }
                Ok(Err(refused)) => {
                    tracing::warn!(pipeline = %pipeline, signal_collection = %signals, id = ?signal.get("_id"), %refused, "signal refused");
                }
                Err(_) => return,
            }
        }
    }
}
