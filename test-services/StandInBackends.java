// The stand-in's backends: mongo-java-server's memory and H2 backends with StandInOplog as the
// oplog, and with the few commands around change streams handled here:
//   aggregate with $changeStream   on a collection, a database (aggregate: 1) or, on admin with
//                                  allChangesForCluster, the deployment; replies carry
//                                  postBatchResumeToken and operationTime
//   getMore on such a cursor       nextBatch + postBatchResumeToken; waits up to maxTimeMS
//                                  (default 1 s) for events, like MongoDB's awaitData, without
//                                  blocking the connection's event loop (see AwaitData)
//   renameCollection, dropDatabase logged as rename / dropDatabase events
// The collections record their writes while they hold their lock (WriteRecorder), so the oplog
// gets the images an update event needs, only the documents really inserted, and the writes of
// findAndModify, which stock mongo-java-server does not log at all.

import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.MongoDatabase;
import de.bwaldvogel.mongo.backend.ArrayFilters;
import de.bwaldvogel.mongo.backend.CollectionOptions;
import de.bwaldvogel.mongo.backend.CursorRegistry;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.h2.H2Collection;
import de.bwaldvogel.mongo.backend.h2.H2Database;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import de.bwaldvogel.mongo.backend.memory.MemoryCollection;
import de.bwaldvogel.mongo.backend.memory.MemoryDatabase;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.oplog.Oplog;
import de.bwaldvogel.mongo.wire.MongoDatabaseHandler;
import de.bwaldvogel.mongo.wire.message.MongoMessage;
import io.netty.channel.Channel;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelPipeline;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import org.h2.mvstore.MVMap;
import org.h2.mvstore.MVStore;

final class StandInBackends {
    private StandInBackends() {
    }

    /** What the shared command handling needs of either backend. */
    interface Hooks {
        Document superHandleCommand(Channel channel, String database, String command, Document query);

        Document superHandleGetMore(String database, String command, Document query);

        void superDropDatabase(String database);

        Set<String> databaseNames();

        MongoDatabase resolveDatabase(String database);

        CursorRegistry cursors();
    }

    // ---- backends ---------------------------------------------------------------------------

    static final class Memory extends MemoryBackend implements Hooks {
        @Override
        public MemoryDatabase openOrCreateDatabase(String databaseName) {
            return new MemoryDb(databaseName, getCursorRegistry());
        }

        @Override
        protected Oplog createOplog() {
            return Commands.createOplog(this);
        }

        @Override
        public Document handleCommand(Channel channel, String database, String command, Document query) {
            return Commands.handleCommand(this, channel, database, command, query);
        }

        @Override
        protected Document handleGetMore(String database, String command, Document query) {
            return Commands.handleGetMore(this, database, command, query);
        }

        @Override
        public void dropDatabase(String database) {
            Commands.dropDatabase(this, database);
        }

        @Override
        public Document superHandleCommand(Channel channel, String database, String command, Document query) {
            return super.handleCommand(channel, database, command, query);
        }

        @Override
        public Document superHandleGetMore(String database, String command, Document query) {
            return super.handleGetMore(database, command, query);
        }

        @Override
        public void superDropDatabase(String database) {
            super.dropDatabase(database);
        }

        @Override
        public Set<String> databaseNames() {
            return listDatabaseNames();
        }

        @Override
        public CursorRegistry cursors() {
            return getCursorRegistry();
        }
    }

    static final class H2 extends H2Backend implements Hooks {
        H2(String fileName) {
            super(fileName);
        }

        @Override
        protected MongoDatabase openOrCreateDatabase(String databaseName) {
            return new H2Db(databaseName, getMvStore(), getCursorRegistry());
        }

        @Override
        protected Oplog createOplog() {
            return Commands.createOplog(this);
        }

        @Override
        public Document handleCommand(Channel channel, String database, String command, Document query) {
            return Commands.handleCommand(this, channel, database, command, query);
        }

        @Override
        protected Document handleGetMore(String database, String command, Document query) {
            return Commands.handleGetMore(this, database, command, query);
        }

        @Override
        public void dropDatabase(String database) {
            Commands.dropDatabase(this, database);
        }

        @Override
        public Document superHandleCommand(Channel channel, String database, String command, Document query) {
            return super.handleCommand(channel, database, command, query);
        }

        @Override
        public Document superHandleGetMore(String database, String command, Document query) {
            return super.handleGetMore(database, command, query);
        }

        @Override
        public void superDropDatabase(String database) {
            super.dropDatabase(database);
        }

        @Override
        public Set<String> databaseNames() {
            return listDatabaseNames();
        }

        @Override
        public CursorRegistry cursors() {
            return getCursorRegistry();
        }
    }

    // ---- commands shared by both backends ---------------------------------------------------

    static final class Commands {
        private Commands() {
        }

        @SuppressWarnings("unchecked")
        static Oplog createOplog(Hooks backend) {
            MongoDatabase local = backend.resolveDatabase("local");
            MongoCollection<Document> collection = (MongoCollection<Document>) local.resolveCollection("oplog.rs", false);
            if (collection == null) {
                collection = (MongoCollection<Document>) local.createCollectionOrThrowIfExists("oplog.rs");
            }
            return new StandInOplog(collection, backend.cursors(), (database, coll, id) -> {
                if (!backend.databaseNames().contains(database)) {
                    return null;
                }
                MongoCollection<?> target = backend.resolveDatabase(database).resolveCollection(coll, false);
                if (target == null) {
                    return null;
                }
                for (Document document : target.handleQuery(new Document("_id", id), 0, 1)) {
                    return document.cloneDeeply();
                }
                return null;
            });
        }

        static Document handleCommand(Hooks backend, Channel channel, String database, String command, Document query) {
            if (channel != null) {
                AwaitData.install(channel);
            }
            StandInOplog oplog = StandInOplog.active();
            if (oplog != null && command.equalsIgnoreCase("aggregate") && query.get("pipeline") instanceof List<?> pipeline
                && !pipeline.isEmpty() && pipeline.get(0) instanceof Document first && first.containsKey("$changeStream")) {
                return oplog.openChangeStream(database, query);
            }
            if (oplog != null && database.equals("admin") && command.equalsIgnoreCase("renameCollection")) {
                // A rename onto an existing collection (dropTarget) is one rename event, not a drop too.
                Document reply;
                WriteRecorder.suppressDrops(true);
                try {
                    reply = backend.superHandleCommand(channel, database, command, query);
                } finally {
                    WriteRecorder.suppressDrops(false);
                }
                String from = String.valueOf(query.get(command));
                String to = String.valueOf(query.get("to"));
                if (!from.equals(to)) {
                    oplog.logRename(from, to);
                }
                return reply;
            }
            return backend.superHandleCommand(channel, database, command, query);
        }

        static Document handleGetMore(Hooks backend, String database, String command, Document query) {
            StandInOplog oplog = StandInOplog.active();
            if (oplog != null && query.get(command) instanceof Number id) {
                StandInOplog.ChangeStreamCursor cursor = oplog.changeStreamCursor(id.longValue());
                if (cursor != null) {
                    return oplog.getMore(cursor, query);
                }
            }
            return backend.superHandleGetMore(database, command, query);
        }

        static void dropDatabase(Hooks backend, String database) {
            boolean existed = backend.databaseNames().contains(database);
            backend.superDropDatabase(database);
            StandInOplog oplog = StandInOplog.active();
            if (existed && oplog != null) {
                oplog.logDropDatabase(database);
            }
        }
    }

    // ---- awaitData ----------------------------------------------------------------------------

    /**
     * Holds a getMore on a change stream that has nothing to return until an event arrives or its
     * maxTimeMS (1 s when absent) passes, as MongoDB does for tailable awaitData cursors, instead
     * of answering an empty batch at once (which makes drivers poll in a tight loop). Nothing
     * blocks: the oplog wakes the held request when it grows, a timer ends the wait, and both run
     * on the connection's event loop; the held message then goes on to mongo-java-server's handler
     * as usual. Installed per connection on its first command.
     */
    static final class AwaitData extends ChannelInboundHandlerAdapter {
        private static final long DEFAULT_AWAIT_MILLIS = 1000;

        static void install(Channel channel) {
            ChannelPipeline pipeline = channel.pipeline();
            if (pipeline.get(AwaitData.class) != null) {
                return;
            }
            ChannelHandlerContext handler = pipeline.context(MongoDatabaseHandler.class);
            if (handler != null) {
                pipeline.addBefore(handler.name(), "stand-in-await-data", new AwaitData());
            }
        }

        @Override
        public void channelRead(ChannelHandlerContext ctx, Object msg) {
            if (msg instanceof MongoMessage message) {
                Document command = message.getDocument();
                StandInOplog oplog = StandInOplog.active();
                if (oplog != null && !command.isEmpty() && command.keySet().iterator().next().equals("getMore")
                    && command.get("getMore") instanceof Number id) {
                    long await = command.get("maxTimeMS") instanceof Number n ? n.longValue() : DEFAULT_AWAIT_MILLIS;
                    StandInOplog.ChangeStreamCursor cursor = oplog.changeStreamCursor(id.longValue());
                    if (cursor != null && await > 0) {
                        new Held(ctx, msg, oplog, cursor).start(await);
                        return;
                    }
                }
            }
            ctx.fireChannelRead(msg);
        }

        /** One held getMore. Its state is only touched on the connection's event loop. */
        private static final class Held implements Runnable {
            private final ChannelHandlerContext ctx;
            private final Object msg;
            private final StandInOplog oplog;
            private final StandInOplog.ChangeStreamCursor cursor;
            private ScheduledFuture<?> timeout;
            private boolean released;

            Held(ChannelHandlerContext ctx, Object msg, StandInOplog oplog, StandInOplog.ChangeStreamCursor cursor) {
                this.ctx = ctx;
                this.msg = msg;
                this.oplog = oplog;
                this.cursor = cursor;
            }

            void start(long awaitMillis) {
                // Listen first, then look: an entry appended in between still wakes us.
                oplog.addListener(this);
                if (ready()) {
                    release();
                } else {
                    timeout = ctx.executor().schedule(this::release, awaitMillis, TimeUnit.MILLISECONDS);
                }
            }

            /** Called by the oplog (any thread) when it has grown. */
            @Override
            public void run() {
                ctx.executor().execute(() -> {
                    if (!released && ready()) {
                        release();
                    }
                });
            }

            private boolean ready() {
                try {
                    return !ctx.channel().isActive() || cursor.ready();
                } catch (RuntimeException e) {
                    return true; // the getMore itself reports it
                }
            }

            private void release() {
                if (released) {
                    return;
                }
                released = true;
                oplog.removeListener(this);
                if (timeout != null) {
                    timeout.cancel(false);
                }
                if (ctx.channel().isActive()) {
                    ctx.fireChannelRead(msg);
                }
            }
        }
    }

    // ---- databases and collections that record their writes ----------------------------------

    static final class MemoryDb extends MemoryDatabase {
        MemoryDb(String databaseName, CursorRegistry cursorRegistry) {
            super(databaseName, cursorRegistry);
        }

        @Override
        protected MemoryCollection openOrCreateCollection(String collectionName, CollectionOptions options) {
            return new MemoryColl(this, collectionName, options, cursorRegistry);
        }
    }

    static final class H2Db extends H2Database {
        // H2Database opens the existing collections inside its constructor, before `store` is set.
        private static final ThreadLocal<MVStore> OPENING = new ThreadLocal<>();
        private final MVStore store;

        H2Db(String databaseName, MVStore store, CursorRegistry cursorRegistry) {
            super(databaseName, opening(store), cursorRegistry);
            this.store = store;
            OPENING.remove();
        }

        private static MVStore opening(MVStore store) {
            OPENING.set(store);
            return store;
        }

        @Override
        protected MongoCollection<Object> openOrCreateCollection(String collectionName, CollectionOptions options) {
            MVStore mvStore = store != null ? store : OPENING.get();
            // The map names of H2Database, so files written by the stock backend open unchanged.
            String fullName = getFullCollectionNamespace(collectionName);
            MVMap<Object, Document> dataMap = mvStore.openMap("databases." + fullName);
            MVMap<String, Object> metaMap = mvStore.openMap("meta." + fullName);
            return new H2Coll(this, collectionName, options, dataMap, metaMap, cursorRegistry);
        }
    }

    static final class MemoryColl extends MemoryCollection {
        MemoryColl(MongoDatabase database, String collectionName, CollectionOptions options, CursorRegistry cursorRegistry) {
            super(database, collectionName, options, cursorRegistry);
        }

        @Override
        public synchronized List<Document> insertDocuments(List<Document> documents, boolean isOrdered) {
            return WriteRecorder.inserting(getFullName(), () -> super.insertDocuments(documents, isOrdered));
        }

        @Override
        public synchronized void addDocument(Document document) {
            super.addDocument(document);
            WriteRecorder.inserted(getFullName(), document);
        }

        @Override
        public synchronized Document updateDocuments(Document selector, Document update, ArrayFilters arrayFilters,
                                                     boolean isMulti, boolean isUpsert, Oplog oplog) {
            return WriteRecorder.updating(getFullName(),
                () -> super.updateDocuments(selector, update, arrayFilters, isMulti, isUpsert, oplog));
        }

        @Override
        protected void handleUpdate(Integer position, Document oldDocument, Document newDocument) {
            super.handleUpdate(position, oldDocument, newDocument);
            WriteRecorder.updated(getFullName(), oldDocument, newDocument);
        }

        @Override
        public synchronized void removeDocument(Document document) {
            super.removeDocument(document);
            WriteRecorder.removed(getFullName(), document);
        }

        @Override
        public synchronized Document findAndModify(Document query) {
            return WriteRecorder.findAndModify(getFullName(), query, () -> super.findAndModify(query));
        }
    }

    static final class H2Coll extends H2Collection {
        H2Coll(MongoDatabase database, String collectionName, CollectionOptions options,
               MVMap<Object, Document> dataMap, MVMap<String, Object> metaMap, CursorRegistry cursorRegistry) {
            super(database, collectionName, options, dataMap, metaMap, cursorRegistry);
        }

        @Override
        public synchronized List<Document> insertDocuments(List<Document> documents, boolean isOrdered) {
            return WriteRecorder.inserting(getFullName(), () -> super.insertDocuments(documents, isOrdered));
        }

        @Override
        public synchronized void addDocument(Document document) {
            super.addDocument(document);
            WriteRecorder.inserted(getFullName(), document);
        }

        @Override
        public synchronized Document updateDocuments(Document selector, Document update, ArrayFilters arrayFilters,
                                                     boolean isMulti, boolean isUpsert, Oplog oplog) {
            return WriteRecorder.updating(getFullName(),
                () -> super.updateDocuments(selector, update, arrayFilters, isMulti, isUpsert, oplog));
        }

        @Override
        protected void handleUpdate(Object position, Document oldDocument, Document newDocument) {
            super.handleUpdate(position, oldDocument, newDocument);
            WriteRecorder.updated(getFullName(), oldDocument, newDocument);
        }

        @Override
        public synchronized void removeDocument(Document document) {
            super.removeDocument(document);
            WriteRecorder.removed(getFullName(), document);
        }

        @Override
        public synchronized Document findAndModify(Document query) {
            return WriteRecorder.findAndModify(getFullName(), query, () -> super.findAndModify(query));
        }
    }

    /**
     * The writes of the current operation of this thread on one collection, recorded by the
     * collection while it holds its lock and logged to the oplog before the lock is released, so
     * the oplog has them in the order they were applied.
     */
    static final class WriteRecorder {
        static final class Batch {
            final String namespace;
            boolean armed = true;
            /** Already logged; the oplog's handleInsert that follows is a no-op. */
            boolean consumed;
            final List<Document> inserted = new ArrayList<>();
            final List<Document[]> updated = new ArrayList<>();
            final List<Object> removed = new ArrayList<>();

            Batch(String namespace) {
                this.namespace = namespace;
            }
        }

        private static final ThreadLocal<Batch> CURRENT = new ThreadLocal<>();
        private static final ThreadLocal<Boolean> SUPPRESS_DROPS = ThreadLocal.withInitial(() -> false);

        private WriteRecorder() {
        }

        private static Batch begin(String namespace) {
            Batch batch = new Batch(namespace);
            CURRENT.set(batch);
            return batch;
        }

        private static void end(Batch batch) {
            if (CURRENT.get() == batch) {
                CURRENT.remove();
            }
        }

        static Batch current(String namespace) {
            Batch batch = CURRENT.get();
            return batch != null && batch.namespace.equals(namespace) ? batch : null;
        }

        static Batch take(String namespace) {
            Batch batch = current(namespace);
            if (batch != null) {
                CURRENT.remove();
            }
            return batch;
        }

        private static Batch armed(String namespace) {
            Batch batch = current(namespace);
            return batch != null && batch.armed ? batch : null;
        }

        static void inserted(String namespace, Document document) {
            Batch batch = armed(namespace);
            if (batch != null) {
                batch.inserted.add(document);
            }
        }

        static void updated(String namespace, Document before, Document after) {
            Batch batch = armed(namespace);
            if (batch != null) {
                batch.updated.add(new Document[] {before, after.cloneDeeply()});
            }
        }

        static void removed(String namespace, Document document) {
            Batch batch = armed(namespace);
            if (batch != null) {
                batch.removed.add(document.get("_id"));
            }
        }

        static List<Document> inserting(String namespace, Supplier<List<Document>> insert) {
            Batch batch = begin(namespace);
            try {
                return insert.get();
            } finally {
                batch.armed = false;
                StandInOplog oplog = StandInOplog.active();
                if (oplog != null) {
                    oplog.logInserts(namespace, batch.inserted);
                }
                batch.consumed = true;
            }
        }

        static Document updating(String namespace, Supplier<Document> update) {
            Batch batch = begin(namespace);
            try {
                return update.get();
            } finally {
                end(batch);
            }
        }

        static Document findAndModify(String namespace, Document query, Supplier<Document> findAndModify) {
            Batch batch = begin(namespace);
            try {
                Document result = findAndModify.get();
                batch.armed = false;
                StandInOplog oplog = StandInOplog.active();
                if (oplog != null) {
                    oplog.logDeletes(namespace, batch.removed);
                    oplog.logUpdates(namespace, query.get("update"), batch.updated);
                    oplog.logInserts(namespace, batch.inserted);
                }
                if (result.containsKey("lastErrorObject")) {
                    return result;
                }
                // MongoDB always reports what happened; the stock server only for updates.
                Document lastErrorObject;
                if (!batch.removed.isEmpty() || Boolean.TRUE.equals(query.get("remove"))) {
                    lastErrorObject = new Document("n", batch.removed.size());
                } else if (!batch.inserted.isEmpty()) {
                    lastErrorObject = new Document("n", 1).append("updatedExisting", false)
                        .append("upserted", batch.inserted.get(0).get("_id"));
                } else {
                    lastErrorObject = new Document("n", 0).append("updatedExisting", false);
                }
                Document reply = new Document("lastErrorObject", lastErrorObject);
                reply.putAll(result);
                return reply;
            } finally {
                end(batch);
            }
        }

        static void suppressDrops(boolean suppress) {
            SUPPRESS_DROPS.set(suppress);
        }

        static boolean dropsSuppressed() {
            return SUPPRESS_DROPS.get();
        }
    }
}
