//! The headers of a dead letter, one vocabulary for source and sink pipelines. Pure.
//!
//! Rules:
//! - `mkb` headers (the default) say what went wrong and where it came from: `mkb.error`
//!   (the reason), `mkb.error.stage`, `mkb.pipeline`, `mkb.origin` (namespace and document
//!   key, or `topic/partition@offset`), `mkb.topic` (where a source meant to publish it),
//!   `mkb.source.topic`, `mkb.source.partition`, `mkb.source.offset` (the record a sink
//!   read), and `mkb.error.omitted` when parts were left out to fit the dead letter topic;
//! - `connect` headers are Kafka Connect's (`__connect.errors.*`, as its dead letter queue
//!   reporter writes them with `errors.deadletterqueue.context.headers.enable`), so tools
//!   built on them read ours: the stage mapped to Connect's stage names, the pipeline as the
//!   connector name, task 0, no stack trace;
//! - a header whose value is unknown (a source event has no Kafka position) is left out.

use crate::config::DeadLetterHeaders;

/// What a dead letter says about itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadLetter<'a> {
    /// The pipeline.
    pub pipeline: &'a str,
    /// Why it is dead-lettered.
    pub reason: &'a str,
    /// The stage that failed (`decode`, `write`, `too_large`, `format`, ...).
    pub stage: &'a str,
    /// What the record was: namespace and document key, or the Kafka position.
    pub origin: &'a str,
    /// A source's: the topic the event was meant for.
    pub target_topic: Option<&'a str>,
    /// A sink's: the record's topic, partition and offset.
    pub source: Option<(&'a str, i32, i64)>,
    /// Which parts were left out to fit, when any.
    pub omitted: Option<&'a str>,
}

/// Connect's name of a stage of ours.
fn connect_stage(stage: &str) -> &'static str {
    match stage {
        "decode" => "VALUE_CONVERTER",
        "namespace" | "id" | "process" | "cdc" | "write_model" | "size" => "TRANSFORMATION",
        "write" => "TASK_PUT",
        "format" => "TASK_POLL",
        "too_large" => "KAFKA_PRODUCE",
        _ => "TASK_PUT",
    }
}

/// The headers of `letter`, named as `style` says, in a stable order.
pub fn headers(style: DeadLetterHeaders, letter: &DeadLetter<'_>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let (partition, offset) = match letter.source {
        Some((_, p, o)) => (Some(p.to_string()), Some(o.to_string())),
        None => (None, None),
    };
    if matches!(style, DeadLetterHeaders::Mkb | DeadLetterHeaders::Both) {
        let fields: [(&'static str, Option<String>); 9] = [
            ("mkb.error", Some(letter.reason.to_owned())),
            ("mkb.error.stage", Some(letter.stage.to_owned())),
            ("mkb.error.omitted", letter.omitted.map(str::to_owned)),
            ("mkb.pipeline", Some(letter.pipeline.to_owned())),
            ("mkb.origin", Some(letter.origin.to_owned())),
            ("mkb.topic", letter.target_topic.map(str::to_owned)),
            (
                "mkb.source.topic",
                letter.source.map(|(t, _, _)| t.to_owned()),
            ),
            ("mkb.source.partition", partition.clone()),
            ("mkb.source.offset", offset.clone()),
        ];
        out.extend(fields.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    }
    if matches!(style, DeadLetterHeaders::Connect | DeadLetterHeaders::Both) {
        let kind = if letter.source.is_some() {
            "sink"
        } else {
            "source"
        };
        let fields: [(&'static str, Option<String>); 9] = [
            (
                "__connect.errors.topic",
                letter
                    .source
                    .map(|(t, _, _)| t.to_owned())
                    .or_else(|| letter.target_topic.map(str::to_owned)),
            ),
            ("__connect.errors.partition", partition),
            ("__connect.errors.offset", offset),
            (
                "__connect.errors.connector.name",
                Some(letter.pipeline.to_owned()),
            ),
            ("__connect.errors.task.id", Some("0".to_owned())),
            (
                "__connect.errors.stage",
                Some(connect_stage(letter.stage).to_owned()),
            ),
            (
                "__connect.errors.class.name",
                Some(format!("mongo-kafka-bridge.{kind}")),
            ),
            (
                "__connect.errors.exception.class.name",
                Some(format!("mongo-kafka-bridge.{kind}.{}", letter.stage)),
            ),
            (
                "__connect.errors.exception.message",
                Some(letter.reason.to_owned()),
            ),
        ];
        out.extend(fields.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink_letter() -> DeadLetter<'static> {
        DeadLetter {
            pipeline: "p",
            reason: "duplicate key",
            stage: "write",
            origin: "in/2@7",
            source: Some(("in", 2, 7)),
            ..DeadLetter::default()
        }
    }

    fn names(headers: &[(&'static str, String)]) -> Vec<&'static str> {
        headers.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn mkb_headers_of_a_sink_record() {
        let h = headers(DeadLetterHeaders::Mkb, &sink_letter());
        assert_eq!(
            h,
            [
                ("mkb.error", "duplicate key".to_owned()),
                ("mkb.error.stage", "write".to_owned()),
                ("mkb.pipeline", "p".to_owned()),
                ("mkb.origin", "in/2@7".to_owned()),
                ("mkb.source.topic", "in".to_owned()),
                ("mkb.source.partition", "2".to_owned()),
                ("mkb.source.offset", "7".to_owned()),
            ]
        );
    }

    #[test]
    fn connect_headers_use_connects_names_and_stages() {
        let h = headers(DeadLetterHeaders::Connect, &sink_letter());
        assert_eq!(
            h,
            [
                ("__connect.errors.topic", "in".to_owned()),
                ("__connect.errors.partition", "2".to_owned()),
                ("__connect.errors.offset", "7".to_owned()),
                ("__connect.errors.connector.name", "p".to_owned()),
                ("__connect.errors.task.id", "0".to_owned()),
                ("__connect.errors.stage", "TASK_PUT".to_owned()),
                (
                    "__connect.errors.class.name",
                    "mongo-kafka-bridge.sink".to_owned()
                ),
                (
                    "__connect.errors.exception.class.name",
                    "mongo-kafka-bridge.sink.write".to_owned()
                ),
                (
                    "__connect.errors.exception.message",
                    "duplicate key".to_owned()
                ),
            ]
        );
        assert_eq!(
            headers(DeadLetterHeaders::Both, &sink_letter()).len(),
            7 + 9,
            "both sets"
        );
    }

    #[test]
    fn a_source_event_has_no_kafka_position() {
        let letter = DeadLetter {
            pipeline: "s",
            reason: "too large",
            stage: "too_large",
            origin: "db.c {\"_id\": 1}",
            target_topic: Some("db.c"),
            omitted: Some("value"),
            ..DeadLetter::default()
        };
        let h = headers(DeadLetterHeaders::Both, &letter);
        let n = names(&h);
        assert!(
            n.contains(&"mkb.topic") && n.contains(&"mkb.error.omitted"),
            "{n:?}"
        );
        assert!(
            !n.iter()
                .any(|k| k.ends_with("partition") || k.ends_with("offset")),
            "{n:?}"
        );
        assert!(h.contains(&("__connect.errors.topic", "db.c".to_owned())));
        assert!(h.contains(&("__connect.errors.stage", "KAFKA_PRODUCE".to_owned())));
    }
}
