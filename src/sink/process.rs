//! Post-processors, applied after the `_id` is set, in this order: key projection, value
//! projection (allow- or block-list of dotted paths; `_id` always stays), `field_renames`,
//! `field_rename_regex`, then `kafka_metadata_field`. A path through an array applies to
//! every document in it, as the MongoDB Kafka Connector's projections do.

use bson::{doc, Bson, DateTime, Document};
use regex::Regex;

use super::model::{RecordError, SinkRecord, Stage};
use crate::config::SinkConfig;

/// The value at dotted `path` of `doc`, not looking into arrays.
pub fn get_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut segments = path.split('.');
    let mut current = doc.get(segments.next()?)?;
    for segment in segments {
        current = current.as_document()?.get(segment)?;
    }
    Some(current)
}

/// Sets `value` at dotted `path` of `doc`, creating documents on the way.
pub fn set_path(doc: &mut Document, path: &str, value: Bson) {
    match path.split_once('.') {
        None => {
            doc.insert(path, value);
        }
        Some((head, rest)) => {
            if !matches!(doc.get(head), Some(Bson::Document(_))) {
                doc.insert(head, Document::new());
            }
            if let Some(Bson::Document(inner)) = doc.get_mut(head) {
                set_path(inner, rest, value);
            }
        }
    }
}

/// The parsed form of a list of dotted paths: a tree of segments; a leaf keeps the whole
/// subtree.
#[derive(Debug, Default, Clone)]
struct PathTree {
    children: Vec<(String, PathTree)>,
    leaf: bool,
}

impl PathTree {
    fn new(paths: &[String]) -> Self {
        let mut root = Self::default();
        for path in paths {
            let mut node = &mut root;
            for segment in path.split('.') {
                let at = match node.children.iter().position(|(s, _)| s == segment) {
                    Some(at) => at,
                    None => {
                        node.children.push((segment.to_owned(), Self::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[at].1;
            }
            node.leaf = true;
        }
        root
    }

    fn child(&self, name: &str) -> Option<&PathTree> {
        self.children
            .iter()
            .find(|(s, _)| s == name)
            .map(|(_, t)| t)
    }
}

fn allow_value(value: Bson, tree: &PathTree) -> Option<Bson> {
    match value {
        Bson::Document(doc) => Some(Bson::Document(allow_doc(doc, tree))),
        Bson::Array(items) => Some(Bson::Array(
            items
                .into_iter()
                .filter_map(|i| match i {
                    Bson::Document(_) | Bson::Array(_) => allow_value(i, tree),
                    _ => None,
                })
                .collect(),
        )),
        _ => None,
    }
}

fn allow_doc(doc: Document, tree: &PathTree) -> Document {
    let mut out = Document::new();
    for (key, value) in doc {
        let Some(node) = tree.child(&key) else {
            continue;
        };
        if node.leaf {
            out.insert(key, value);
        } else if let Some(kept) = allow_value(value, node) {
            out.insert(key, kept);
        }
    }
    out
}

fn block_doc(doc: &mut Document, tree: &PathTree) {
    for (segment, node) in &tree.children {
        if node.leaf {
            doc.remove(segment);
        } else if let Some(value) = doc.get_mut(segment) {
            block_value(value, node);
        }
    }
}

fn block_value(value: &mut Bson, tree: &PathTree) {
    match value {
        Bson::Document(doc) => block_doc(doc, tree),
        Bson::Array(items) => items.iter_mut().for_each(|i| block_value(i, tree)),
        _ => {}
    }
}

/// `doc` without the dotted `paths` (inside arrays too).
pub fn block_paths(mut doc: Document, paths: &[String]) -> Document {
    block_doc(&mut doc, &PathTree::new(paths));
    doc
}

/// `doc` with only the dotted `paths` (nested structure kept).
pub fn allow_paths(doc: Document, paths: &[String]) -> Document {
    allow_doc(doc, &PathTree::new(paths))
}

#[derive(Debug, Clone)]
enum Projection {
    None,
    Allow(PathTree),
    Block(PathTree),
}

impl Projection {
    fn new(allow: &[String], block: &[String]) -> Self {
        if !allow.is_empty() {
            Self::Allow(PathTree::new(allow))
        } else if !block.is_empty() {
            Self::Block(PathTree::new(block))
        } else {
            Self::None
        }
    }

    fn apply(&self, doc: &mut Document, keep_id: bool) {
        match self {
            Self::None => {}
            Self::Allow(tree) => {
                let id = if keep_id {
                    doc.get("_id").cloned()
                } else {
                    None
                };
                let mut kept = allow_doc(std::mem::take(doc), tree);
                if let Some(id) = id {
                    kept.insert("_id", id);
                }
                *doc = kept;
            }
            Self::Block(tree) => {
                let id = if keep_id {
                    doc.get("_id").cloned()
                } else {
                    None
                };
                block_doc(doc, tree);
                if let Some(id) = id {
                    doc.insert("_id", id);
                }
            }
        }
    }
}

/// The post-processors of one topic.
pub struct PostProcessor {
    key: Projection,
    value: Projection,
    renames: Vec<(String, String)>,
    regex_renames: Vec<(Regex, String)>,
    metadata_field: Option<String>,
}

impl PostProcessor {
    /// The processors `config` asks for; regexes are compiled once here.
    pub fn new(config: &SinkConfig) -> Result<Self, String> {
        let regex_renames = config
            .field_rename_regex
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Regex::new(&r.pattern)
                    .map(|re| (re, r.replace.clone()))
                    .map_err(|e| format!("`field_rename_regex[{i}].pattern`: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            key: Projection::new(&config.key_allow_fields, &config.key_block_fields),
            value: Projection::new(&config.value_allow_fields, &config.value_block_fields),
            renames: config
                .field_renames
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
            regex_renames,
            metadata_field: config.kafka_metadata_field.clone(),
        })
    }

    /// Whether the processors leave values as they are (they may still project keys).
    pub fn keeps_values(&self) -> bool {
        matches!(self.value, Projection::None)
            && self.renames.is_empty()
            && self.regex_renames.is_empty()
            && self.metadata_field.is_none()
    }

    /// Applies every processor to `record`'s key (when a document) and value.
    pub fn apply(&self, record: &mut SinkRecord) -> Result<(), RecordError> {
        if let Some(Bson::Document(key)) = &mut record.key {
            self.key.apply(key, false);
        }
        let metadata = self.metadata_field.as_ref().map(|_| {
            let mut meta = doc! {
                "topic": record.topic.as_str(),
                "partition": record.partition,
                "offset": record.offset,
            };
            if let Some(ts) = record.timestamp {
                meta.insert("timestamp", DateTime::from_millis(ts));
            }
            meta
        });
        let Some(value) = &mut record.value else {
            return Ok(());
        };
        self.value.apply(value, true);
        for (from, to) in &self.renames {
            rename(value, from, to)?;
        }
        if !self.regex_renames.is_empty() {
            regex_rename(value, "", &self.regex_renames)?;
        }
        if let (Some(field), Some(meta)) = (&self.metadata_field, metadata) {
            set_path(value, field, Bson::Document(meta));
        }
        Ok(())
    }
}

/// Renames the last segment of dotted `path` to `to`, in every document the path reaches.
fn rename(doc: &mut Document, path: &str, to: &str) -> Result<(), RecordError> {
    match path.split_once('.') {
        None => {
            if let Some(value) = doc.remove(path) {
                if doc.contains_key(to) {
                    return Err(RecordError::new(
                        Stage::Process,
                        format!("renaming `{path}` to `{to}`: the document already has `{to}`"),
                    ));
                }
                doc.insert(to, value);
            }
            Ok(())
        }
        Some((head, rest)) => match doc.get_mut(head) {
            Some(Bson::Document(inner)) => rename(inner, rest, to),
            Some(Bson::Array(items)) => {
                for item in items {
                    if let Bson::Document(inner) = item {
                        rename(inner, rest, to)?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        },
    }
}

/// Renames every field whose dotted path matches a regex, depth first.
fn regex_rename(
    doc: &mut Document,
    prefix: &str,
    renames: &[(Regex, String)],
) -> Result<(), RecordError> {
    let old = std::mem::take(doc);
    for (key, mut value) in old {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match &mut value {
            Bson::Document(inner) => regex_rename(inner, &path, renames)?,
            Bson::Array(items) => {
                for item in items {
                    if let Bson::Document(inner) = item {
                        regex_rename(inner, &path, renames)?;
                    }
                }
            }
            _ => {}
        }
        // The regexes rewrite the dotted path; its last segment is the new name.
        let mut renamed = path.clone();
        for (re, replace) in renames {
            renamed = re.replace_all(&renamed, replace.as_str()).into_owned();
        }
        let name = if renamed == path {
            key
        } else {
            renamed.rsplit('.').next().unwrap_or_default().to_owned()
        };
        if name.is_empty() || doc.contains_key(&name) {
            return Err(RecordError::new(
                Stage::Process,
                format!("renaming `{path}` by regex gives `{name}`, which is empty or taken"),
            ));
        }
        doc.insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut r = record(doc! {"a": 1, "b": 2});
        let err = processor("field_renames = { \"a\" = \"b\" }")
            .apply(&mut r)
            .expect_err("taken");
        assert!(err.message.contains("already has `b`"), "{err}");
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
