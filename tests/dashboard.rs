//! The Grafana dashboard against a real Prometheus server (Debian's `prometheus` package)
//! scraping a running daemon: after a little traffic, with a dead letter, a failed pipeline
//! and a restarted reader, every query of every panel and variable parses and returns data,
//! and the alerting rules (`dashboards/alerts.yaml`) whose condition that made are raised.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::proxy::{self, Proxy};
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);

/// The Prometheus server binary, as `test-services/setup.sh` finds it (`PROMETHEUS`, Debian's
/// package unpacked by `services.sh up`, or one on the PATH).
fn prometheus_binary() -> PathBuf {
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-services/setup.sh");
    let out = Command::new(&setup)
        .arg("prometheus")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", setup.display()));
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        !path.as_os_str().is_empty() && path.exists(),
        "no Prometheus server ({:?}): `test-services/services.sh up` fetches one, or set PROMETHEUS",
        path.display()
    );
    path
}

/// The alerting rules shipped with the dashboard.
fn alerts_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/alerts.yaml")
}

/// `promtool`, beside the Prometheus server the tests use or on the PATH.
fn promtool_binary() -> PathBuf {
    let beside = prometheus_binary().with_file_name("promtool");
    if beside.exists() {
        return beside;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no promtool beside {} nor on the PATH: `test-services/services.sh up` fetches Prometheus with it", beside.display()))
}

/// The names of the metrics `src/ops/metrics.rs` defines, with their prefix.
fn defined_metrics() -> Vec<String> {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops/metrics.rs"))
            .expect("src/ops/metrics.rs");
    let pattern = regex::Regex::new(r#"b\.\w+\(\s*"([a-z0-9_]+)""#).expect("pattern");
    pattern
        .captures_iter(&source)
        .map(|c| format!("mkb_{}", &c[1]))
        .collect()
}

/// Every metric the daemon defines is in the Metrics table of `docs/metrics.md`, and is
/// plotted on the dashboard unless its row says `not plotted` and why; no timeseries panel
/// plots a total over the dashboard's range (`[$__range]`), which moves with the time picker
/// instead of showing a rate.
#[test]
fn every_metric_is_documented_and_plotted_or_said_not_to_be() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let metrics = defined_metrics();
    assert!(metrics.len() > 30, "the metrics were not read: {metrics:?}");
    let file = std::fs::read_to_string(root.join("docs/metrics.md")).expect("docs/metrics.md");
    // The section is the whole file: its `# Metrics` heading, up to any next heading of that
    // level (the Grafana dashboard and Alerts subsections included, as under README's
    // `## Metrics` before).
    let section = file
        .strip_prefix("# Metrics\n")
        .map(|s| s.split("\n# ").next().unwrap_or(s))
        .expect("docs/metrics.md starts with its `# Metrics` heading");
    let dashboard_text = std::fs::read_to_string(root.join("dashboards/mongo-kafka-bridge.json"))
        .expect("dashboard");
    let mut problems = Vec::new();
    for metric in &metrics {
        let row = section
            .lines()
            .find(|l| l.starts_with(&format!("| `{metric}` |")));
        match row {
            None => problems.push(format!(
                "{metric} has no row in the Metrics table of docs/metrics.md"
            )),
            Some(row) => {
                if !dashboard_text.contains(metric.as_str()) && !row.contains("not plotted") {
                    problems.push(format!(
                        "{metric} is on no panel and its row does not say `not plotted`"
                    ));
                }
            }
        }
    }
    let dashboard: Value = serde_json::from_str(&dashboard_text).expect("JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] != "timeseries" {
            continue;
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if target["expr"]
                .as_str()
                .is_some_and(|e| e.contains("[$__range]"))
            {
                problems.push(format!(
                    "panel {} plots a moving total: {}",
                    panel["title"], target["expr"]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_alerting_rules_pass_promtool() {
    let out = Command::new(promtool_binary())
        .args(["check", "rules"])
        .arg(alerts_file())
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check rules:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
    // Each rule raised under its condition and quiet without it, on synthetic series.
    let tests = alerts_file().with_file_name("alerts_test.yaml");
    let out = Command::new(promtool_binary())
        .args(["test", "rules"])
        .arg(&tests)
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool test rules:\n{text}");
    let rules = std::fs::read_to_string(alerts_file()).expect("alerts.yaml");
    let cases = std::fs::read_to_string(&tests).expect("alerts_test.yaml");
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            cases.contains(&format!("alertname: {alert}\n")),
            "{alert} has no case in {}",
            tests.display()
        );
    }
}

/// The alerts Prometheus has pending or firing, by name.
fn active_alerts(prometheus: &Prometheus) -> Vec<String> {
    let answer = prometheus.query("ALERTS");
    let mut names: Vec<String> = answer["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|s| s["metric"]["alertname"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    names
}

/// A Prometheus server scraping `target` every second, with the alerting rules loaded;
/// killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = common::write_file(
            dir.path(),
            "prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - '{}'\nscrape_configs:\n  - job_name: mongo-kafka-bridge\n    static_configs:\n      - targets: ['{target}']\n",
                alerts_file().display()
            ),
        );
        let port = common::free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting Prometheus: {e}"));
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        common::wait_for_status(port, "/-/ready", 200, WAIT);
        server
    }

    /// Runs an instant query; the API's JSON answer.
    fn query(&self, promql: &str) -> Value {
        let encoded: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        self.api(&format!("/api/v1/query?query={encoded}"))
    }

    /// `GET path` on the API; its JSON answer, which must say `success`.
    fn api(&self, path: &str) -> Value {
        let promql = path;
        let (status, body) = common::http_get(self.port, path)
            .unwrap_or_else(|| panic!("Prometheus did not answer `{promql}`"));
        // The body is chunked when large; the JSON object is between the outer braces.
        let json = body
            .find('{')
            .and_then(|start| body.rfind('}').map(|end| &body[start..=end]))
            .unwrap_or_default();
        let value: Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("`{promql}`: not JSON ({e}), status {status}: {body}"));
        assert_eq!(
            value["status"], "success",
            "`{promql}` failed to parse or run: {value}"
        );
        value
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every PromQL expression of the dashboard: panel targets and variable queries (whose
/// `label_values(selector, label)` becomes `count by (label) (selector)`).
fn dashboard_queries(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).expect("dashboard file");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating variables");
    let names: Vec<&str> = variables
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["datasource", "instance", "pipeline"]);
    let mut queries = Vec::new();
    for variable in variables.iter().skip(1) {
        let definition = variable["definition"].as_str().expect("definition");
        let inner = definition
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .expect("label_values(selector, label)");
        let (selector, label) = inner.rsplit_once(',').expect("selector, label");
        queries.push((
            format!("variable {}", variable["name"]),
            format!("count by ({}) ({selector})", label.trim()),
        ));
    }
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {} must use the datasource variable",
            panel["title"]
        );
        for target in panel["targets"].as_array().expect("targets") {
            queries.push((
                format!("panel {} ({})", panel["title"], target["refId"]),
                target["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    queries
        .into_iter()
        .map(|(what, q)| {
            (
                what,
                q.replace("$__rate_interval", "30s")
                    .replace("$__range", "10m")
                    .replace("$instance", ".*")
                    .replace("$pipeline", ".*"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_running_daemon() {
    let queries = dashboard_queries(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dashboards/mongo-kafka-bridge.json"
    )));
    assert!(queries.len() > 30, "{queries:?}");

    let uri = common::mongodb_uri();
    let mongo_proxy = Proxy::start(&proxy::mongodb_target(&uri));
    let db = common::unique("dash");
    let client = common::mongo_client().await;
    let coll = client.database(&db).collection::<Document>("a");
    for i in 0..20_i64 {
        coll.insert_one(doc! {"_id": i, "v": i})
            .await
            .expect("seed");
    }
    let topic = format!("{db}.a");
    let broken_topic = common::unique("dashbroken");
    common::create_topic(&topic, 2).await;
    common::create_topic(&broken_topic, 1).await;
    let dlq = common::unique("dashdlq");
    let port = common::free_port();
    let pipelines = format!(
        "[[source]]\nname = \"dsrc\"\ndatabase = \"{db}\"\ncollection = \"a\"\nstartup_mode = \"copy_existing\"\nmax_await_time = \"200ms\"\ncheckpoint_interval = \"200ms\"\n\
         [[sink]]\nname = \"dsink\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\ncollection = \"b\"\ncdc_handler = \"mongodb\"\nmax_batch_delay = \"50ms\"\n[sink.errors]\ntolerance = \"all\"\ndead_letter_topic = \"{dlq}\"\n\
         [[sink]]\nname = \"dbroken\"\ntopics = [\"{broken_topic}\"]\ndatabase = \"{db}\"\n\
         [[source]]\nname = \"dfull\"\ndatabase = \"{db}\"\ncollection = \"a\"\ntopic_prefix = \"full\"\npublish_full_document_only = true\nmax_await_time = \"200ms\"\n"
    );
    let config = proxy::config_through(&common::config_toml(port, &pipelines), &mongo_proxy);
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 2, WAIT);
    let prometheus = Prometheus::start(&format!("127.0.0.1:{port}"));

    // Traffic, a dead letter, a pipeline that fails on a bad record.
    for i in 20..60_i64 {
        coll.insert_one(doc! {"_id": i, "v": i})
            .await
            .expect("insert");
    }
    coll.update_one(doc! {"_id": 1_i64}, doc! {"$set": {"v": -1}})
        .await
        .expect("update");
    // A delete has no document: `dfull` publishes it as nothing, and counts it.
    coll.delete_one(doc! {"_id": 2_i64}).await.expect("delete");
    common::produce(
        &topic,
        &[common::Outgoing::json(
            json!({"_id": 0}),
            json!(["not", "an event"]),
        )],
    )
    .await;
    common::produce(
        &broken_topic,
        &[common::Outgoing::json(json!(null), json!("not a document"))],
    )
    .await;
    daemon.wait_for_log("sink pipeline failed", 1, WAIT);
    // MongoDB cut off for a moment: the reader fails and is restarted.
    mongo_proxy.cut();
    daemon.wait_for_log("reader failed; restarting it", 1, WAIT);
    mongo_proxy.forward();
    daemon.wait_for_log("change stream open", 3, WAIT);
    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded", 1, WAIT);
    for i in 60..80_i64 {
        coll.insert_one(doc! {"_id": i, "v": i})
            .await
            .expect("insert");
    }

    // Every query answers, with data, once Prometheus scraped enough samples.
    let deadline = Instant::now() + WAIT;
    let mut empty: Vec<(String, String)> = queries.clone();
    while !empty.is_empty() && Instant::now() < deadline {
        empty.retain(|(_, q)| {
            let answer = prometheus.query(q);
            answer["data"]["result"]
                .as_array()
                .is_none_or(|r| r.is_empty())
        });
        if !empty.is_empty() {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    assert!(
        empty.is_empty(),
        "queries without data: {empty:#?}\nlog:\n{}",
        daemon.log()
    );
    // The alerts whose condition the scenario made go pending or firing; the others (no
    // configuration mismatch, no old checkpoint, the daemon up) stay quiet.
    let rules = prometheus.api("/api/v1/rules");
    let loaded = rules["data"]["groups"][0]["rules"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(loaded >= 10, "the alerting rules were not loaded: {rules}");
    let expected = [
        "MkbDeadLetters",
        "MkbPipelineFailed",
        "MkbPipelineStaysFailed",
        "MkbReaderRestarted",
    ];
    let raised = common::eventually(WAIT, || {
        let active = active_alerts(&prometheus);
        async move { expected.iter().all(|a| active.iter().any(|n| n == a)) }
    })
    .await;
    let active = active_alerts(&prometheus);
    assert!(
        raised,
        "expected {expected:?} among the alerts, got {active:?}"
    );
    for quiet in [
        "MkbDaemonDown",
        "MkbSourceConfigMismatch",
        "MkbSourceCheckpointOld",
        "MkbSinkLagGrowing",
    ] {
        assert!(
            !active.iter().any(|n| n == quiet),
            "{quiet} raised without its condition: {active:?}"
        );
    }
    daemon.signal("TERM");
    daemon.wait(WAIT);
    let _ = client.database(&db).drop().await;
}
