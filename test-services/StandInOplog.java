// The stand-in's oplog and change streams, replacing mongo-java-server's CollectionBackedOplog
// (whose events lack `ns`, `updateDescription`, `replace`, invalidations and database- and
// deployment-wide streams). Entries are kept in `local.oplog.rs` as before (so an H2 file keeps
// them across restarts, and tokens stay valid) and, for reading, in a map ordered by timestamp.
//
// Entry:  {ts, t, h, v, op: i|u|d|c|n, ns, ui, wall, o, o2}
//   i  o = the inserted document
//   u  o2 = {_id}; o = the new document (a replacement) or {$v: 2, updateDescription: {...}}
//   d  o = {_id}
//   c  ns = db.$cmd; o = {drop: coll} | {renameCollection: "db.a", to: "db.b"} | {dropDatabase: 1}
//   n  the no-op that starts the oplog; streams cannot resume from before it
//
// Resume tokens are {_data: hex}: 16 hex digits of the entry's timestamp for its event, plus "01"
// for the invalidate that follows it, plus "ff" for a point after the entry (post-batch tokens).
// Tokens of stock mongo-java-server (the bare timestamp in hex) read as event tokens.

import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.backend.AbstractCursor;
import de.bwaldvogel.mongo.backend.Cursor;
import de.bwaldvogel.mongo.backend.CursorRegistry;
import de.bwaldvogel.mongo.backend.Utils;
import de.bwaldvogel.mongo.backend.aggregation.Aggregation;
import de.bwaldvogel.mongo.bson.BsonTimestamp;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.exception.ErrorCode;
import de.bwaldvogel.mongo.exception.FailedToParseException;
import de.bwaldvogel.mongo.exception.MongoServerError;
import de.bwaldvogel.mongo.oplog.Oplog;
import de.bwaldvogel.mongo.wire.bson.BsonEncoder;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.time.Instant;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentNavigableMap;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.stream.Collectors;

final class StandInOplog implements Oplog {
    static final int EVENT = 0;
    static final int INVALIDATE = 1;
    static final int AFTER = 0xff;

    private static final Set<String> INTERNAL_DATABASES = Set.of("admin", "config", "local");
    private static final Set<String> SPEC_FIELDS = Set.of("fullDocument", "fullDocumentBeforeChange", "resumeAfter",
        "startAfter", "startAtOperationTime", "allChangesForCluster", "showMigrationEvents", "allowToRunOnConfigDB",
        "allowToRunOnSystemNS");
    private static final Set<String> STAGES = Set.of("$match", "$project", "$addFields", "$set", "$unset",
        "$replaceRoot", "$replaceWith", "$redact");
    private static final int DEFAULT_FIRST_BATCH = 101;
    private static final int MAX_BATCH_BYTES = 16 * 1024 * 1024;
    private static final int MAX_PENDING = 1000;

    /** Reads documents for `fullDocument: updateLookup` without creating databases. */
    interface Documents {
        Document findById(String database, String collection, Object id);
    }

    private static volatile StandInOplog active;

    private final MongoCollection<Document> collection;
    private final CursorRegistry cursorRegistry;
    private final Documents documents;
    private final ConcurrentSkipListMap<Long, Document> entries = new ConcurrentSkipListMap<>();
    private final UUID ui = UUID.randomUUID();
    private final Object appendLock = new Object();
    private final Set<Runnable> listeners = ConcurrentHashMap.newKeySet();
    private final long floor;
    private volatile long last;

    StandInOplog(MongoCollection<Document> collection, CursorRegistry cursorRegistry, Documents documents) {
        this.collection = collection;
        this.cursorRegistry = cursorRegistry;
        this.documents = documents;
        collection.queryAllAsStream().forEach(entry -> {
            if (entry.get("ts") instanceof BsonTimestamp ts) {
                entries.put(ts.getValue(), entry);
            }
        });
        if (entries.isEmpty()) {
            appendAll(List.of(entry("n", "", new Document("msg", "initiating set"))));
        } else {
            last = Math.max(entries.lastKey(), Instant.now().getEpochSecond() << 32);
        }
        // Whole seconds, so startAtOperationTime {t: <start second>, i: 0} is still in the history.
        floor = entries.firstKey() & 0xffffffff00000000L;
        active = this;
    }

    static StandInOplog active() {
        return active;
    }

    // ---- writing ----------------------------------------------------------------------------

    private static boolean logged(String namespace) {
        String database = Utils.getDatabaseNameFromFullName(namespace);
        String coll = namespace.substring(database.length() + 1);
        return !database.equals("local") && !coll.startsWith("system.");
    }

    private Document entry(String op, String namespace, Document o) {
        return new Document()
            .append("op", op)
            .append("ns", namespace)
            .append("ui", ui)
            .append("o", o);
    }

    /** Gives the entries their timestamps, in order, and stores them; under one lock, so a
     * reader that sees an entry has seen every earlier one. */
    private void appendAll(List<Document> partial) {
        if (partial.isEmpty()) {
            return;
        }
        synchronized (appendLock) {
            List<Document> complete = new ArrayList<>(partial.size());
            for (Document p : partial) {
                Instant now = Instant.now();
                long ts = Math.max((now.getEpochSecond() << 32) | 1, last + 1);
                Document entry = new Document()
                    .append("ts", new BsonTimestamp(ts))
                    .append("t", 1L)
                    .append("h", 0L)
                    .append("v", 2L)
                    .append("op", p.get("op"))
                    .append("ns", p.get("ns"))
                    .append("ui", p.get("ui"))
                    .append("wall", now)
                    .append("o", p.get("o"));
                if (p.containsKey("o2")) {
                    entry.append("o2", p.get("o2"));
                }
                complete.add(entry);
                entries.put(ts, entry);
                last = ts;
            }
            collection.addDocuments(complete.stream());
        }
        for (Runnable listener : listeners) {
            listener.run();
        }
    }

    /** Runs `listener` whenever entries are appended, until removed. */
    void addListener(Runnable listener) {
        listeners.add(listener);
    }

    void removeListener(Runnable listener) {
        listeners.remove(listener);
    }

    void logInserts(String namespace, List<Document> inserted) {
        if (!logged(namespace)) {
            return;
        }
        appendAll(inserted.stream()
            .map(document -> entry("i", namespace, document.cloneDeeply()))
            .collect(Collectors.toList()));
    }

    /** Updates from their images: a replacement when the specification has no operators. */
    void logUpdates(String namespace, Object specification, List<Document[]> images) {
        if (!logged(namespace)) {
            return;
        }
        Document spec = specification instanceof Document d ? d : null;
        boolean replacement = spec != null && spec.keySet().stream().noneMatch(k -> k.startsWith("$"));
        List<Document> updates = new ArrayList<>();
        for (Document[] image : images) {
            Document before = image[0];
            Document after = image[1];
            Document o = replacement
                ? after.cloneDeeply()
                : new Document("$v", 2).append("updateDescription", UpdateDescription.describe(before, after, spec));
            updates.add(entry("u", namespace, o).append("o2", new Document("_id", after.get("_id"))));
        }
        appendAll(updates);
    }

    void logDeletes(String namespace, List<Object> ids) {
        if (!logged(namespace)) {
            return;
        }
        appendAll(ids.stream()
            .map(id -> entry("d", namespace, new Document("_id", id)))
            .collect(Collectors.toList()));
    }

    void logRename(String from, String to) {
        if (!logged(from)) {
            return;
        }
        String database = Utils.getDatabaseNameFromFullName(from);
        appendAll(List.of(entry("c", database + ".$cmd", new Document("renameCollection", from).append("to", to))));
    }

    void logDropDatabase(String database) {
        if (!database.equals("local")) {
            appendAll(List.of(entry("c", database + ".$cmd", new Document("dropDatabase", 1))));
        }
    }

    @Override
    public void handleInsert(String namespace, List<Document> inserted) {
        StandInBackends.WriteRecorder.Batch batch = StandInBackends.WriteRecorder.take(namespace);
        if (batch == null) {
            logInserts(namespace, inserted);
        } else if (!batch.consumed) {
            logInserts(namespace, batch.inserted);
        }
    }

    @Override
    public void handleUpdate(String namespace, Document selector, Document query, List<Object> modifiedIds) {
        StandInBackends.WriteRecorder.Batch batch = StandInBackends.WriteRecorder.current(namespace);
        if (batch != null) {
            logUpdates(namespace, query, batch.updated);
            batch.updated.clear();
            return;
        }
        // Not seen by the recorder (should not happen): what the specification tells.
        if (!logged(namespace)) {
            return;
        }
        boolean replacement = query.keySet().stream().noneMatch(k -> k.startsWith("$"));
        appendAll(modifiedIds.stream()
            .map(id -> entry("u", namespace, replacement
                ? new Document(query).append("_id", id)
                : new Document("$v", 2).append("updateDescription", UpdateDescription.fromSpecification(query)))
                .append("o2", new Document("_id", id)))
            .collect(Collectors.toList()));
    }

    @Override
    public void handleDelete(String namespace, Document query, List<Object> deletedIds) {
        logDeletes(namespace, deletedIds);
    }

    @Override
    public void handleDropCollection(String namespace) {
        if (!logged(namespace) || StandInBackends.WriteRecorder.dropsSuppressed()) {
            return;
        }
        String database = Utils.getDatabaseNameFromFullName(namespace);
        String coll = Utils.getCollectionNameFromFullName(namespace);
        appendAll(List.of(entry("c", database + ".$cmd", new Document("drop", coll))));
    }

    @Override
    public Cursor createCursor(Document changeStreamDocument, String namespace, Aggregation aggregation) {
        // Only reached if a $changeStream bypassed the backend's own handling.
        String database = Utils.getDatabaseNameFromFullName(namespace);
        Scope scope = new Scope(Scope.Kind.COLLECTION, database, Utils.getCollectionNameFromFullName(namespace));
        ChangeStreamCursor cursor = new ChangeStreamCursor(cursorRegistry.generateCursorId(), scope,
            "updateLookup".equals(changeStreamDocument.get("fullDocument")), aggregation,
            startPosition(changeStreamDocument), namespace);
        cursorRegistry.add(cursor);
        return cursor;
    }

    // ---- positions and tokens ----------------------------------------------------------------

    /** A point in the stream: entry `ts`, and within it the event (0), its invalidate (1) or all (ff). */
    record Position(long ts, int sub) {
        boolean before(long entryTs, int entrySub) {
            return ts < entryTs || (ts == entryTs && sub < entrySub);
        }

        Document token() {
            String hex = String.format("%016x", ts);
            return new Document("_data", sub == EVENT ? hex : hex + String.format("%02x", sub));
        }

        static Position of(Object token) {
            if (!(token instanceof Document document) || !(document.get("_data") instanceof String data)
                || data.isEmpty() || data.length() > 18 || (data.length() > 16 && data.length() != 18)) {
                throw new MongoServerError(260, "InvalidResumeToken", "invalid resume token: " + token);
            }
            try {
                if (data.length() <= 16) {
                    return new Position(Long.parseUnsignedLong(data, 16), EVENT);
                }
                return new Position(Long.parseUnsignedLong(data.substring(0, 16), 16),
                    Integer.parseInt(data.substring(16), 16));
            } catch (NumberFormatException e) {
                throw new MongoServerError(260, "InvalidResumeToken", "invalid resume token: " + token);
            }
        }
    }

    private Position startPosition(Document spec) {
        int given = 0;
        for (String option : List.of("resumeAfter", "startAfter", "startAtOperationTime")) {
            if (spec.get(option) != null) {
                given++;
            }
        }
        if (given > 1) {
            throw new MongoServerError(40674, "Only one type of resume option is allowed, but multiple were found.");
        }
        Position start;
        if (spec.get("resumeAfter") != null) {
            start = Position.of(spec.get("resumeAfter"));
            if (start.sub() == INVALIDATE) {
                throw new MongoServerError(260, "InvalidResumeToken", "Attempting to resume a change stream using "
                    + "'resumeAfter' is not allowed from an invalidate notification.");
            }
        } else if (spec.get("startAfter") != null) {
            start = Position.of(spec.get("startAfter"));
            if (start.sub() == INVALIDATE) {
                start = new Position(start.ts(), AFTER);
            }
        } else if (spec.get("startAtOperationTime") != null) {
            if (!(spec.get("startAtOperationTime") instanceof BsonTimestamp time)) {
                throw new MongoServerError(ErrorCode.TypeMismatch, "startAtOperationTime must be a timestamp");
            }
            start = new Position(time.getValue() - 1, AFTER);
            if (time.getValue() < floor) {
                throw historyLost();
            }
            return start;
        } else {
            return new Position(last, AFTER);
        }
        if (start.ts() < floor) {
            throw historyLost();
        }
        return start;
    }

    private static MongoServerError historyLost() {
        return new MongoServerError(286, "ChangeStreamHistoryLost",
            "Resume of change stream was not possible, as the resume point may no longer be in the oplog.");
    }

    // ---- opening and reading streams ----------------------------------------------------------

    /** What a stream watches: one collection, one database, or every database but the internal ones. */
    record Scope(Kind kind, String db, String coll) {
        enum Kind { COLLECTION, DATABASE, CLUSTER }

        boolean watchesData(String database, String collection) {
            return switch (kind) {
                case COLLECTION -> database.equals(db) && collection.equals(coll);
                case DATABASE -> database.equals(db) && !collection.startsWith("system.");
                case CLUSTER -> !INTERNAL_DATABASES.contains(database) && !collection.startsWith("system.");
            };
        }
    }

    /** The reply to `aggregate` with a leading $changeStream stage. */
    Document openChangeStream(String database, Document query) {
        List<Document> pipeline = Aggregation.parse(query.get("pipeline"));
        Object specValue = pipeline.get(0).get("$changeStream");
        if (!(specValue instanceof Document spec)) {
            throw new MongoServerError(ErrorCode.TypeMismatch, "the $changeStream stage must be an object");
        }
        for (String field : spec.keySet()) {
            if (!SPEC_FIELDS.contains(field)) {
                throw new MongoServerError(40415, "IDLUnknownField",
                    "BSON field '$changeStream." + field + "' is an unknown field.");
            }
        }
        Object fullDocument = spec.getOrDefault("fullDocument", "default");
        if (!fullDocument.equals("default") && !fullDocument.equals("updateLookup")) {
            // MongoDB 4.4, which the stand-in claims to be, knows no post-images.
            throw new MongoServerError(ErrorCode.BadValue, "unrecognized value for fullDocument: '" + fullDocument
                + "' (the stand-in, like MongoDB 4.4, supports 'default' and 'updateLookup')");
        }
        Object before = spec.getOrDefault("fullDocumentBeforeChange", "off");
        if (!before.equals("off")) {
            throw new MongoServerError(ErrorCode.BadValue, "fullDocumentBeforeChange: '" + before
                + "' is not supported: the stand-in, like MongoDB 4.4, keeps no pre-images");
        }

        Object target = query.get("aggregate");
        boolean cluster = Utils.isTrue(spec.get("allChangesForCluster"));
        Scope scope;
        String cursorNamespace;
        if (target instanceof String coll) {
            if (cluster) {
                throw new MongoServerError(ErrorCode.InvalidOptions,
                    "A $changeStream with 'allChangesForCluster:true' may only be opened on the 'admin' database, and with no collection name");
            }
            if (INTERNAL_DATABASES.contains(database) || coll.startsWith("system.")) {
                throw new MongoServerError(ErrorCode.InvalidNamespace,
                    "$changeStream may not be opened on the internal " + database + "." + coll + " collection");
            }
            scope = new Scope(Scope.Kind.COLLECTION, database, coll);
            cursorNamespace = database + "." + coll;
        } else if (target instanceof Number number && number.intValue() == 1) {
            if (cluster) {
                if (!database.equals("admin")) {
                    throw new MongoServerError(ErrorCode.InvalidOptions,
                        "A $changeStream with 'allChangesForCluster:true' may only be opened on the 'admin' database");
                }
                scope = new Scope(Scope.Kind.CLUSTER, null, null);
            } else {
                if (INTERNAL_DATABASES.contains(database)) {
                    throw new MongoServerError(ErrorCode.InvalidNamespace,
                        "$changeStream may not be opened on the internal " + database + " database");
                }
                scope = new Scope(Scope.Kind.DATABASE, database, null);
            }
            cursorNamespace = database + ".$cmd.aggregate";
        } else {
            throw new MongoServerError(ErrorCode.FailedToParse, "Invalid aggregate namespace: " + target);
        }

        List<Document> stages = new ArrayList<>();
        for (Document stage : pipeline.subList(1, pipeline.size())) {
            String name = stage.keySet().iterator().next();
            if (stage.size() != 1 || !STAGES.contains(name)) {
                throw new MongoServerError(ErrorCode.IllegalOperation, name + " is not permitted in a $changeStream pipeline");
            }
            switch (name) {
                case "$set" -> stages.add(new Document("$addFields", stage.get(name)));
                case "$replaceWith" -> stages.add(new Document("$replaceRoot", new Document("newRoot", stage.get(name))));
                default -> stages.add(stage);
            }
        }
        Aggregation aggregation = Aggregation.fromPipeline(stages, null, null, null, this);

        if (!(query.get("cursor") instanceof Document cursorOptions)) {
            throw new FailedToParseException("The 'cursor' option is required, except for aggregate with the explain argument");
        }
        int batchSize = cursorOptions.get("batchSize") instanceof Number n ? n.intValue() : DEFAULT_FIRST_BATCH;

        Position start = startPosition(spec);
        long operationTime = last + 1;
        ChangeStreamCursor cursor = new ChangeStreamCursor(cursorRegistry.generateCursorId(), scope,
            fullDocument.equals("updateLookup"), aggregation, start, cursorNamespace);
        List<Document> firstBatch = batchSize == 0 ? List.of() : cursor.takeDocuments(batchSize);
        long cursorId = cursor.isEmpty() ? 0L : cursor.getId();
        if (cursorId != 0) {
            cursorRegistry.add(cursor);
        }
        Document reply = new Document("cursor", new Document()
            .append("firstBatch", firstBatch)
            .append("postBatchResumeToken", cursor.postBatchResumeToken())
            .append("id", cursorId)
            .append("ns", cursorNamespace))
            .append("operationTime", new BsonTimestamp(operationTime));
        Utils.markOkay(reply);
        return reply;
    }

    /** The reply to `getMore` on a change stream cursor. */
    Document getMore(ChangeStreamCursor cursor, Document query) {
        int batchSize = query.get("batchSize") instanceof Number n ? n.intValue() : 0;
        List<Document> nextBatch = cursor.takeDocuments(batchSize);
        long cursorId = cursor.getId();
        if (cursor.isEmpty()) {
            cursorRegistry.remove(cursor);
            cursorId = 0L;
        }
        Document reply = new Document("cursor", new Document()
            .append("nextBatch", nextBatch)
            .append("postBatchResumeToken", cursor.postBatchResumeToken())
            .append("id", cursorId)
            .append("ns", cursor.namespace));
        Utils.markOkay(reply);
        return reply;
    }

    /** The change stream cursor with this id, or null (none, or another kind of cursor). */
    ChangeStreamCursor changeStreamCursor(long cursorId) {
        try {
            return cursorRegistry.getCursor(cursorId) instanceof ChangeStreamCursor c ? c : null;
        } catch (RuntimeException notFound) {
            return null;
        }
    }

    /** An event of an entry, before the stream's own pipeline stages. */
    private record Rendered(int sub, Document event) {
    }

    private List<Rendered> render(Document entry, Scope scope, boolean lookup) {
        String op = (String) entry.get("op");
        String namespace = (String) entry.get("ns");
        if (op == null || namespace == null || op.equals("n")) {
            return List.of();
        }
        int dot = namespace.indexOf('.');
        String database = namespace.substring(0, dot);
        String coll = namespace.substring(dot + 1);
        long ts = ((BsonTimestamp) entry.get("ts")).getValue();
        Document o = (Document) entry.get("o");

        if (!op.equals("c")) {
            if (!scope.watchesData(database, coll)) {
                return List.of();
            }
            Document ns = new Document("db", database).append("coll", coll);
            Document event;
            switch (op) {
                case "i" -> event = header(entry, ts, EVENT, "insert")
                    .append("fullDocument", o.cloneDeeply())
                    .append("ns", ns)
                    .append("documentKey", new Document("_id", o.get("_id")));
                case "d" -> event = header(entry, ts, EVENT, "delete")
                    .append("ns", ns)
                    .append("documentKey", new Document("_id", o.get("_id")));
                case "u" -> {
                    Document key = new Document("_id", ((Document) entry.get("o2")).get("_id"));
                    boolean replacement = o.keySet().stream().noneMatch(k -> k.startsWith("$"));
                    if (replacement) {
                        event = header(entry, ts, EVENT, "replace")
                            .append("fullDocument", o.cloneDeeply())
                            .append("ns", ns)
                            .append("documentKey", key);
                    } else {
                        event = header(entry, ts, EVENT, "update");
                        if (lookup) {
                            event.append("fullDocument", documents.findById(database, coll, key.get("_id")));
                        }
                        Document description = o.get("updateDescription") instanceof Document d
                            ? d.cloneDeeply()
                            : UpdateDescription.fromSpecification(o); // an entry of stock mongo-java-server
                        event.append("ns", ns).append("documentKey", key).append("updateDescription", description);
                    }
                }
                default -> {
                    return List.of();
                }
            }
            return List.of(new Rendered(EVENT, event));
        }

        List<Rendered> events = new ArrayList<>(2);
        if (o.get("drop") instanceof String dropped) {
            boolean watched = scope.watchesData(database, dropped);
            if (watched) {
                events.add(new Rendered(EVENT, header(entry, ts, EVENT, "drop")
                    .append("ns", new Document("db", database).append("coll", dropped))));
                if (scope.kind() == Scope.Kind.COLLECTION) {
                    events.add(new Rendered(INVALIDATE, header(entry, ts, INVALIDATE, "invalidate")));
                }
            }
        } else if (o.get("renameCollection") instanceof String from && o.get("to") instanceof String to) {
            String fromDb = Utils.getDatabaseNameFromFullName(from);
            String fromColl = from.substring(fromDb.length() + 1);
            String toDb = Utils.getDatabaseNameFromFullName(to);
            String toColl = to.substring(toDb.length() + 1);
            boolean watched = scope.kind() == Scope.Kind.COLLECTION
                ? scope.watchesData(fromDb, fromColl) || scope.watchesData(toDb, toColl)
                : scope.watchesData(fromDb, fromColl);
            if (watched) {
                events.add(new Rendered(EVENT, header(entry, ts, EVENT, "rename")
                    .append("ns", new Document("db", fromDb).append("coll", fromColl))
                    .append("to", new Document("db", toDb).append("coll", toColl))));
                if (scope.kind() == Scope.Kind.COLLECTION) {
                    events.add(new Rendered(INVALIDATE, header(entry, ts, INVALIDATE, "invalidate")));
                }
            }
        } else if (o.containsKey("dropDatabase")) {
            boolean watched = switch (scope.kind()) {
                case COLLECTION -> false;
                case DATABASE -> database.equals(scope.db());
                case CLUSTER -> !INTERNAL_DATABASES.contains(database);
            };
            if (watched) {
                events.add(new Rendered(EVENT, header(entry, ts, EVENT, "dropDatabase")
                    .append("ns", new Document("db", database))));
                if (scope.kind() == Scope.Kind.DATABASE) {
                    events.add(new Rendered(INVALIDATE, header(entry, ts, INVALIDATE, "invalidate")));
                }
            }
        }
        return events;
    }

    private static Document header(Document entry, long ts, int sub, String operationType) {
        Document event = new Document()
            .append("_id", new Position(ts, sub).token())
            .append("operationType", operationType)
            .append("clusterTime", new BsonTimestamp(ts));
        if (entry.get("wall") != null) {
            event.append("wallTime", entry.get("wall"));
        }
        return event;
    }

    private static int bsonSize(Document document) {
        ByteBuf buffer = Unpooled.buffer();
        try {
            BsonEncoder.encodeDocument(document, buffer);
            return buffer.writerIndex();
        } finally {
            buffer.release();
        }
    }

    /** A change stream: its scope, its own stages, and how far it has read the oplog. */
    final class ChangeStreamCursor extends AbstractCursor {
        private final Scope scope;
        private final boolean lookup;
        private final Aggregation aggregation;
        final String namespace;
        /** Everything up to here is in `pending` or returned. */
        private Position scanned;
        /** The last event returned (or the start). */
        private Position returned;
        private final ArrayDeque<Map.Entry<Position, Document>> pending = new ArrayDeque<>();
        private boolean invalidated;

        ChangeStreamCursor(long id, Scope scope, boolean lookup, Aggregation aggregation, Position start, String namespace) {
            super(id);
            this.scope = scope;
            this.lookup = lookup;
            this.aggregation = aggregation;
            this.scanned = start;
            this.returned = start;
            this.namespace = namespace;
        }

        /** After an invalidate, once everything is returned. */
        @Override
        public synchronized boolean isEmpty() {
            return invalidated && pending.isEmpty();
        }

        /** Whether a getMore would return something now (or close the cursor). */
        synchronized boolean ready() {
            fill(MAX_PENDING);
            return !pending.isEmpty() || invalidated;
        }

        @Override
        public synchronized List<Document> takeDocuments(int numberToReturn) {
            int limit = numberToReturn > 0 ? numberToReturn : Integer.MAX_VALUE;
            List<Document> batch = new ArrayList<>();
            long bytes = 0;
            while (batch.size() < limit) {
                if (pending.isEmpty()) {
                    fill(Math.min(limit - batch.size(), MAX_PENDING));
                    if (pending.isEmpty()) {
                        break;
                    }
                }
                Map.Entry<Position, Document> next = pending.peekFirst();
                int size = bsonSize(next.getValue());
                if (!batch.isEmpty() && bytes + size > MAX_BATCH_BYTES) {
                    break;
                }
                pending.pollFirst();
                batch.add(next.getValue());
                bytes += size;
                returned = next.getKey();
            }
            return batch;
        }

        /** The token to resume after this batch: the last event returned, or, if the stream read
         * the oplog beyond it, that point (a high-water mark, as MongoDB returns on empty batches). */
        synchronized Document postBatchResumeToken() {
            if (!pending.isEmpty() || scanned.ts() == returned.ts()) {
                return returned.token();
            }
            return scanned.token();
        }

        private void fill(int wanted) {
            if (invalidated || pending.size() >= wanted || (scanned.sub() == AFTER && last <= scanned.ts())) {
                return;
            }
            ConcurrentNavigableMap<Long, Document> newer = entries.tailMap(scanned.ts(), scanned.sub() != AFTER);
            for (Map.Entry<Long, Document> e : newer.entrySet()) {
                long ts = e.getKey();
                for (Rendered rendered : render(e.getValue(), scope, lookup)) {
                    if (!scanned.before(ts, rendered.sub())) {
                        continue;
                    }
                    if (rendered.sub() == INVALIDATE) {
                        invalidated = true;
                    }
                    Object token = rendered.event().get("_id");
                    for (Document out : aggregation.runStages(java.util.stream.Stream.of(rendered.event()))) {
                        if (!Objects.equals(out.get("_id"), token)) {
                            throw new MongoServerError(280, "ChangeStreamFatalError",
                                "Encountered an event whose _id field, which contains the resume token, was modified by "
                                    + "the pipeline. Modifying the _id field of an event makes it impossible to resume the "
                                    + "stream from that point. Only transformations that retain the unmodified _id field "
                                    + "are allowed.");
                        }
                        pending.addLast(Map.entry(new Position(ts, rendered.sub()), out));
                    }
                }
                scanned = new Position(ts, invalidated ? INVALIDATE : AFTER);
                if (invalidated || pending.size() >= wanted) {
                    break;
                }
            }
        }
    }
}
