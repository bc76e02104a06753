//! Bulk writes: a batch of [`WriteOp`]s becomes `insert`, `update` and `delete` commands,
//! one collection at a time, in record order.
//!
//! Consecutive ops of one kind go in one command. A command is unordered (the server may
//! apply its statements in parallel) when every statement names a different `_id`, and
//! ordered otherwise, so two changes of one document always apply in record order. The
//! commands use collection-level write commands every MongoDB since 2.6 answers (the
//! client-level `bulkWrite` needs 8.0).
//!
//! Failures are sorted per statement: a statement MongoDB refuses for good (duplicate key,
//! validation, a document too large) is reported with its index, for the dead letter topic;
//! anything that may pass on a retry (network, primary step-down, write concern) fails the
//! whole call, and the caller retries the batch (every write model but `insert_one` is
//! idempotent).

use std::collections::HashSet;

use bson::{Bson, RawArrayBuf, RawBson, RawDocumentBuf};

use super::convert::Namespace;
use super::model::{RecordError, Stage, WriteOp, MAX_DOCUMENT_BYTES};

/// Statements per command at most (MongoDB's `maxWriteBatchSize`).
const MAX_STATEMENTS: usize = 100_000;
/// Statement bytes per command at most: a command is one BSON document of at most 16 MiB,
/// so leave room for its envelope.
const MAX_COMMAND_BYTES: usize = 12 * 1024 * 1024;

/// Server error codes that may pass on a retry.
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    64,    // WriteConcernFailed
    100,   // UnsatisfiableWriteConcern
];

/// Command-level server error codes that no retry fixes: the command itself (so one of
/// its statements) is wrong.
const PERMANENT_COMMAND_CODES: &[i32] = &[
    2,     // BadValue
    9,     // FailedToParse
    14,    // TypeMismatch
    10334, // BSONObjectTooLarge
    17419, // document too large (update result)
    16,    // InvalidLength
];

/// One statement of a batch: the index the caller knows it by, where it goes and what it
/// does.
#[derive(Debug, Clone)]
pub struct Item {
    /// The caller's index of the statement.
    pub index: usize,
    /// The collection written.
    pub namespace: Namespace,
    /// The write.
    pub op: WriteOp,
}

/// What a batch did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Statements MongoDB refused for good, by the caller's index.
    pub refused: Vec<(usize, RecordError)>,
    /// Statements applied, by kind: `insert`, `replace`, `update`, `delete`.
    pub applied: Vec<(&'static str, u64)>,
}

/// A failure that may pass on a retry of the whole batch.
#[derive(Debug, thiserror::Error)]
#[error("writing to {namespace}: {source}")]
pub struct Transient {
    /// The collection.
    pub namespace: String,
    /// The driver's or server's error.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The `insert`/`update`/`delete` command an op goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Insert,
    Update,
    Delete,
}

impl Command {
    fn of(op: &WriteOp) -> Self {
        match op {
            WriteOp::Insert(_) => Self::Insert,
            WriteOp::Replace { .. } | WriteOp::Update { .. } => Self::Update,
            WriteOp::Delete { .. } => Self::Delete,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Self::Insert => "documents",
            Self::Update => "updates",
            Self::Delete => "deletes",
        }
    }
}

fn op_kind(op: &WriteOp) -> &'static str {
    match op {
        WriteOp::Insert(_) => "insert",
        WriteOp::Replace { .. } => "replace",
        WriteOp::Update { .. } => "update",
        WriteOp::Delete { .. } => "delete",
    }
}

/// A statement serialized once: its size is known before the command is built.
struct Statement {
    index: usize,
    kind: &'static str,
    id: Option<Bson>,
    bytes: RawDocumentBuf,
}

fn statement(item: &Item) -> Result<RawDocumentBuf, RecordError> {
    let raw = |doc: &bson::Document| {
        RawDocumentBuf::from_document(doc)
            .map_err(|e| RecordError::new(Stage::Write, format!("cannot encode as BSON: {e}")))
    };
    let too_large = |size: usize| {
        RecordError::new(
            Stage::Size,
            format!(
                "the document is {size} bytes as BSON; MongoDB accepts at most {MAX_DOCUMENT_BYTES}"
            ),
        )
    };
    let statement = match &item.op {
        WriteOp::Insert(doc) => {
            let doc = raw(doc)?;
            if doc.as_bytes().len() > MAX_DOCUMENT_BYTES {
                return Err(too_large(doc.as_bytes().len()));
            }
            doc
        }
        WriteOp::Replace {
            filter,
            replacement,
            upsert,
        } => {
            let replacement = raw(replacement)?;
            if replacement.as_bytes().len() > MAX_DOCUMENT_BYTES {
                return Err(too_large(replacement.as_bytes().len()));
            }
            let mut s = RawDocumentBuf::new();
            s.append("q", raw(filter)?);
            s.append("u", replacement);
            s.append("upsert", *upsert);
            s.append("multi", false);
            s
        }
        WriteOp::Update {
            filter,
            update,
            upsert,
        } => {
            let update = match update.to_bson() {
                Bson::Document(doc) => RawBson::Document(raw(&doc)?),
                Bson::Array(stages) => {
                    let mut array = RawArrayBuf::new();
                    for stage in stages {
                        if let Bson::Document(stage) = stage {
                            array.push(raw(&stage)?);
                        }
                    }
                    RawBson::Array(array)
                }
                _ => {
                    return Err(RecordError::new(
                        Stage::Write,
                        "an update is a document or a pipeline",
                    ))
                }
            };
            let mut s = RawDocumentBuf::new();
            s.append("q", raw(filter)?);
            s.append("u", update);
            s.append("upsert", *upsert);
            s.append("multi", false);
            if s.as_bytes().len() > MAX_DOCUMENT_BYTES {
                return Err(too_large(s.as_bytes().len()));
            }
            s
        }
        WriteOp::Delete { filter } => {
            let mut s = RawDocumentBuf::new();
            s.append("q", raw(filter)?);
            s.append("limit", 1);
            s
        }
    };
    Ok(statement)
}

/// Writes `items` (in their order) with `client`. Borrowed, so a caller retrying the batch
/// keeps one copy of it.
pub async fn execute(client: &mongodb::Client, items: &[Item]) -> Result<Outcome, Transient> {
    let mut outcome = Outcome::default();
    // Namespaces in order of first appearance; the order across collections is free.
    let mut namespaces: Vec<Namespace> = Vec::new();
    for item in items {
        if !namespaces.contains(&item.namespace) {
            namespaces.push(item.namespace.clone());
        }
    }
    let writes = namespaces.iter().map(|ns| {
        let mine: Vec<&Item> = items.iter().filter(|i| &i.namespace == ns).collect();
        write_namespace(client, ns, mine)
    });
    for result in futures_util::future::join_all(writes).await {
        let one = result?;
        outcome.refused.extend(one.refused);
        for (kind, n) in one.applied {
            match outcome.applied.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, total)) => *total += n,
                None => outcome.applied.push((kind, n)),
            }
        }
    }
    outcome.refused.sort_by_key(|(index, _)| *index);
    Ok(outcome)
}

async fn write_namespace(
    client: &mongodb::Client,
    namespace: &Namespace,
    items: Vec<&Item>,
) -> Result<Outcome, Transient> {
    let db = client.database(&namespace.db);
    let mut outcome = Outcome::default();
    let mut run: Vec<Statement> = Vec::new();
    let mut run_command = None;
    let mut run_bytes = 0;
    for item in items {
        let command = Command::of(&item.op);
        let bytes = match statement(item) {
            Ok(bytes) => bytes,
            Err(error) => {
                outcome.refused.push((item.index, error));
                continue;
            }
        };
        let fits = run_command == Some(command)
            && run.len() < MAX_STATEMENTS
            && run_bytes + bytes.as_bytes().len() <= MAX_COMMAND_BYTES;
        if !fits && !run.is_empty() {
            if let Some(previous) = run_command {
                send(
                    &db,
                    namespace,
                    previous,
                    std::mem::take(&mut run),
                    &mut outcome,
                )
                .await?;
            }
            run_bytes = 0;
        }
        run_command = Some(command);
        run_bytes += bytes.as_bytes().len();
        run.push(Statement {
            index: item.index,
            kind: op_kind(&item.op),
            id: item.op.document_id().cloned(),
            bytes,
        });
    }
    if let Some(command) = run_command {
        if !run.is_empty() {
            send(&db, namespace, command, run, &mut outcome).await?;
        }
    }
    Ok(outcome)
}

/// Unordered only when every statement names a different `_id`.
fn needs_order(statements: &[Statement]) -> bool {
    let mut seen = HashSet::with_capacity(statements.len());
    statements.iter().any(|s| match &s.id {
        // Bson is not Hash: its canonical extended JSON text is a faithful key.
        Some(id) => !seen.insert(id.clone().into_canonical_extjson().to_string()),
        None => true,
    })
}

/// Sends one command, and again from after each refused statement of an ordered one.
async fn send(
    db: &mongodb::Database,
    namespace: &Namespace,
    command: Command,
    mut statements: Vec<Statement>,
    outcome: &mut Outcome,
) -> Result<(), Transient> {
    let ordered = needs_order(&statements);
    while !statements.is_empty() {
        let mut array = RawArrayBuf::new();
        for s in &statements {
            array.push(s.bytes.clone());
        }
        let mut body = RawDocumentBuf::new();
        body.append(command.name(), namespace.coll.as_str());
        body.append(command.field(), array);
        body.append("ordered", ordered);
        let reply = match db.run_raw_command(body).await {
            Ok(reply) => reply,
            Err(error) => match permanent_code(&error) {
                // One of the statements is refused as a whole command: find which, alone.
                Some(_) if statements.len() > 1 => {
                    for s in statements {
                        Box::pin(send(db, namespace, command, vec![s], outcome)).await?;
                    }
                    return Ok(());
                }
                Some(_) => {
                    let s = &statements[0];
                    outcome
                        .refused
                        .push((s.index, RecordError::new(Stage::Write, error.to_string())));
                    return Ok(());
                }
                None => {
                    return Err(Transient {
                        namespace: namespace.to_string(),
                        source: Box::new(error),
                    })
                }
            },
        };
        if let Ok(concern) = reply.get_document("writeConcernError") {
            return Err(Transient {
                namespace: namespace.to_string(),
                source: format!("write concern error: {concern}").into(),
            });
        }
        let mut failed: Vec<(usize, i32, String)> = Vec::new();
        if let Ok(errors) = reply.get_array("writeErrors") {
            for e in errors {
                let Some(e) = e.as_document() else { continue };
                let index = e
                    .get("index")
                    .and_then(Bson::as_i64_lossy)
                    .and_then(|i| usize::try_from(i).ok())
                    .unwrap_or(usize::MAX);
                let code = e
                    .get("code")
                    .and_then(Bson::as_i64_lossy)
                    .unwrap_or_default();
                let code = i32::try_from(code).unwrap_or(i32::MAX);
                let message = e.get_str("errmsg").unwrap_or("refused").to_owned();
                if TRANSIENT_CODES.contains(&code) {
                    return Err(Transient {
                        namespace: namespace.to_string(),
                        source: format!("write error {code}: {message}").into(),
                    });
                }
                failed.push((index, code, message));
            }
        }
        failed.sort_by_key(|f| f.0);
        let stop = if ordered {
            failed.first().map(|f| f.0)
        } else {
            None
        };
        let attempted = stop.map_or(statements.len(), |i| (i + 1).min(statements.len()));
        let mut applied = 0;
        for (position, s) in statements.iter().take(attempted).enumerate() {
            match failed.iter().find(|f| f.0 == position) {
                Some((_, code, message)) => outcome.refused.push((
                    s.index,
                    RecordError::new(
                        Stage::Write,
                        format!("MongoDB refused the {}: error {code}: {message}", s.kind),
                    ),
                )),
                None => {
                    applied += 1;
                    bump(outcome, s.kind);
                }
            }
        }
        let _ = applied;
        statements.drain(..attempted);
    }
    Ok(())
}

fn bump(outcome: &mut Outcome, kind: &'static str) {
    match outcome.applied.iter_mut().find(|(k, _)| *k == kind) {
        Some((_, n)) => *n += 1,
        None => outcome.applied.push((kind, 1)),
    }
}

fn permanent_code(error: &mongodb::error::Error) -> Option<i32> {
    match &*error.kind {
        mongodb::error::ErrorKind::Command(c) if PERMANENT_COMMAND_CODES.contains(&c.code) => {
            Some(c.code)
        }
        _ => None,
    }
}

trait LossyInt {
    fn as_i64_lossy(&self) -> Option<i64>;
}

impl LossyInt for Bson {
    fn as_i64_lossy(&self) -> Option<i64> {
        match self {
            Bson::Int32(i) => Some(i64::from(*i)),
            Bson::Int64(i) => Some(*i),
            // Integral doubles only: the fraction is checked before the cast.
            Bson::Double(d) if d.fract() == 0.0 && d.is_finite() => Some(*d as i64),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn item(index: usize, op: WriteOp) -> Item {
        Item {
            index,
            namespace: Namespace {
                db: "d".into(),
                coll: "c".into(),
            },
            op,
        }
    }

    fn stmt(i: &Item) -> Statement {
        Statement {
            index: i.index,
            kind: op_kind(&i.op),
            id: i.op.document_id().cloned(),
            bytes: statement(i).expect("encodes"),
        }
    }

    #[test]
    fn distinct_ids_go_unordered_and_repeated_ones_ordered() {
        let a = item(0, WriteOp::Insert(doc! {"_id": 1}));
        let b = item(1, WriteOp::Insert(doc! {"_id": 2}));
        let c = item(
            2,
            WriteOp::Delete {
                filter: doc! {"_id": 1},
            },
        );
        let by_key = item(
            3,
            WriteOp::Delete {
                filter: doc! {"sku": "x"},
            },
        );
        assert!(!needs_order(&[stmt(&a), stmt(&b)]));
        assert!(needs_order(&[stmt(&a), stmt(&b), stmt(&c)]));
        assert!(needs_order(&[stmt(&by_key)]), "no _id: order is kept");
    }

    #[test]
    fn statements_are_shaped_like_the_write_commands() {
        let replace = item(
            0,
            WriteOp::Replace {
                filter: doc! {"_id": 1},
                replacement: doc! {"_id": 1, "a": 2},
                upsert: true,
            },
        );
        let raw = statement(&replace).expect("encodes");
        let doc = raw.to_document().expect("document");
        assert_eq!(
            doc,
            doc! {"q": {"_id": 1}, "u": {"_id": 1, "a": 2}, "upsert": true, "multi": false}
        );
        let delete = statement(&item(
            1,
            WriteOp::Delete {
                filter: doc! {"_id": 1},
            },
        ))
        .expect("encodes")
        .to_document()
        .expect("document");
        assert_eq!(delete, doc! {"q": {"_id": 1}, "limit": 1});
    }

    #[test]
    fn a_document_over_16_mib_is_refused_before_sending() {
        let big = "x".repeat(MAX_DOCUMENT_BYTES);
        let err = statement(&item(0, WriteOp::Insert(doc! {"_id": 1, "big": big})))
            .expect_err("too large");
        assert_eq!(err.stage, Stage::Size);
        assert!(err.message.contains("16777216"), "{err}");
    }
}
