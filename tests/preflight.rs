//! `check-config --connect` against the real services: a good configuration passes with its
//! checks listed; MongoDB unreachable, a sink topic missing, a registry where nothing answers
//! and pre-images the server cannot record each fail naming what is wrong.

mod common;

use std::time::{Duration, Instant};

/// The schema registry the tests use.
fn registry_url() -> String {
    std::env::var("SCHEMA_REGISTRY_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".to_owned())
}

/// Runs `check-config --connect` on `text`: exit code, stdout, stderr.
fn check_connect(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = common::write_file(dir.path(), "bridge.toml", text);
    let out = common::binary()
        .args(["check-config", "--connect", "--config"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("running check-config --connect: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn problems(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.starts_with("problem: "))
        .collect()
}

/// Asserts that `check-config --connect` on `stdout` (its exit `code`, its `stderr`) failed
/// with exactly one problem, starting with `expected`.
fn assert_one_problem((code, stdout, stderr): (Option<i32>, &str, &str), expected: &str) {
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let found = problems(stdout);
    assert_eq!(found.len(), 1, "{stdout}");
    assert!(found[0].starts_with(expected), "{stdout}");
}

/// A source (exactly-once, Avro through the registry) and a sink whose topic exists.
fn good_pipelines(db: &str, sink_topic: &str, registry: &str) -> String {
    format!(
        r#"
[kafka.schema_registry]
url = "{registry}"
timeout = "3s"

[[source]]
name = "{db}_src"
database = "{db}"
collection = "orders"
delivery = "exactly-once"
format = "avro"

[[sink]]
name = "{db}_sink"
topics = ["{sink_topic}"]
database = "{db}"
"#
    )
}

#[tokio::test]
async fn a_good_configuration_passes_with_its_checks_listed() {
    let db = common::unique("cc");
    let sink_topic = common::unique("cc_in");
    common::create_topic(&sink_topic, 1).await;
    let text = common::config_toml(
        common::free_port(),
        &good_pipelines(&db, &sink_topic, &registry_url()),
    );
    let (code, stdout, stderr) = check_connect(&text);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(problems(&stdout).is_empty(), "{stdout}");
    let src = format!("source `{db}_src`");
    let sink = format!("sink `{db}_sink`");
    for expected in [
        "ok: mongodb.uri: MongoDB at ".to_owned(),
        format!("ok: {src}: change stream on `{db}.orders`: opened and closed"),
        format!("ok: {sink}: database: listCollections on `{db}`"),
        "ok: kafka.bootstrap_servers: Kafka at ".to_owned(),
        format!("ok: {src}: topic `{db}.orders`: missing; the broker creates it"),
        format!("ok: {src}: checkpoint_topic `mongo-kafka-bridge-checkpoints-{db}_src`"),
        format!("ok: {src}: delivery = exactly-once: transactional ids `mongo-kafka-bridge-{db}_src-*`: the transaction coordinator initialised `mongo-kafka-bridge-{db}_src-check-"),
        format!("ok: {src}: consumer group `mongo-kafka-bridge-source-{db}_src`"),
        format!("ok: {sink}: topics: `{sink_topic}`: present"),
        format!("ok: {sink}: consumer group `mongo-kafka-bridge-{db}_sink`"),
        format!("ok: {src}: schema_registry at "),
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&expected)),
            "no line starting `{expected}` in:\n{stdout}"
        );
    }
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.ends_with("checks passed, 0 problems, 0 skipped"),
        "{summary}"
    );
    // Nothing was written: no document in MongoDB (the stand-in creates a database on any
    // command naming it, a real server does not), no topic in Kafka.
    let mongo = common::mongo_client().await;
    let documents = mongo
        .database(&db)
        .collection::<mongodb::bson::Document>("orders")
        .count_documents(mongodb::bson::doc! {})
        .await
        .unwrap_or_else(|e| panic!("count: {e}"));
    let _ = mongo.database(&db).drop().await;
    assert_eq!(documents, 0);
    let topics = topic_names();
    for absent in [
        format!("{db}.orders"),
        format!("mongo-kafka-bridge-checkpoints-{db}_src"),
    ] {
        assert!(!topics.contains(&absent), "{absent} was created");
    }
}

/// Every topic of the cluster (asking for all never creates one).
fn topic_names() -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::kafka_bootstrap())
        .create()
        .unwrap_or_else(|e| panic!("metadata client: {e}"));
    client
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata: {e}"))
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect()
}

#[tokio::test]
async fn mongodb_unreachable_is_a_problem_naming_it() {
    let db = common::unique("cc");
    let sink_topic = common::unique("cc_in");
    common::create_topic(&sink_topic, 1).await;
    let port = common::free_port();
    let text = common::config_toml(
        common::free_port(),
        &good_pipelines(&db, &sink_topic, &registry_url()),
    )
    .replace(
        &format!("uri = \"{}\"", common::mongodb_uri()),
        &format!("uri = \"mongodb://127.0.0.1:{port}/?connectTimeoutMS=1000\""),
    );
    let started = Instant::now();
    let (code, stdout, stderr) = check_connect(&text);
    assert_one_problem(
        (code, &stdout, &stderr),
        &format!("problem: mongodb.uri: MongoDB at 127.0.0.1:{port} does not answer"),
    );
    // The MongoDB checks are skipped, saying why; Kafka's still run.
    assert!(
        stdout.contains(&format!(
            "skipped: source `{db}_src`: change stream on `{db}.orders` (MongoDB does not answer)"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("ok: kafka.bootstrap_servers"), "{stdout}");
    assert!(stdout
        .lines()
        .last()
        .unwrap_or_default()
        .contains(", 1 problem, "));
    // connect_timeout is 3 s: server selection gives up then.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_missing_sink_topic_is_a_problem_naming_the_topic_and_the_pipeline() {
    let db = common::unique("cc");
    let missing = common::unique("cc_missing");
    let text = common::config_toml(
        common::free_port(),
        &format!("[[sink]]\nname = \"{db}_sink\"\ntopics = [\"{missing}\"]\ndatabase = \"{db}\"\n"),
    );
    let (code, stdout, stderr) = check_connect(&text);
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        problems(&stdout),
        [format!(
            "problem: sink `{db}_sink`: topics: `{missing}`: the topic does not exist"
        )],
        "{stdout}"
    );
}

#[tokio::test]
async fn a_registry_where_nothing_answers_is_a_problem_naming_the_pipeline() {
    let db = common::unique("cc");
    let sink_topic = common::unique("cc_in");
    common::create_topic(&sink_topic, 1).await;
    let url = format!("http://127.0.0.1:{}", common::free_port());
    let text = common::config_toml(common::free_port(), &good_pipelines(&db, &sink_topic, &url));
    let (code, stdout, stderr) = check_connect(&text);
    assert_one_problem(
        (code, &stdout, &stderr),
        &format!(
            "problem: source `{db}_src`: schema_registry at {url}: schema registry at {url} unreachable"
        ),
    );
}

#[tokio::test]
async fn pre_images_the_server_cannot_record_are_a_problem_saying_so() {
    let db = common::unique("cc");
    let client = common::mongo_client().await;
    let version = client
        .database("admin")
        .run_command(mongodb::bson::doc! { "buildInfo": 1 })
        .await
        .unwrap_or_else(|e| panic!("buildInfo: {e}"));
    let version = version.get_str("version").unwrap_or_default().to_owned();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_default();
    let coll = client
        .database(&db)
        .collection::<mongodb::bson::Document>("orders");
    coll.insert_one(mongodb::bson::doc! { "_id": 1 })
        .await
        .unwrap_or_else(|e| panic!("insert: {e}"));
    let text = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{db}_src\"\ndatabase = \"{db}\"\ncollection = \"orders\"\n\
             full_document_before_change = \"required\"\n"
        ),
    );
    let (code, stdout, stderr) = check_connect(&text);
    let _ = client.database(&db).drop().await;
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let check = format!(
        "problem: source `{db}_src`: full_document_before_change: pre-images of `{db}.orders`: "
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&check))
        .unwrap_or_else(|| panic!("no `{check}` in:\n{stdout}"));
    if major < 6 {
        // The stand-in (4.4) and any server before 6.0.
        assert!(
            line.contains("pre-images are not supported by the server"),
            "{line}"
        );
    } else {
        // A real server: the collection was created without them.
        assert!(
            line.contains("changeStreamPreAndPostImages is not enabled"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn kafka_unreachable_is_a_problem_naming_it() {
    let db = common::unique("cc");
    let port = common::free_port();
    let text = common::config_toml(
        common::free_port(),
        &format!("[[sink]]\nname = \"{db}_sink\"\ntopics = [\"{db}_in\"]\ndatabase = \"{db}\"\n"),
    )
    .replace(
        &format!("bootstrap_servers = \"{}\"", common::kafka_bootstrap()),
        &format!("bootstrap_servers = \"127.0.0.1:{port}\""),
    )
    .replace("request_timeout = \"5s\"", "request_timeout = \"2s\"");
    let started = Instant::now();
    let (code, stdout, stderr) = check_connect(&text);
    let _ = common::mongo_client().await.database(&db).drop().await;
    assert_one_problem(
        (code, &stdout, &stderr),
        &format!("problem: kafka.bootstrap_servers: Kafka at 127.0.0.1:{port} does not answer: "),
    );
    assert!(
        stdout.contains(&format!(
            "skipped: sink `{db}_sink`: topics: `{db}_in` (Kafka does not answer)"
        )),
        "{stdout}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_topic_create_topics_could_not_create_is_a_problem_and_nothing_is_created() {
    let db = common::unique("cc");
    // One broker: a replication factor of 3 is refused.
    let text = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{db}_src\"\ndatabase = \"{db}\"\ncollection = \"orders\"\n\
             create_topics = true\ntopic_replication_factor = 3\n"
        ),
    );
    let (code, stdout, stderr) = check_connect(&text);
    let _ = common::mongo_client().await.database(&db).drop().await;
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        problems(&stdout).len(),
        1,
        "a single-broker cluster is expected (KAFKA_BOOTSTRAP): {stdout}"
    );
    assert!(
        problems(&stdout)[0].starts_with(&format!(
            "problem: source `{db}_src`: topic `{db}.orders`: missing, and create_topics cannot create it: the broker refuses to create it"
        )),
        "{stdout}"
    );
    assert!(!topic_names().contains(&format!("{db}.orders")));
}

/// `check-config --connect` asks the broker to validate each topic with the settings
/// `create_topics` would give it: a `topic_config` value the broker refuses, for the topic a
/// `topic_creation_groups` entry takes, is a problem naming the topic; nothing is created.
#[tokio::test]
async fn sourcecompat_a_topic_config_the_broker_refuses_is_a_problem() {
    let db = common::unique("sourcecompat_cc");
    let text = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{db}_src\"\ndatabase = \"{db}\"\ncollection = [\"orders\", \"audit\"]\n\
             create_topics = true\n\
             [[source.topic_creation_groups]]\nname = \"audit\"\ninclude = ['.*\\.audit']\n\
             config = {{ \"cleanup.policy\" = \"shredded\" }}\n"
        ),
    );
    let (code, stdout, stderr) = check_connect(&text);
    let _ = common::mongo_client().await.database(&db).drop().await;
    assert_one_problem(
        (code, &stdout, &stderr),
        &format!(
            "problem: source `{db}_src`: topic `{db}.audit`: missing, and create_topics cannot create it: the broker refuses to create it"
        ),
    );
    let names = topic_names();
    assert!(!names.contains(&format!("{db}.audit")));
    assert!(!names.contains(&format!("{db}.orders")));
}
