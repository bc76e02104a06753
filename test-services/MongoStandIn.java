// Starts mongo-java-server with an oplog, so change streams work; its own main() leaves the
// oplog off. Usage: MongoStandIn [--port N] [--h2 FILE]
// --h2 keeps the data (and the oplog, so resume tokens stay valid) in an H2 file, so it survives
// a restart (fault tests).
// The backends (StandInBackends.java) and the oplog (StandInOplog.java) make the change events
// like MongoDB's: see README.md.
// The server reports MongoDB 4.4 (wire version 9): the Rust driver 3.x refuses servers below
// that, and the stand-in's own versions all answer wire version 8 or less. Nothing newer is
// claimed, so the driver uses no command the stand-in lacks. It answers `isMaster` (standalone,
// no logicalSessionTimeoutMinutes, so no sessions or transactions) but has no `hello` command.

import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import java.util.List;
import java.util.concurrent.CountDownLatch;

public final class MongoStandIn {
    private static final MongoVersion MONGO_4_4 = new MongoVersion() {
        @Override
        public List<Integer> getVersionArray() {
            return List.of(4, 4, 0);
        }

        @Override
        public int getWireVersion() {
            return 9;
        }
    };

    public static void main(String[] args) throws Exception {
        int port = 27017;
        String h2File = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--port" -> port = Integer.parseInt(args[++i]);
                case "--h2" -> h2File = args[++i];
                default -> {
                    System.err.println("unknown argument: " + args[i]);
                    System.exit(2);
                }
            }
        }
        MongoBackend backend = h2File == null ? new StandInBackends.Memory() : new StandInBackends.H2(h2File);
        backend.version(MONGO_4_4);
        MongoServer server = new MongoServer(backend);
        server.enableOplog();
        server.bind("127.0.0.1", port);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.shutdown();
            stopped.countDown();
        }));
        System.out.println("mongo-stand-in ready on 127.0.0.1:" + port
                + (h2File == null ? " (memory)" : " (h2 " + h2File + ")"));
        System.out.flush();
        stopped.await();
    }
}
