//! Post-processors, applied after the `_id` is set, in this order (or the one
//! `post_processor_chain` gives, the id among them): key projection, value
//! projection (allow- or block-list of dotted paths; `_id` always stays), `field_renames`,
//! `field_rename_regex`, `kafka_metadata_field`, then null removal. A path through an array applies to
//! every document in it, and `*`, `**` and `ab*` are read, as the MongoDB Kafka Connector's
//! projections do (`AllowListProjector`, `BlockListProjector`). Renames work on the key
//! and the value, as the connector's renamers (`super::rename`).

use bson::{doc, Bson, DateTime, Document};

use super::id::IdAssigner;
use super::model::{RecordError, SinkRecord, Stage};
use super::paths::{block_field, set_path, AllowList};
use super::rename::{Renamer, Side};
use crate::config::SinkConfig;

#[derive(Debug, Clone)]
enum Projection {
    None,
    Allow(AllowList),
    Block(Vec<String>),
}

impl Projection {
    fn new(allow: &[String], block: &[String]) -> Self {
        if !allow.is_empty() {
            Self::Allow(AllowList::new(allow))
        } else if !block.is_empty() {
            Self::Block(block.to_vec())
        } else {
            Self::None
        }
    }

    fn apply(&self, doc: &mut Document, keep_id: bool) {
        let id = match self {
            Self::None => return,
            _ if keep_id => doc.get("_id").cloned(),
            _ => None,
        };
        match self {
            Self::None => {}
            Self::Allow(list) => list.project(doc),
            Self::Block(fields) => {
                for field in fields {
                    block_field(doc, field);
                }
            }
        }
        if let Some(id) = id {
            if !doc.contains_key("_id") {
                doc.insert("_id", id);
            }
        }
    }
}

/// One step of the post-processor chain (`post_processor_chain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Id,
    Key,
    Value,
    Rename,
    RenameRegex,
    KafkaMetadata,
    RemoveNulls,
}

impl Step {
    /// The step a name of `post_processor_chain` stands for (validated at load).
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "id" => Self::Id,
            "allow_key" | "block_key" => Self::Key,
            "allow_value" | "block_value" => Self::Value,
            "rename" => Self::Rename,
            "rename_regex" => Self::RenameRegex,
            "kafka_metadata" => Self::KafkaMetadata,
            "remove_nulls" => Self::RemoveNulls,
            _ => return None,
        })
    }
}

/// The post-processors of one topic.
pub struct PostProcessor {
    key: Projection,
    value: Projection,
    renames: Renamer,
    regex_renames: Renamer,
    metadata_field: Option<String>,
    remove_nulls: bool,
    /// The order they run in.
    steps: Vec<Step>,
}

impl PostProcessor {
    /// The processors `config` asks for, in its `post_processor_chain` order or the default
    /// one; regexes are compiled once here.
    pub fn new(config: &SinkConfig) -> Result<Self, String> {
        let regex_renames = Renamer::regex(&config.field_rename_regex)?;
        let steps = match &config.post_processor_chain {
            None => vec![
                Step::Id,
                Step::Key,
                Step::Value,
                Step::Rename,
                Step::RenameRegex,
                Step::KafkaMetadata,
                Step::RemoveNulls,
            ],
            Some(chain) => {
                let mut steps = chain
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        Step::named(name).ok_or_else(|| {
                            format!("`post_processor_chain[{i}]`: `{name}` is not a post-processor")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if !steps.contains(&Step::Id) {
                    steps.insert(0, Step::Id);
                }
                steps
            }
        };
        Ok(Self {
            key: Projection::new(&config.key_allow_fields, &config.key_block_fields),
            value: Projection::new(&config.value_allow_fields, &config.value_block_fields),
            renames: Renamer::mapping(&config.field_renames, &config.key_field_renames),
            regex_renames,
            metadata_field: config.kafka_metadata_field.clone(),
            remove_nulls: config.remove_null_fields
                || config
                    .post_processor_chain
                    .as_ref()
                    .is_some_and(|c| c.iter().any(|n| n == "remove_nulls")),
            steps,
        })
    }

    /// Whether the processors leave values as they are (they may still project keys) and
    /// the id comes before them: the value's `_id` can then be set on its raw BSON first.
    pub fn keeps_values(&self) -> bool {
        matches!(self.value, Projection::None)
            && !self.renames.is_active()
            && !self.regex_renames.is_active()
            && self.metadata_field.is_none()
            && !self.remove_nulls
            && self.steps.first() == Some(&Step::Id)
    }

    /// Applies every processor but the id to `record`'s key (when a document) and value;
    /// answers how many fields the renames dropped because their new name was taken.
    pub fn apply(&self, record: &mut SinkRecord) -> Result<usize, RecordError> {
        let mut dropped = 0;
        for step in &self.steps {
            dropped += self.apply_step(*step, record)?;
        }
        Ok(dropped)
    }

    /// Applies every processor, the id strategy `ids` at its place in the chain; answers as
    /// [`PostProcessor::apply`].
    pub fn apply_with_id(
        &self,
        record: &mut SinkRecord,
        ids: &IdAssigner,
    ) -> Result<usize, RecordError> {
        let mut dropped = 0;
        for step in &self.steps {
            if *step == Step::Id {
                if let Some(mut value) = record.value.take() {
                    let assigned = ids.assign(record, &mut value);
                    record.value = Some(value);
                    assigned?;
                }
            } else {
                dropped += self.apply_step(*step, record)?;
            }
        }
        Ok(dropped)
    }

    /// Applies `step`; answers how many fields a rename dropped.
    fn apply_step(&self, step: Step, record: &mut SinkRecord) -> Result<usize, RecordError> {
        if step == Step::Key {
            if let Some(Bson::Document(key)) = &mut record.key {
                self.key.apply(key, false);
            }
            return Ok(0);
        }
        if let Step::Rename | Step::RenameRegex = step {
            let renamer = match step {
                Step::Rename => &self.renames,
                _ => &self.regex_renames,
            };
            let key = match &mut record.key {
                Some(Bson::Document(key)) => Some((Side::Key, key)),
                _ => None,
            };
            let value = record.value.as_mut().map(|v| (Side::Value, v));
            let mut dropped = 0;
            for (side, doc) in key.into_iter().chain(value) {
                dropped += renamer
                    .apply(side, doc)
                    .map_err(|e| RecordError::new(Stage::Process, e))?;
            }
            return Ok(dropped);
        }
        let metadata = match (step, &self.metadata_field) {
            (Step::KafkaMetadata, Some(_)) => {
                let mut meta = doc! {
                    "topic": record.topic.as_str(),
                    "partition": record.partition,
                    "offset": record.offset,
                };
                if let Some(ts) = record.timestamp {
                    meta.insert("timestamp", DateTime::from_millis(ts));
                }
                Some(meta)
            }
            _ => None,
        };
        let Some(value) = &mut record.value else {
            return Ok(0);
        };
        match step {
            Step::Id | Step::Key | Step::Rename | Step::RenameRegex => {}
            Step::Value => self.value.apply(value, true),
            Step::KafkaMetadata => {
                if let (Some(field), Some(meta)) = (&self.metadata_field, metadata) {
                    set_path(value, field, Bson::Document(meta));
                }
            }
            Step::RemoveNulls => {
                if self.remove_nulls {
                    remove_nulls(value);
                }
            }
        }
        Ok(0)
    }
}

/// Removes the null fields of `doc`, of its documents and of the documents in its arrays (an
/// array's null items stay), as the connector's `BsonDocumentNullValueRemover`.
pub fn remove_nulls(doc: &mut Document) {
    for (key, mut value) in std::mem::take(doc) {
        match &mut value {
            Bson::Null => continue,
            Bson::Document(inner) => remove_nulls(inner),
            Bson::Array(items) => {
                for item in items {
                    if let Bson::Document(inner) = item {
                        remove_nulls(inner);
                    }
                }
            }
            _ => {}
        }
        doc.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::paths::get_path;

    fn processor(extra: &str) -> PostProcessor {
        let text = format!("name = \"s\"\ntopics = [\"t\"]\ndatabase = \"db\"\n{extra}");
        let config: SinkConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        PostProcessor::new(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn record(value: Document) -> SinkRecord {
        SinkRecord {
            topic: "t".into(),
            partition: 2,
            offset: 9,
            timestamp: Some(1000),
            key: Some(Bson::Document(doc! {"k": 1, "secret": 2})),
            value: Some(value),
        }
    }

    fn value_after(extra: &str, value: Document) -> Document {
        let mut r = record(value);
        processor(extra).apply(&mut r).expect("applies");
        r.value.expect("value")
    }

    #[test]
    fn allow_lists_keep_nested_paths_and_the_id() {
        let out = value_after(
            "value_allow_fields = [\"a.b\", \"list.x\"]",
            doc! {"_id": 1, "a": {"b": 1, "c": 2}, "d": 3, "list": [{"x": 1, "y": 2}, {"y": 3}]},
        );
        assert_eq!(out, doc! {"a": {"b": 1}, "list": [{"x": 1}, {}], "_id": 1});
    }

    #[test]
    fn block_lists_remove_nested_paths_but_never_the_id() {
        let out = value_after(
            "value_block_fields = [\"a.b\", \"_id\", \"list.y\"]",
            doc! {"_id": 1, "a": {"b": 1, "c": 2}, "list": [{"x": 1, "y": 2}]},
        );
        assert_eq!(out, doc! {"_id": 1, "a": {"c": 2}, "list": [{"x": 1}]});
        let mut r = record(doc! {"_id": 1});
        processor("key_block_fields = [\"secret\"]")
            .apply(&mut r)
            .expect("applies");
        assert_eq!(r.key, Some(Bson::Document(doc! {"k": 1})));
    }

    #[test]
    fn renames_by_mapping_and_regex() {
        let out = value_after(
            "field_renames = { \"a.b\" = \"bee\", \"top\" = \"TOP\" }",
            doc! {"a": {"b": 1}, "top": 2},
        );
        assert_eq!(out, doc! {"a": {"bee": 1}, "TOP": 2});
        let out = value_after(
            "field_rename_regex = [{ pattern = \"(^|\\\\.)my_\", replace = \"$1\" }]",
            doc! {"my_a": 1, "sub": {"my_b": 2}},
        );
        assert_eq!(out, doc! {"a": 1, "sub": {"b": 2}});
        // The connector's way with a name taken: the existing field stays, the renamed goes,
        // counted.
        let mut r = record(doc! {"a": 1, "b": 2});
        let dropped =
            processor("field_renames = { \"a\" = \"b\" }\nkey_field_renames = { k = \"secret\" }")
                .apply(&mut r)
                .expect("applies");
        assert_eq!((r.value, dropped), (Some(doc! {"b": 2}), 2));
    }

    #[test]
    fn key_fields_are_renamed_by_mapping_and_by_selected_regex() {
        let mut r = record(doc! {"my_v": 1});
        processor(
            "key_field_renames = { \"k\" = \"id\" }\n\
             field_rename_regex = [{ regexp = \"^key\\\\..*\", pattern = \"^sec\", replace = \"pub\" }, \
             { regexp = \"^value\\\\.my_.*\", pattern = \"my_\", replace = \"\" }]",
        )
        .apply(&mut r)
        .expect("applies");
        assert_eq!(r.key, Some(Bson::Document(doc! {"id": 1, "pubret": 2})));
        assert_eq!(r.value, Some(doc! {"v": 1}));
        let mut r = record(doc! {"_id": 1, "sub": {"x": 1}});
        let err = processor(
            "field_rename_regex = [{ regexp = \"^value\\\\..*\", pattern = \"^.*$\", replace = \"same\" }]",
        )
        .apply(&mut r)
        .expect_err("two fields to one name");
        assert!(err.message.contains("renamed to `same` too"), "{err}");
    }

    #[test]
    fn kafka_metadata_is_added() {
        let out = value_after("kafka_metadata_field = \"meta.kafka\"", doc! {"_id": 1});
        assert_eq!(
            out,
            doc! {"_id": 1, "meta": {"kafka": {"topic": "t", "partition": 2, "offset": 9_i64, "timestamp": DateTime::from_millis(1000)}}}
        );
    }

    #[test]
    fn paths_are_read_and_written() {
        let mut d = doc! {"a": {"b": 1}};
        assert_eq!(get_path(&d, "a.b"), Some(&Bson::Int32(1)));
        assert_eq!(get_path(&d, "a.c"), None);
        set_path(&mut d, "x.y", Bson::Int32(2));
        assert_eq!(d, doc! {"a": {"b": 1}, "x": {"y": 2}});
    }
}
