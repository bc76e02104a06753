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
//! whole call, and the caller retries the batch. Every write model but `insert_one` is
//! idempotent; an insert is made so by remembering, across the attempts of one batch,
//! which statements may have been applied: a duplicate key on one of them in a retry is its
//! own earlier write, not a refusal.
//!
//! Every command carries the write concern of the database (the URI's `w`, `journal`,
//! `wtimeoutMS`): `run_raw_command` sends a command as it is given.
//!
//! With a stale write guard (`stale_write_guard = "<field>"`), a replace or update only
//! matches a stored document whose field is not newer than the record's (or that has none),
//! and upserts otherwise: when a newer version is stored, the upsert meets its `_id` (E11000)
//! and the statement is skipped as stale, counted, not refused.

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};

use bson::{Bson, RawBsonRef, RawDocumentBuf};

use super::model::{raw_with_capacity, RawWrite, RecordError, Stage, MAX_DOCUMENT_BYTES};
use super::namespace::Namespace;
use crate::config::{WriteAcknowledgment, WriteConcernConfig};

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

/// The server's duplicate key error.
const DUPLICATE_KEY: i32 = 11000;

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
    pub op: RawWrite,
}

/// What a batch did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Statements MongoDB refused for good, by the caller's index.
    pub refused: Vec<(usize, RecordError)>,
    /// Statements applied, by kind: `insert`, `replace`, `update`, `delete`.
    pub applied: Vec<(&'static str, u64)>,
    /// Statements skipped by the stale write guard: a newer version was stored.
    pub stale: u64,
    /// The BSON bytes of the statements applied (`applied`), as sent to MongoDB.
    pub applied_bytes: u64,
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
    fn of(op: &RawWrite) -> Self {
        match op {
            RawWrite::Insert(_) => Self::Insert,
            RawWrite::Replace { .. } | RawWrite::Update { .. } => Self::Update,
            RawWrite::Delete { .. } => Self::Delete,
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

/// What is known of a statement across the attempts of its batch.
mod state {
    /// Not sent yet.
    pub const UNSENT: u8 = 0;
    /// Sent, and its fate is unknown (the reply was lost, the command failed as a whole):
    /// it may have been applied.
    pub const UNKNOWN: u8 = 1;
    /// Applied.
    pub const APPLIED: u8 = 2;
    /// Refused.
    pub const REFUSED: u8 = 3;
}

/// A statement encoded once per batch: a retry sends the same bytes again.
#[derive(Debug)]
struct Statement {
    index: usize,
    command: Command,
    kind: &'static str,
    id: Option<Vec<u8>>,
    bytes: RawDocumentBuf,
    /// Its filter holds the stale write guard.
    guarded: bool,
    /// One of [`state`]'s values, kept across the attempts of the batch.
    state: AtomicU8,
}

/// What a write error of a statement comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Written after all: an insert retried after it may have been applied meets its own
    /// document.
    Applied,
    /// The guard found a newer version stored: skipped, not an error.
    Stale,
    /// Refused for good.
    Refused,
}

/// What write error `code` of a statement sent as `command` means, the statement `guarded`
/// or not, `prior` being what was known of it before this attempt and `on_id` whether the
/// duplicate key (if it is one) is on `_id`.
fn settle(command: Command, guarded: bool, prior: u8, code: i32, on_id: bool) -> Settled {
    if code != DUPLICATE_KEY || !on_id {
        return Settled::Refused;
    }
    match command {
        Command::Insert if matches!(prior, state::UNKNOWN | state::APPLIED) => Settled::Applied,
        Command::Update if guarded => Settled::Stale,
        _ => Settled::Refused,
    }
}

/// Whether the duplicate key error `error` (a `writeErrors` entry) is on `_id`: its
/// `keyPattern` (MongoDB 4.4+) or else its message names the `_id` index.
fn duplicate_on_id(error: &bson::Document) -> bool {
    match error.get_document("keyPattern") {
        Ok(pattern) => pattern.keys().eq(["_id"]),
        Err(_) => error
            .get_str("errmsg")
            .is_ok_and(|m| m.contains("index: _id_ ") || m.contains("_id_ dup key")),
    }
}

/// A batch made into statements, per collection in order of first appearance (the order
/// across collections is free), once; [`execute`] sends it, as often as it is retried.
#[derive(Debug, Default)]
pub struct Prepared {
    namespaces: Vec<(Namespace, Vec<Statement>)>,
    /// Statements refused before anything was sent (a document over 16 MiB).
    refused: Vec<(usize, RecordError)>,
}

impl Prepared {
    /// The collections written.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.iter().map(|(ns, _)| ns)
    }
}

/// Makes `items` into statements, moving their documents (an insert's document is its
/// statement; a replace's is appended once to its `q`/`u` envelope). With `guard` (the
/// `stale_write_guard` field), replaces and updates that carry the field only match a
/// document whose field is not newer.
pub fn prepare(items: Vec<Item>, guard: Option<&str>) -> Prepared {
    let mut prepared = Prepared::default();
    for item in items {
        let command = Command::of(&item.op);
        let kind = item.op.kind();
        let id = item.op.document_id();
        let (op, guarded) = match guard {
            Some(field) => match guarded(item.op, field) {
                Ok(guarded) => guarded,
                Err(error) => {
                    prepared.refused.push((item.index, error));
                    continue;
                }
            },
            None => (item.op, false),
        };
        let bytes = match statement(op) {
            Ok(bytes) => bytes,
            Err(error) => {
                prepared.refused.push((item.index, error));
                continue;
            }
        };
        let statement = Statement {
            index: item.index,
            command,
            kind,
            id,
            bytes,
            guarded,
            state: AtomicU8::new(state::UNSENT),
        };
        match prepared
            .namespaces
            .iter_mut()
            .find(|(ns, _)| *ns == item.namespace)
        {
            Some((_, statements)) => statements.push(statement),
            None => prepared.namespaces.push((item.namespace, vec![statement])),
        }
    }
    prepared
}

/// The value at the dotted `path` of `doc`, if it is there.
fn raw_path<'a>(doc: &'a bson::RawDocument, path: &str) -> Option<RawBsonRef<'a>> {
    let mut doc = doc;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let value = doc.get(part).ok()??;
        if parts.peek().is_none() {
            return Some(value);
        }
        doc = value.as_document()?;
    }
    None
}

/// `op` with the stale write guard on `field` added to its filter, and whether it was:
/// only a replace, or an update `$set`ting the field, that carries the field is guarded
/// (and the upsert it makes meets a newer stored version as a duplicate `_id`).
fn guarded(op: RawWrite, field: &str) -> Result<(RawWrite, bool), RecordError> {
    let value = match &op {
        RawWrite::Replace {
            filter,
            replacement,
            upsert: true,
        } if filter.get("_id").ok().flatten().is_some() => raw_path(replacement, field),
        RawWrite::Update {
            filter,
            update: bson::RawBson::Document(update),
            upsert: true,
        } if filter.get("_id").ok().flatten().is_some() => {
            update.get_document("$set").ok().and_then(|set| {
                set.get(field)
                    .ok()
                    .flatten()
                    .or_else(|| raw_path(set, field))
            })
        }
        _ => None,
    };
    let Some(value) = value.map(bson::RawBsonRef::to_raw_bson) else {
        return Ok((op, false));
    };
    let guard = |filter: &RawDocumentBuf| -> Result<RawDocumentBuf, RecordError> {
        let mut newer = RawDocumentBuf::new();
        newer.append(field, bson::rawdoc! { "$lte": value.clone() });
        let mut missing = RawDocumentBuf::new();
        missing.append(field, bson::rawdoc! { "$exists": false });
        let mut guarded = filter.clone();
        if guarded.get("$or").ok().flatten().is_some() {
            return Err(RecordError::new(
                Stage::WriteModel,
                "the filter has an `$or` already; the stale write guard cannot be added",
            ));
        }
        let mut or = bson::RawArrayBuf::new();
        or.push(newer);
        or.push(missing);
        guarded.append("$or", or);
        Ok(guarded)
    };
    let op = match op {
        RawWrite::Replace {
            filter,
            replacement,
            upsert,
        } => RawWrite::Replace {
            filter: guard(&filter)?,
            replacement,
            upsert,
        },
        RawWrite::Update {
            filter,
            update,
            upsert,
        } => RawWrite::Update {
            filter: guard(&filter)?,
            update,
            upsert,
        },
        other => return Ok((other, false)),
    };
    Ok((op, true))
}

fn too_large(size: usize) -> RecordError {
    RecordError::new(
        Stage::Size,
        format!(
            "the document is {size} bytes as BSON; MongoDB accepts at most {MAX_DOCUMENT_BYTES}"
        ),
    )
}

/// An empty statement with room for its documents (`documents` bytes) and its envelope (the
/// field names `q`, `u`, `upsert`, `multi` or `limit`, and its flags): eight writes of 500
/// statements are in flight at once, and grown by doubling a statement of about 1 KB held 2.
fn envelope(documents: usize) -> RawDocumentBuf {
    raw_with_capacity(documents + 28)
}

fn statement(op: RawWrite) -> Result<RawDocumentBuf, RecordError> {
    let statement = match op {
        RawWrite::Insert(doc) => {
            if doc.as_bytes().len() > MAX_DOCUMENT_BYTES {
                return Err(too_large(doc.as_bytes().len()));
            }
            doc
        }
        RawWrite::Replace {
            filter,
            replacement,
            upsert,
        } => {
            if replacement.as_bytes().len() > MAX_DOCUMENT_BYTES {
                return Err(too_large(replacement.as_bytes().len()));
            }
            let mut s = envelope(filter.as_bytes().len() + replacement.as_bytes().len());
            s.append_ref("q", RawBsonRef::Document(&filter));
            s.append_ref("u", RawBsonRef::Document(&replacement));
            s.append_ref("upsert", RawBsonRef::Boolean(upsert));
            s.append_ref("multi", RawBsonRef::Boolean(false));
            s
        }
        RawWrite::Update {
            filter,
            update,
            upsert,
        } => {
            let update_bytes = match &update {
                bson::RawBson::Document(d) => d.as_bytes().len(),
                bson::RawBson::Array(a) => a.as_bytes().len(),
                _ => 0,
            };
            let mut s = envelope(filter.as_bytes().len() + update_bytes);
            s.append_ref("q", RawBsonRef::Document(&filter));
            s.append_ref("u", update.as_raw_bson_ref());
            s.append_ref("upsert", RawBsonRef::Boolean(upsert));
            s.append_ref("multi", RawBsonRef::Boolean(false));
            if s.as_bytes().len() > MAX_DOCUMENT_BYTES {
                return Err(too_large(s.as_bytes().len()));
            }
            s
        }
        RawWrite::Delete { filter } => {
            let mut s = envelope(filter.as_bytes().len());
            s.append_ref("q", RawBsonRef::Document(&filter));
            s.append_ref("limit", RawBsonRef::Int32(1));
            s
        }
    };
    Ok(statement)
}

/// The command `{<name>: <coll>, <field>: [statements...], ordered: <ordered>}`, each
/// statement's bytes copied once, straight into place (the driver takes the command by
/// value, so each attempt gets its own).
fn command_body(
    command: Command,
    coll: &str,
    statements: &[Statement],
    ordered: bool,
) -> Result<RawDocumentBuf, bson::raw::Error> {
    let mut head = RawDocumentBuf::new();
    head.append_ref(command.name(), RawBsonRef::String(coll));
    let mut bytes = head.into_bytes();
    // Drop the document's terminating NUL: more elements follow.
    bytes.pop();
    let size: usize = statements
        .iter()
        .map(|s| s.bytes.as_bytes().len() + 8)
        .sum();
    bytes.reserve(size + 64);
    bytes.push(0x04);
    bytes.extend_from_slice(command.field().as_bytes());
    bytes.push(0);
    let array_start = bytes.len();
    bytes.extend_from_slice(&[0; 4]);
    for (i, s) in statements.iter().enumerate() {
        bytes.push(0x03);
        // Writing into a Vec cannot fail.
        let _ = write!(bytes, "{i}");
        bytes.push(0);
        bytes.extend_from_slice(s.bytes.as_bytes());
    }
    bytes.push(0);
    let array_len = i32::try_from(bytes.len() - array_start).unwrap_or(i32::MAX);
    bytes[array_start..array_start + 4].copy_from_slice(&array_len.to_le_bytes());
    bytes.push(0x08);
    bytes.extend_from_slice(b"ordered\0");
    bytes.push(u8::from(ordered));
    bytes.push(0);
    let total = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    bytes[0..4].copy_from_slice(&total.to_le_bytes());
    RawDocumentBuf::from_bytes(bytes)
}

/// The `writeConcern` document of a sink's own `write_concern`.
pub fn write_concern_of(config: &WriteConcernConfig) -> RawDocumentBuf {
    let mut concern = RawDocumentBuf::new();
    match &config.w {
        Some(WriteAcknowledgment::Nodes(n)) => {
            concern.append("w", i64::from(*n));
        }
        Some(WriteAcknowledgment::Named(name)) => concern.append("w", name.as_str()),
        None => {}
    }
    if let Some(journal) = config.journal {
        concern.append("j", journal);
    }
    if let Some(timeout) = config.wtimeout {
        concern.append(
            "wtimeout",
            i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
        );
    }
    concern
}

/// Writes `prepared` with `client`; borrowed, so a retry sends the same statements. Every
/// command carries `concern` (a sink's own `write_concern`), or else the database's.
pub async fn execute(
    client: &mongodb::Client,
    prepared: &Prepared,
    concern: Option<&RawDocumentBuf>,
) -> Result<Outcome, Transient> {
    let mut outcome = Outcome {
        refused: prepared.refused.clone(),
        ..Outcome::default()
    };
    let writes = prepared
        .namespaces
        .iter()
        .map(|(ns, statements)| write_namespace(client, ns, statements, concern));
    for result in futures_util::future::join_all(writes).await {
        let one = result?;
        outcome.refused.extend(one.refused);
        outcome.stale += one.stale;
        outcome.applied_bytes += one.applied_bytes;
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

/// The write concern every command to `db` carries: the database's (from the client's
/// options, so the URI's `w`, `journal` and `wtimeoutMS`), if any is set.
fn write_concern(
    db: &mongodb::Database,
    namespace: &Namespace,
) -> Result<Option<RawDocumentBuf>, Transient> {
    let Some(concern) = db
        .write_concern()
        .filter(|c| *c != &mongodb::options::WriteConcern::default())
    else {
        return Ok(None);
    };
    bson::to_raw_document_buf(concern)
        .map(Some)
        .map_err(|e| Transient {
            namespace: namespace.to_string(),
            source: Box::new(e),
        })
}

async fn write_namespace(
    client: &mongodb::Client,
    namespace: &Namespace,
    statements: &[Statement],
    own_concern: Option<&RawDocumentBuf>,
) -> Result<Outcome, Transient> {
    let db = client.database(&namespace.db);
    let concern = match own_concern {
        Some(concern) => Some(concern.clone()),
        None => write_concern(&db, namespace)?,
    };
    let mut outcome = Outcome::default();
    let mut start = 0;
    while start < statements.len() {
        let command = statements[start].command;
        let mut end = start;
        let mut bytes = 0;
        while end < statements.len()
            && statements[end].command == command
            && end - start < MAX_STATEMENTS
            && (end == start || bytes + statements[end].bytes.as_bytes().len() <= MAX_COMMAND_BYTES)
        {
            bytes += statements[end].bytes.as_bytes().len();
            end += 1;
        }
        let target = Target {
            db: &db,
            namespace,
            concern: concern.as_ref(),
        };
        send(&target, command, &statements[start..end], &mut outcome).await?;
        start = end;
    }
    Ok(outcome)
}

/// Where a command goes, and the write concern it carries.
struct Target<'a> {
    db: &'a mongodb::Database,
    namespace: &'a Namespace,
    concern: Option<&'a RawDocumentBuf>,
}

/// Unordered only when every statement names a different `_id`.
fn needs_order(statements: &[Statement]) -> bool {
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(statements.len());
    statements.iter().any(|s| match &s.id {
        // Bson is not Hash: its canonical extended JSON text is a faithful key.
        Some(id) => !seen.insert(id.as_slice()),
        None => true,
    })
}

/// Sends one command, and again from after each refused statement of an ordered one.
async fn send(
    target: &Target<'_>,
    command: Command,
    mut statements: &[Statement],
    outcome: &mut Outcome,
) -> Result<(), Transient> {
    let namespace = target.namespace;
    let transient = |source: Box<dyn std::error::Error + Send + Sync>| Transient {
        namespace: namespace.to_string(),
        source,
    };
    let ordered = needs_order(statements);
    while !statements.is_empty() {
        let mut body = command_body(command, &namespace.coll, statements, ordered)
            .map_err(|e| transient(Box::new(e)))?;
        if let Some(concern) = target.concern {
            body.append_ref("writeConcern", RawBsonRef::Document(concern));
        }
        // What was known before this attempt; from now on, each may have been applied.
        let prior: Vec<u8> = statements
            .iter()
            .map(|s| {
                let prior = s.state.load(Ordering::SeqCst);
                if prior == state::UNSENT {
                    s.state.store(state::UNKNOWN, Ordering::SeqCst);
                }
                prior
            })
            .collect();
        let reply = match target.db.run_raw_command(body).await {
            Ok(reply) => reply,
            Err(error) => match permanent_code(&error) {
                // One of the statements is refused as a whole command: find which, alone.
                Some(_) if statements.len() > 1 => {
                    for (s, prior) in statements.iter().zip(&prior) {
                        s.state.store(*prior, Ordering::SeqCst);
                    }
                    for s in statements {
                        Box::pin(send(target, command, std::slice::from_ref(s), outcome)).await?;
                    }
                    return Ok(());
                }
                Some(_) => {
                    let s = &statements[0];
                    s.state.store(state::REFUSED, Ordering::SeqCst);
                    outcome
                        .refused
                        .push((s.index, RecordError::new(Stage::Write, error.to_string())));
                    return Ok(());
                }
                None => return Err(transient(Box::new(error))),
            },
        };
        if let Ok(concern) = reply.get_document("writeConcernError") {
            return Err(transient(format!("write concern error: {concern}").into()));
        }
        let mut failed: Vec<(usize, i32, String, bool)> = Vec::new();
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
                    return Err(transient(format!("write error {code}: {message}").into()));
                }
                failed.push((index, code, message, duplicate_on_id(e)));
            }
        }
        failed.sort_by_key(|f| f.0);
        let stop = if ordered {
            failed.first().map(|f| f.0)
        } else {
            None
        };
        let attempted = stop.map_or(statements.len(), |i| (i + 1).min(statements.len()));
        for (position, s) in statements.iter().enumerate().take(attempted) {
            let settled = match failed.iter().find(|f| f.0 == position) {
                None => Settled::Applied,
                Some((_, code, message, on_id)) => {
                    match settle(command, s.guarded, prior[position], *code, *on_id) {
                        Settled::Refused => {
                            outcome.refused.push((
                                s.index,
                                RecordError::new(
                                    Stage::Write,
                                    format!(
                                        "MongoDB refused the {}: error {code}: {message}",
                                        s.kind
                                    ),
                                ),
                            ));
                            Settled::Refused
                        }
                        other => other,
                    }
                }
            };
            match settled {
                Settled::Applied => {
                    s.state.store(state::APPLIED, Ordering::SeqCst);
                    bump(outcome, s);
                }
                Settled::Stale => {
                    s.state.store(state::APPLIED, Ordering::SeqCst);
                    outcome.stale += 1;
                }
                Settled::Refused => s.state.store(state::REFUSED, Ordering::SeqCst),
            }
        }
        // An ordered command stopped at its first error: what follows was not attempted.
        for (s, prior) in statements.iter().zip(&prior).skip(attempted) {
            s.state.store(*prior, Ordering::SeqCst);
        }
        statements = &statements[attempted..];
    }
    Ok(())
}

fn bump(outcome: &mut Outcome, statement: &Statement) {
    let kind = statement.kind;
    outcome.applied_bytes += statement.bytes.as_bytes().len() as u64;
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
    use bson::{doc, Document};

    use crate::sink::model::WriteOp;

    fn item(index: usize, op: WriteOp) -> Item {
        Item {
            index,
            namespace: Namespace {
                db: "d".into(),
                coll: "c".into(),
            },
            op: RawWrite::encode(&op).expect("encodes"),
        }
    }

    fn stmt(i: Item) -> Statement {
        Statement {
            index: i.index,
            command: Command::of(&i.op),
            kind: i.op.kind(),
            id: i.op.document_id(),
            bytes: statement(i.op).expect("encodes"),
            guarded: false,
            state: AtomicU8::new(state::UNSENT),
        }
    }

    #[test]
    fn distinct_ids_go_unordered_and_repeated_ones_ordered() {
        let a = || item(0, WriteOp::Insert(doc! {"_id": 1}));
        let b = || item(1, WriteOp::Insert(doc! {"_id": 2}));
        let c = || {
            item(
                2,
                WriteOp::Delete {
                    filter: doc! {"_id": 1},
                },
            )
        };
        let by_key = item(
            3,
            WriteOp::Delete {
                filter: doc! {"sku": "x"},
            },
        );
        assert!(!needs_order(&[stmt(a()), stmt(b())]));
        assert!(needs_order(&[stmt(a()), stmt(b()), stmt(c())]));
        assert!(needs_order(&[stmt(by_key)]), "no _id: order is kept");
        // 1 and 1L are different values to the order check, as they were before.
        let long = item(4, WriteOp::Insert(doc! {"_id": 1i64}));
        assert!(!needs_order(&[stmt(a()), stmt(long)]));
    }

    #[test]
    fn a_statement_holds_no_room_beyond_its_bytes() {
        // Eight writes of 500 such statements are in flight at once: grown by doubling, a
        // statement of about 1 KB held 2 KiB (heaptrack, 32 partitions: 8.4 MiB of them).
        let big = "x".repeat(1_000);
        let ops = [
            WriteOp::Replace {
                filter: doc! {"_id": 1},
                replacement: doc! {"_id": 1, "a": big.clone()},
                upsert: true,
            },
            WriteOp::Update {
                filter: doc! {"_id": 1},
                update: crate::sink::model::UpdateSpec::Operators(doc! {"$set": {"a": big}}),
                upsert: true,
            },
            WriteOp::Delete {
                filter: doc! {"_id": 1},
            },
        ];
        for op in ops {
            let bytes = statement(item(0, op).op).expect("encodes").into_bytes();
            assert!(
                bytes.capacity() <= bytes.len() + 16,
                "{} bytes held in {}",
                bytes.len(),
                bytes.capacity()
            );
        }
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
        let raw = statement(replace.op).expect("encodes");
        let doc = raw.to_document().expect("document");
        assert_eq!(
            doc,
            doc! {"q": {"_id": 1}, "u": {"_id": 1, "a": 2}, "upsert": true, "multi": false}
        );
        let delete = statement(
            item(
                1,
                WriteOp::Delete {
                    filter: doc! {"_id": 1},
                },
            )
            .op,
        )
        .expect("encodes")
        .to_document()
        .expect("document");
        assert_eq!(delete, doc! {"q": {"_id": 1}, "limit": 1});
    }

    #[test]
    fn the_command_holds_the_statements_as_an_array() {
        let statements: Vec<Statement> = (0..12)
            .map(|i| stmt(item(i, WriteOp::Insert(doc! {"_id": i as i32, "n": "x"}))))
            .collect();
        for ordered in [false, true] {
            let body = command_body(Command::Insert, "coll", &statements, ordered)
                .expect("a document")
                .to_document()
                .expect("valid BSON");
            let documents: Vec<bson::Bson> = (0..12)
                .map(|i| bson::Bson::Document(doc! {"_id": i, "n": "x"}))
                .collect();
            assert_eq!(
                body,
                doc! {"insert": "coll", "documents": documents, "ordered": ordered}
            );
        }
        let empty = command_body(Command::Delete, "c", &[], false)
            .expect("a document")
            .to_document()
            .expect("valid BSON");
        assert_eq!(empty, doc! {"delete": "c", "deletes": [], "ordered": false});
    }

    #[test]
    fn a_sinks_write_concern_is_the_commands() {
        let concern = write_concern_of(&WriteConcernConfig {
            w: Some(WriteAcknowledgment::Named("majority".into())),
            journal: Some(true),
            wtimeout: Some(std::time::Duration::from_millis(2500)),
        });
        assert_eq!(
            concern.to_document().expect("document"),
            doc! {"w": "majority", "j": true, "wtimeout": 2500i64}
        );
        let nodes = write_concern_of(&WriteConcernConfig {
            w: Some(WriteAcknowledgment::Nodes(2)),
            ..WriteConcernConfig::default()
        });
        assert_eq!(nodes.to_document().expect("document"), doc! {"w": 2i64});
    }

    /// Issue 21, item 12: a duplicate `_id` on an insert that may have been applied by an
    /// earlier attempt of its batch is that attempt's own write; the first time, or on
    /// another index, it is a refusal.
    #[test]
    fn a_duplicate_id_on_a_retried_insert_is_its_own_earlier_write() {
        use state::{APPLIED, REFUSED, UNKNOWN, UNSENT};
        let insert = |prior, code, on_id| settle(Command::Insert, false, prior, code, on_id);
        assert_eq!(insert(UNKNOWN, DUPLICATE_KEY, true), Settled::Applied);
        assert_eq!(insert(APPLIED, DUPLICATE_KEY, true), Settled::Applied);
        assert_eq!(insert(UNSENT, DUPLICATE_KEY, true), Settled::Refused);
        assert_eq!(insert(REFUSED, DUPLICATE_KEY, true), Settled::Refused);
        assert_eq!(insert(UNKNOWN, DUPLICATE_KEY, false), Settled::Refused);
        assert_eq!(insert(UNKNOWN, 121, true), Settled::Refused);
        // A guarded upsert meeting a newer version is stale; unguarded, a refusal.
        assert_eq!(
            settle(Command::Update, true, UNSENT, DUPLICATE_KEY, true),
            Settled::Stale
        );
        assert_eq!(
            settle(Command::Update, false, UNSENT, DUPLICATE_KEY, true),
            Settled::Refused
        );
        assert!(duplicate_on_id(&doc! {"keyPattern": {"_id": 1}}));
        assert!(!duplicate_on_id(&doc! {"keyPattern": {"sku": 1}}));
        assert!(duplicate_on_id(
            &doc! {"errmsg": "E11000 duplicate key error collection: d.c index: _id_ dup key: { _id: 1 }"}
        ));
        assert!(!duplicate_on_id(
            &doc! {"errmsg": "E11000 duplicate key error collection: d.c index: sku_1 dup key: { sku: 1 }"}
        ));
    }

    /// Issue 21, item 11: the stale write guard goes into the filter of `_id`-based
    /// upserts that carry the field, and nowhere else.
    #[test]
    fn the_stale_write_guard_conditions_upserts_on_the_stored_version() {
        let replace = item(
            0,
            WriteOp::Replace {
                filter: doc! {"_id": 1},
                replacement: doc! {"_id": 1, "meta": {"v": 7}},
                upsert: true,
            },
        );
        let (op, guarded_) = guarded(replace.op, "meta.v").expect("guards");
        assert!(guarded_);
        let RawWrite::Replace { filter, .. } = op else {
            panic!("a replace");
        };
        assert_eq!(
            filter.to_document().expect("document"),
            doc! {"_id": 1, "$or": [{"meta.v": {"$lte": 7}}, {"meta.v": {"$exists": false}}]}
        );
        let update = item(
            1,
            WriteOp::Update {
                filter: doc! {"_id": 2},
                update: crate::sink::model::UpdateSpec::Operators(doc! {"$set": {"v": 3}}),
                upsert: true,
            },
        );
        let (op, guarded_) = guarded(update.op, "v").expect("guards");
        assert!(guarded_);
        let RawWrite::Update { filter, .. } = op else {
            panic!("an update");
        };
        assert_eq!(
            filter.to_document().expect("document"),
            doc! {"_id": 2, "$or": [{"v": {"$lte": 3}}, {"v": {"$exists": false}}]}
        );
        // Without the field, a delete, an insert: unguarded, unchanged.
        for op in [
            WriteOp::Replace {
                filter: doc! {"_id": 1},
                replacement: doc! {"_id": 1},
                upsert: true,
            },
            WriteOp::Delete {
                filter: doc! {"_id": 1},
            },
            WriteOp::Insert(doc! {"_id": 1, "v": 1}),
        ] {
            let raw = item(2, op).op;
            let (same, guarded_) = guarded(raw.clone(), "v").expect("passes");
            assert!(!guarded_);
            assert_eq!(same, raw);
        }
    }

    #[test]
    fn prepare_groups_by_collection_in_order_and_refuses_what_is_too_large() {
        let other = Namespace {
            db: "d".into(),
            coll: "other".into(),
        };
        let mut items = vec![
            item(0, WriteOp::Insert(doc! {"_id": 1})),
            item(1, WriteOp::Insert(doc! {"_id": 2})),
            item(2, WriteOp::Insert(doc! {"_id": 3})),
        ];
        items[1].namespace = other.clone();
        let big = "x".repeat(MAX_DOCUMENT_BYTES);
        items.push(item(3, WriteOp::Insert(doc! {"_id": 4, "big": big})));
        let prepared = prepare(items, None);
        let names: Vec<&Namespace> = prepared.namespaces().collect();
        assert_eq!(names.len(), 2);
        assert_eq!(names[1], &other);
        let first: Vec<usize> = prepared.namespaces[0].1.iter().map(|s| s.index).collect();
        assert_eq!(first, [0, 2]);
        assert_eq!(prepared.refused.len(), 1);
        assert_eq!(prepared.refused[0].0, 3);
        assert_eq!(prepared.refused[0].1.stage, Stage::Size);
        assert!(prepared.refused[0].1.message.contains("16777216"));
        let _: Option<Document> = None;
    }
}
