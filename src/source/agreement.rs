//! Config agreement (issue 14): daemons sharing a source pipeline's slots must run it with
//! one configuration, or they silently split the work between two different pipelines (one
//! half of the collections published as JSON, the other as Avro, say). Each daemon computes
//! a fingerprint of the parts of its pipeline's configuration that decide what is read and
//! where it goes, and publishes it to the other members of the pipeline's group in the
//! `client.id` of its group membership (`<client.id>#config=<fingerprint>`), which the
//! group's description lists for each member.
//!
//! Why there: librdkafka offers no way to put data of our own in a member's metadata (the
//! assignor owns its `userdata`), and a record in the checkpoint topic outlives the daemon
//! that wrote it (a `kill -9` leaves it behind), so it would need a liveness rule of its own;
//! the group's member list is exactly the live members. Members that publish no fingerprint
//! (daemons from before this check) are left out of the comparison.
//!
//! What the fingerprint covers: the watched scope, the change-stream stages and options,
//! startup, the record format and key (the formats of key and value, their given schemas and
//! the schema registry's URL), the topic naming, the checkpoint topic, `slots`,
//! `delivery` and the error routing. Not: the pipeline's name (the group is per name
//! already), secrets (the schema registry's credentials), timeouts, intervals, batch and
//! queue sizes, copy parallelism or topic creation, which may differ between machines
//! without changing any record. Pure: no I/O.

use std::collections::BTreeSet;

use serde::Serialize;

use super::slots;
use crate::config::{SourceConfig, SubjectNameStrategy};

/// What separates the configured `client.id` from the fingerprint in a member's `client.id`.
const MARK: &str = "#config=";

/// The parts of a pipeline's configuration the fingerprint covers, in a fixed order.
#[derive(Serialize)]
struct Effective<'a> {
    database: &'a Option<String>,
    collection: Option<Vec<&'a str>>,
    collection_regex: &'a Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    collection_exclude: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    collation: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    show_expanded_events: bool,
    pipeline: Option<serde_json::Value>,
    full_document: &'a crate::config::FullDocument,
    full_document_before_change: &'a crate::config::FullDocumentBeforeChange,
    publish_full_document_only: bool,
    tombstone_on_delete: bool,
    startup_mode: &'a crate::config::StartupMode,
    startup_timestamp: &'a Option<String>,
    copy_existing_pipeline: Option<serde_json::Value>,
    copy_existing_namespace_regex: &'a Option<String>,
    topic_prefix: &'a Option<String>,
    topic_suffix: &'a Option<String>,
    topic_separator: &'a str,
    topic_namespace_map: std::collections::BTreeMap<&'a str, &'a str>,
    /// The regex keys in the order written, where that order can decide a topic (two or
    /// more); absent otherwise, so fingerprints of maps from before the order counted stay.
    #[serde(skip_serializing_if = "Option::is_none")]
    topic_namespace_regex_order: Option<Vec<&'a str>>,
    key: &'a crate::config::KeyMode,
    format: &'a crate::config::OutputFormat,
    key_format: crate::config::OutputFormat,
    value_format: crate::config::OutputFormat,
    key_schema: Option<serde_json::Value>,
    value_schema: Option<serde_json::Value>,
    schema_registry_url: Option<&'a str>,
    /// Absent at the default (`topic_name`), so fingerprints from before the strategies
    /// stay.
    #[serde(skip_serializing_if = "is_topic_name")]
    key_subject_name_strategy: SubjectNameStrategy,
    #[serde(skip_serializing_if = "is_topic_name")]
    value_subject_name_strategy: SubjectNameStrategy,
    heartbeat_topic: Option<&'a str>,
    checkpoint_topic: &'a str,
    slots: u32,
    delivery: &'a crate::config::Delivery,
    on_lost_resume_point: &'a crate::config::LostResumePoint,
    oversize: &'a crate::config::Oversize,
    errors: &'a crate::config::ErrorsConfig,
}

fn is_topic_name(strategy: &SubjectNameStrategy) -> bool {
    *strategy == SubjectNameStrategy::TopicName
}

/// Stages (and schemas) written differently but meaning the same (spacing, line breaks)
/// compare equal;
/// text that is not JSON (validation refuses it) is taken as it is.
fn stages(text: &Option<String>) -> Option<serde_json::Value> {
    text.as_ref()
        .map(|t| serde_json::from_str(t).unwrap_or_else(|_| serde_json::Value::String(t.clone())))
}

fn regex_order(config: &SourceConfig) -> Option<Vec<&str>> {
    let regexes: Vec<&str> = config
        .topic_namespace_map
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with('/'))
        .collect();
    (regexes.len() > 1).then_some(regexes)
}

/// The fingerprint of `config`: 16 hex digits, the same on every daemon and every build for
/// the same effective configuration.
pub fn fingerprint(config: &SourceConfig) -> String {
    let effective = Effective {
        database: &config.database,
        collection: config.collection.as_ref().map(|c| c.names()),
        collection_regex: &config.collection_regex,
        collection_exclude: &config.collection_exclude,
        collation: stages(&config.collation),
        show_expanded_events: config.show_expanded_events,
        pipeline: stages(&config.pipeline),
        full_document: &config.full_document,
        full_document_before_change: &config.full_document_before_change,
        publish_full_document_only: config.publish_full_document_only,
        tombstone_on_delete: config.tombstone_on_delete,
        startup_mode: &config.startup_mode,
        startup_timestamp: &config.startup_timestamp,
        copy_existing_pipeline: stages(&config.copy_existing_pipeline),
        copy_existing_namespace_regex: &config.copy_existing_namespace_regex,
        topic_prefix: &config.topic_prefix,
        topic_suffix: &config.topic_suffix,
        topic_separator: &config.topic_separator,
        topic_namespace_map: config
            .topic_namespace_map
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        topic_namespace_regex_order: regex_order(config),
        key: &config.key,
        format: &config.format,
        // What each part is written in, and with which schema, decides the records; the
        // registry decides which ids they carry (its credentials and timeout do not).
        key_format: config.key_format(),
        value_format: config.value_format(),
        key_schema: stages(&config.key_schema),
        value_schema: stages(&config.value_schema),
        schema_registry_url: config.schema_registry.as_ref().map(|r| r.url.as_str()),
        // The subjects decide which ids records carry.
        key_subject_name_strategy: config.key_subject_name_strategy,
        value_subject_name_strategy: config.value_subject_name_strategy,
        // Where heartbeats go matters only when they are sent; how often does not.
        heartbeat_topic: config
            .heartbeat_interval
            .map(|_| config.heartbeat_topic.as_str()),
        checkpoint_topic: &config.checkpoint_topic,
        slots: config.slots,
        delivery: &config.delivery,
        on_lost_resume_point: &config.on_lost_resume_point,
        oversize: &config.oversize,
        errors: &config.errors,
    };
    // Plain enums, strings, maps ordered by key: serialising cannot fail; should it, every
    // daemon gets the same empty text and the check sees agreement rather than crashing.
    let text = serde_json::to_vec(&effective).unwrap_or_default();
    format!("{:016x}", slots::fnv1a_64(&text))
}

/// The `client.id` of a group member that runs a pipeline with `fingerprint`, `base` being
/// the configured `client.id` (kept first, for quotas and logs on the broker).
pub fn client_id(base: &str, fingerprint: &str) -> String {
    format!("{base}{MARK}{fingerprint}")
}

/// The fingerprint a member published in its `client.id`, if any.
pub fn fingerprint_of(client_id: &str) -> Option<&str> {
    client_id
        .rsplit_once(MARK)
        .map(|(_, fp)| fp)
        .filter(|fp| !fp.is_empty())
}

/// Whether the members of a pipeline's group run it with this daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agreement {
    /// Every member that published a fingerprint published ours.
    Agreed,
    /// Some members run another configuration: their fingerprints.
    Mismatch {
        /// This daemon's fingerprint.
        ours: String,
        /// The other fingerprints seen in the group.
        theirs: BTreeSet<String>,
    },
}

/// Compares `ours` with the fingerprints in the `client.id`s of the group's members (this
/// daemon among them).
pub fn compare<'a>(ours: &str, members: impl IntoIterator<Item = &'a str>) -> Agreement {
    let theirs: BTreeSet<String> = members
        .into_iter()
        .filter_map(fingerprint_of)
        .filter(|fp| *fp != ours)
        .map(str::to_owned)
        .collect();
    if theirs.is_empty() {
        Agreement::Agreed
    } else {
        Agreement::Mismatch {
            ours: ours.to_owned(),
            theirs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Delivery;
    use crate::config::OutputFormat;

    fn source(extra: &str) -> SourceConfig {
        let text =
            format!("name = \"orders\"\ndatabase = \"shop\"\ncollection = [\"a\", \"b\"]\n{extra}");
        match toml::from_str(&text) {
            Ok(config) => config,
            Err(e) => panic!("test config: {e}"),
        }
    }

    #[test]
    fn the_fingerprint_is_stable_and_short() {
        let fp = fingerprint(&source(""));
        assert_eq!(fp.len(), 16);
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(fp, fingerprint(&source("")));
    }

    #[test]
    fn what_decides_the_records_changes_the_fingerprint() {
        let base = source("");
        let fp = fingerprint(&base);
        let mut changed = Vec::new();
        let mut c = base.clone();
        c.format = OutputFormat::Bson;
        changed.push(c);
        let mut c = base.clone();
        c.delivery = Delivery::ExactlyOnce;
        changed.push(c);
        let mut c = base.clone();
        c.slots = 8;
        changed.push(c);
        changed.push(source("topic_prefix = \"p\""));
        changed.push(source(
            "pipeline = '[{\"$match\": {\"operationType\": \"insert\"}}]'",
        ));
        changed.push(source("startup_mode = \"copy_existing\""));
        changed.push(source("[topic_namespace_map]\n\"shop.a\" = \"t\""));
        let mut c = base.clone();
        c.collection = Some(crate::config::Collections::One("a".to_owned()));
        changed.push(c);
        for config in changed {
            assert_ne!(fingerprint(&config), fp, "{config:?}");
        }
    }

    #[test]
    fn the_order_of_regex_keys_counts_and_no_other_order_does() {
        let fp = |map: &str| fingerprint(&source(&format!("[topic_namespace_map]\n{map}")));
        assert_ne!(
            fp("\"/a.*\" = \"x\"\n\"/.*\" = \"y\"\n"),
            fp("\"/.*\" = \"y\"\n\"/a.*\" = \"x\"\n")
        );
        assert_eq!(
            fp("\"a\" = \"x\"\n\"/.*\" = \"y\"\n\"b.c\" = \"z\"\n"),
            fp("\"b.c\" = \"z\"\n\"/.*\" = \"y\"\n\"a\" = \"x\"\n")
        );
    }

    #[test]
    fn formats_schemas_and_the_registry_change_the_fingerprint() {
        let registry = "[schema_registry]\nurl = \"http://r:8081\"\n";
        let avro = |extra: &str| source(&format!("format = \"avro\"\n{extra}\n{registry}"));
        let fp = fingerprint(&avro(""));
        let schema =
            r#"{"type": "record", "name": "D", "fields": [{"name": "_id", "type": "int"}]}"#;
        for (what, changed) in [
            ("key_format", avro("key_format = \"relaxed_json\"")),
            ("value_format", avro("value_format = \"json_schema\"")),
            ("key_schema", avro(&format!("key_schema = '{schema}'"))),
            ("value_schema", avro(&format!("value_schema = '{schema}'"))),
            (
                "key_subject_name_strategy",
                avro("key_subject_name_strategy = \"record_name\""),
            ),
            (
                "value_subject_name_strategy",
                avro("value_subject_name_strategy = \"topic_record_name\""),
            ),
            (
                "schema_registry.url",
                source("format = \"avro\"\n[schema_registry]\nurl = \"http://other:8081\"\n"),
            ),
        ] {
            assert_ne!(fingerprint(&changed), fp, "{what} left out");
        }
        // The registry's credentials and timeout are not part of what is written.
        let same = source(&format!(
            "format = \"avro\"\n{registry}username = \"u\"\npassword = \"p\"\ntimeout = \"3s\"\n"
        ));
        assert_eq!(fingerprint(&same), fp);
        // A schema written with other spacing is the same schema.
        let spaced = schema.replace(", ", ",\n  ");
        assert_eq!(
            fingerprint(&avro(&format!("value_schema = '''{spaced}'''"))),
            fingerprint(&avro(&format!("value_schema = '{schema}'"))),
        );
    }

    #[test]
    fn timeouts_sizes_and_spacing_do_not() {
        let fp = fingerprint(&source("pipeline = '[{\"$match\": {\"a\": 1}}]'"));
        let same = source(
            "pipeline = '''[ {\"$match\":\n {\"a\": 1} } ]'''\nmax_await_time = \"5s\"\nbatch_size = 10\n\
             checkpoint_interval = \"3s\"\nstall_timeout = \"1m\"\nqueue_capacity = 7\n\
             copy_existing_parallelism = 4\ncreate_topics = true\ntopic_partitions = 6\n\
             heartbeat_topic = \"unused-without-an-interval\"",
        );
        assert_eq!(fingerprint(&same), fp);
        // The name is the group's: daemons of one group share it anyway.
        let mut renamed = source("pipeline = '[{\"$match\": {\"a\": 1}}]'");
        renamed.name = "other".to_owned();
        assert_eq!(fingerprint(&renamed), fp);
    }

    #[test]
    fn the_fingerprint_travels_in_the_client_id() {
        let id = client_id("mongo-kafka-bridge", "0123456789abcdef");
        assert_eq!(id, "mongo-kafka-bridge#config=0123456789abcdef");
        assert_eq!(fingerprint_of(&id), Some("0123456789abcdef"));
        assert_eq!(fingerprint_of("a#config=x#config=fp"), Some("fp"));
        assert_eq!(fingerprint_of("mongo-kafka-bridge"), None);
        assert_eq!(fingerprint_of("mongo-kafka-bridge#config="), None);
    }

    #[test]
    fn members_agree_unless_one_published_another_fingerprint() {
        let ours = "aaaa";
        assert_eq!(compare(ours, []), Agreement::Agreed);
        assert_eq!(
            compare(ours, ["x#config=aaaa", "y#config=aaaa", "old-daemon"]),
            Agreement::Agreed,
            "members without a fingerprint are left out"
        );
        assert_eq!(
            compare(
                ours,
                [
                    "x#config=aaaa",
                    "y#config=bbbb",
                    "z#config=cccc",
                    "w#config=bbbb"
                ]
            ),
            Agreement::Mismatch {
                ours: ours.to_owned(),
                theirs: ["bbbb".to_owned(), "cccc".to_owned()].into_iter().collect(),
            }
        );
    }
}
