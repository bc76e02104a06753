//! Dotted paths in documents: reading and setting one, and the allow- and block-list
//! projections (inside arrays too; `*`, `**` and `ab*` read as the MongoDB Kafka Connector's
//! `AllowListProjector` and `BlockListProjector` do). Used by the post-processors, the id
//! strategies and the write models.

use std::collections::HashSet;

use bson::{Bson, Document};

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

/// An allow-list of dotted paths as the MongoDB Kafka Connector's `AllowListProjector` reads
/// it: each path with all its prefixes (so a kept field's parents stay); a segment `*` stands
/// for any one field, a path `**` keeps everything, `a.**` all of `a`, a top-level `ab*`
/// every field whose path starts with `ab`. Documents in arrays are projected like the array.
#[derive(Debug, Clone)]
pub(super) struct AllowList {
    /// The paths and their prefixes.
    fields: HashSet<String>,
}

impl AllowList {
    pub(super) fn new(paths: &[String]) -> Self {
        let mut fields = HashSet::new();
        for path in paths {
            let mut entry = path.as_str();
            fields.insert(entry.to_owned());
            while let Some((prefix, _)) = entry.rsplit_once('.') {
                if !prefix.is_empty() {
                    fields.insert(prefix.to_owned());
                }
                entry = prefix;
            }
        }
        Self { fields }
    }

    pub(super) fn project(&self, doc: &mut Document) {
        if !self.fields.contains(DOUBLE_WILDCARD) {
            self.project_at("", doc);
        }
    }

    pub(super) fn project_at(&self, prefix: &str, doc: &mut Document) {
        for (key, mut value) in std::mem::take(doc) {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if !self.fields.contains(&path) && !self.wildcard_match(&path) {
                continue;
            }
            // `path.**` keeps the whole field, documents in an array included.
            if !self.fields.contains(&format!("{path}.{DOUBLE_WILDCARD}")) {
                match &mut value {
                    Bson::Document(inner) => self.project_at(&path, inner),
                    Bson::Array(items) => {
                        for item in items {
                            if let Bson::Document(inner) = item {
                                self.project_at(&path, inner);
                            }
                        }
                    }
                    _ => {}
                }
            }
            doc.insert(key, value);
        }
    }

    /// Whether `path` matches a top-level `prefix*` or a path with `*` segments.
    pub(super) fn wildcard_match(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('.').collect();
        self.fields.iter().any(|field| {
            if !field.contains('.') && field != SINGLE_WILDCARD {
                if let Some(start) = field.strip_suffix('*') {
                    if path.starts_with(start) {
                        return true;
                    }
                }
            }
            let segments: Vec<&str> = field.split('.').collect();
            segments.len() == parts.len()
                && segments
                    .iter()
                    .zip(&parts)
                    .all(|(s, p)| *s == SINGLE_WILDCARD || s == p)
        })
    }
}

const SINGLE_WILDCARD: &str = "*";
const DOUBLE_WILDCARD: &str = "**";

/// Removes dotted `field` from `doc` as the MongoDB Kafka Connector's `BlockListProjector`
/// does: a segment `*` is every field there (the fields that are not documents go; the
/// documents are looked into for the rest of the path), `**` is everything, a top-level
/// `ab*` every field whose name starts with `ab`; documents in arrays are looked into.
pub(super) fn block_field(doc: &mut Document, field: &str) {
    let (first, rest) = field.split_once('.').unwrap_or((field, ""));
    if first == SINGLE_WILDCARD || first == DOUBLE_WILDCARD {
        if first == DOUBLE_WILDCARD {
            doc.clear();
            return;
        }
        for (key, mut value) in std::mem::take(doc) {
            if let Bson::Document(inner) = &mut value {
                if !rest.is_empty() {
                    block_field(inner, rest);
                }
                doc.insert(key, value);
            }
        }
    } else if rest.is_empty() {
        match field.strip_suffix('*') {
            Some(start) => {
                for (key, value) in std::mem::take(doc) {
                    if !key.starts_with(start) {
                        doc.insert(key, value);
                    }
                }
            }
            None => {
                doc.remove(field);
            }
        }
    } else {
        match doc.get_mut(first) {
            Some(Bson::Document(inner)) => block_field(inner, rest),
            Some(Bson::Array(items)) => {
                for item in items {
                    if let Bson::Document(inner) = item {
                        block_field(inner, rest);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Whether `path` holds a wildcard (`*`, `**`, `ab*`).
pub fn has_wildcard(path: &str) -> bool {
    path.contains('*')
}

/// `doc` without the dotted `paths` (inside arrays too; wildcards as the connector's).
pub fn block_paths(mut doc: Document, paths: &[String]) -> Document {
    for path in paths {
        block_field(&mut doc, path);
    }
    doc
}

/// `doc` with only the dotted `paths` (nested structure kept; wildcards as the connector's).
pub fn allow_paths(mut doc: Document, paths: &[String]) -> Document {
    AllowList::new(paths).project(&mut doc);
    doc
}
