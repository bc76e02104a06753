//! Faults under continuous traffic, each checked end to end (MongoDB → source → Kafka →
//! sink → MongoDB) by the ids of every document written: the Kafka broker stopped and
//! restarted, MongoDB connections cut in the middle of batches, a MongoDB stand-in
//! restarted with its data and oplog kept on disk, and the daemon killed with SIGKILL at
//! several points.
//!
//! These tests stop shared services, so they live in a test binary of their own (cargo
//! runs test binaries one after another) and take a lock against each other.

mod common;

use std::time::Duration;

use common::proxy::{self, Proxy};
use common::services::OwnService;
use common::traffic::{self, Traffic};
use mongodb::bson::{doc, Document};

const WAIT: Duration = Duration::from_secs(180);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A source on `db.c` and a sink replaying its topic into `db.c_copy`.
fn chain(db: &str) -> String {
    format!(
        "[[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"c\"\ncheckpoint_interval = \"200ms\"\nmax_await_time = \"300ms\"\n\
         [[sink]]\nname = \"{snk}\"\ntopics = [\"{db}.c\"]\ndatabase = \"{db}\"\ncollection = \"c_copy\"\ncdc_handler = \"mongodb\"\nmax_batch_delay = \"50ms\"\nmax_num_retries = 20\n",
        src = common::unique("fsrc"),
        snk = common::unique("fsnk"),
    )
}

/// Waits until every id in `0..total` is in `db.c_copy` of the MongoDB at `uri`.
async fn assert_all_copied(uri: &str, db: &str, total: i64, daemon: &common::Daemon) {
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .expect("MongoDB client");
    let copy = client.database(db).collection::<Document>("c_copy");
    traffic::assert_arrived(&copy, (0..total).collect(), WAIT, || daemon.log()).await;
}

async fn collection(uri: &str, db: &str) -> mongodb::Collection<Document> {
    let c = mongodb::Client::with_uri_str(uri)
        .await
        .expect("MongoDB client")
        .database(db)
        .collection::<Document>("c");
    c.insert_one(doc! {"_id": -1_i64}).await.expect("seed");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_broker_restarted_mid_source_and_mid_sink_loses_nothing() {
    let _lock = ONE_AT_A_TIME.lock().await;
    // A broker of the test's own: the shared one on 9092 is never stopped.
    let kafka = OwnService::kafka();
    let uri = common::mongodb_uri();
    let db = common::unique("fkafka");
    let coll = collection(&uri, &db).await;
    common::create_topic_on(&kafka.address(), &format!("{db}.c"), 2, &[]).await;
    let port = common::free_port();
    let mut daemon = common::Daemon::start(&kafka.config(&common::config_toml(port, &chain(&db))));
    daemon.wait_for_log("change stream open", 1, WAIT);
    let load = Traffic::start(vec![coll], Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(2)).await;
    kafka.down();
    let body = common::wait_for_status(port, "/ready", 503, Duration::from_secs(30));
    assert!(body.contains("kafka"), "{body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka.up();
    common::wait_for_status(port, "/ready", 200, WAIT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = load.stop().await;
    assert_all_copied(&uri, &db, total, &daemon).await;
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_connections_cut_mid_batch_lose_nothing() {
    let _lock = ONE_AT_A_TIME.lock().await;
    let uri = common::mongodb_uri();
    let proxy = Proxy::start(&proxy::mongodb_target(&uri));
    let db = common::unique("fcut");
    let coll = collection(&uri, &db).await;
    common::create_topic(&format!("{db}.c"), 2).await;
    let port = common::free_port();
    let config = proxy::config_through(&common::config_toml(port, &chain(&db)), &proxy);
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    let load = Traffic::start(vec![coll], Duration::from_millis(5));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(700)).await;
        proxy.forward();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total = load.stop().await;
    assert_all_copied(&uri, &db, total, &daemon).await;
    assert!(
        proxy.cut_connections() >= 3,
        "only {} connections were cut",
        proxy.cut_connections()
    );
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongodb_restart_that_keeps_its_data_loses_nothing() {
    let _lock = ONE_AT_A_TIME.lock().await;
    if std::env::var_os("MONGODB_URI").is_some_and(|u| !u.to_string_lossy().contains("127.0.0.1")) {
        eprintln!(
            "SKIPPED: restarts a MongoDB stand-in of its own; the tests run against another server"
        );
        return;
    }
    // A stand-in of this test's own, keeping data and oplog in an H2 file across restarts.
    let mongo = OwnService::mongo_with_a_data_file();
    let uri = mongo.uri();
    let db = common::unique("fh2");
    let coll = collection(&uri, &db).await;
    common::create_topic(&format!("{db}.c"), 2).await;
    let port = common::free_port();
    let mut daemon = common::Daemon::start(&mongo.config(&common::config_toml(port, &chain(&db))));
    daemon.wait_for_log("change stream open", 1, WAIT);
    let load = Traffic::start(vec![coll], Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(2)).await;
    mongo.down();
    tokio::time::sleep(Duration::from_secs(1)).await;
    mongo.up();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let total = load.stop().await;
    assert_all_copied(&uri, &db, total, &daemon).await;
    let log = daemon.log();
    assert!(
        !log.contains("the resume point is gone"),
        "the oplog did not survive: {log}"
    );
    daemon.terminate(WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_several_points_loses_nothing() {
    let _lock = ONE_AT_A_TIME.lock().await;
    let uri = common::mongodb_uri();
    let db = common::unique("fkill");
    let coll = collection(&uri, &db).await;
    common::create_topic(&format!("{db}.c"), 2).await;
    let port = common::free_port();
    let config = common::config_toml(port, &chain(&db));
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    let load = Traffic::start(vec![coll], Duration::from_millis(5));
    // Killed right after start, in the middle of the traffic, and while catching up.
    for pause in [
        Duration::from_millis(300),
        Duration::from_millis(1500),
        Duration::from_millis(800),
    ] {
        tokio::time::sleep(pause).await;
        daemon.signal("KILL");
        daemon.wait(WAIT);
        daemon = common::Daemon::start(&config);
        daemon.wait_for_log("sink pipeline running", 1, WAIT);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total = load.stop().await;
    assert_all_copied(&uri, &db, total, &daemon).await;
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}
