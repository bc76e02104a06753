//! Log levels: an `ERROR` line means an operator must act. What librdkafka reports in the
//! normal course of things (the end of a partition reached while loading checkpoints, a
//! subscribed topic that does not exist yet) is not logged as an error; the missing topic is
//! still said, at `WARN`.

mod common;

use std::time::Duration;

use mongodb::bson::{doc, Document};

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routine_librdkafka_events_are_not_logged_as_errors() {
    let db = common::unique("itest_loglevel");
    let missing_topic = common::unique("loglevel_missing");
    let client = common::mongo_client().await;
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! { "_id": "seed" })
        .await
        .expect("seed insert");
    let config = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"c\"\ncheckpoint_interval = \"200ms\"\nmax_await_time = \"300ms\"\n\
             [[sink]]\nname = \"{snk}\"\ntopics = [\"{missing_topic}\"]\ndatabase = \"{db}\"\ncollection = \"copy\"\n",
            src = common::unique("lsrc"),
            snk = common::unique("lsnk"),
        ),
    );
    // Two starts: the second one loads the checkpoint the first one wrote, reading the
    // checkpoint topic to its end.
    for start in 0..2 {
        let mut daemon = common::Daemon::start(&config);
        daemon.wait_for_log("change stream open", 1, WAIT);
        coll.insert_one(doc! { "start": start })
            .await
            .expect("insert");
        daemon.wait_for_log(&missing_topic, 1, WAIT);
        // Checkpoints written, the sink's subscription refreshed a few times.
        tokio::time::sleep(Duration::from_secs(4)).await;
        daemon.terminate(WAIT);
        let log = daemon.log();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert!(
            errors.is_empty(),
            "start {start}: ERROR lines where nothing needs an operator:\n{}\n\nwhole log:\n{log}",
            errors.join("\n")
        );
        assert!(
            log.lines()
                .any(|l| l.contains(" WARN ") && l.contains(&missing_topic)),
            "start {start}: the missing topic {missing_topic} is not said at WARN:\n{log}"
        );
    }
    let _ = client.database(&db).drop().await;
}
