//! Dotted paths in documents: reading and setting one, and the allow- and block-list
//! projections (inside arrays too; `*`, `**` and `ab*` read as the MongoDB Kafka Connector's
//! `AllowListProjector` and `BlockListProjector` do). Used by the post-processors, the id
//! strategies and the write models.

use std::collections::HashSet;
use std::io::Write as _;

use bson::spec::{BinarySubtype, ElementType};
use bson::{Bson, Document, RawArray, RawBson, RawBsonRef, RawDocument, RawDocumentBuf};

use super::model::element_spans;

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

/// Whether [`allow_paths_raw`] takes `paths`: none with a wildcard (`*`, `**`, `ab*`) or an
/// empty segment. Those lists stay [`allow_paths`] on a [`Document`].
pub(super) fn raw_allowable(paths: &[String]) -> bool {
    paths
        .iter()
        .all(|path| !has_wildcard(path) && !path.split('.').any(str::is_empty))
}

/// [`allow_paths`] on raw BSON, for `paths` that [`raw_allowable`] takes, as the
/// `partial_value` id strategy reads a raw value (issue 24): the value's top-level fields
/// named by the list (a top-level name holding a dot is none of them, as `IdAssigner` reads
/// them), projected, appended to `out` as a document, without decoding the value into a
/// [`Document`]. Kept fields' bytes are copied as they are, documents (in arrays too)
/// projected alike, array items renumbered from 0; values a [`Document`] would not give back
/// byte for byte (a regular expression's options, which it sorts, a code-with-scope, an old
/// binary, an array in an array) are decoded and encoded again, as [`allow_paths`]'s result
/// holds them.
///
/// `Ok(false)` (and `out` to be dropped) when a kept field's name appears twice at one level,
/// or a level keeps more than [`MAX_KEPT`] fields: a [`Document`] keeps the last value at the
/// first place, so such a value is left to [`allow_paths`].
///
/// `found` (one per path) marks each path found in `value` as [`get_path`] finds it in a
/// [`Document`]: through documents only, each segment a field of that name.
pub(super) fn allow_paths_raw(
    value: &RawDocument,
    paths: &[String],
    out: &mut Vec<u8>,
    found: &mut [bool],
) -> Result<bool, String> {
    project_level(paths, "", value, out, Some(found))
}

/// Most fields a level keeps before [`allow_paths_raw`] hands the value back (the duplicate
/// check looks at the names kept so far).
const MAX_KEPT: usize = 16;

/// The path of field `key` under `prefix` (`""` at the top) when the allow list `paths` keeps
/// it ([`AllowList`]: it is one of `paths` or leads to one), borrowed from that path.
fn kept_path<'p>(paths: &'p [String], prefix: &str, key: &str) -> Option<&'p str> {
    paths.iter().find_map(|path| {
        let rest = if prefix.is_empty() {
            path.as_str()
        } else {
            path.strip_prefix(prefix)?.strip_prefix('.')?
        };
        let after = rest.strip_prefix(key)?;
        (after.is_empty() || after.starts_with('.')).then(|| &path[..path.len() - after.len()])
    })
}

/// The fields of `doc` (at `prefix`) that `paths` keep, projected into `out`; `found` (given
/// while the level is reached through documents only) as [`allow_paths_raw`] says.
fn project_level(
    paths: &[String],
    prefix: &str,
    doc: &RawDocument,
    out: &mut Vec<u8>,
    mut found: Option<&mut [bool]>,
) -> Result<bool, String> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut kept = [""; MAX_KEPT];
    let mut count = 0;
    let bytes = doc.as_bytes();
    for element in element_spans(doc) {
        let (element, span) = element.map_err(|e| e.to_string())?;
        let key = element.key();
        if prefix.is_empty() && key.contains('.') {
            continue;
        }
        let Some(path) = kept_path(paths, prefix, key) else {
            continue;
        };
        if count == MAX_KEPT || kept[..count].contains(&key) {
            return Ok(false);
        }
        kept[count] = key;
        count += 1;
        // A name holding a dot is no segment of a path.
        if let Some(found) = found.as_deref_mut().filter(|_| !key.contains('.')) {
            for (found, whole) in found.iter_mut().zip(paths) {
                *found |= whole == path;
            }
        }
        let value = element.value().map_err(|e| e.to_string())?;
        let whole = match value {
            RawBsonRef::Document(inner) => {
                head(out, ElementType::EmbeddedDocument, key);
                project_level(paths, path, inner, out, found.as_deref_mut())?
            }
            RawBsonRef::Array(items) => {
                head(out, ElementType::Array, key);
                project_items(paths, path, items, out)?
            }
            _ if !verbatim(value) => {
                reencoded(out, key, value)?;
                true
            }
            _ => {
                out.extend_from_slice(&bytes[span]);
                true
            }
        };
        if !whole {
            return Ok(false);
        }
    }
    close(out, start)?;
    Ok(true)
}

/// The items of an array at `prefix`: documents projected, the rest kept.
fn project_items(
    paths: &[String],
    prefix: &str,
    items: &RawArray,
    out: &mut Vec<u8>,
) -> Result<bool, String> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let doc = RawDocument::from_bytes(items.as_bytes()).map_err(|e| e.to_string())?;
    let bytes = doc.as_bytes();
    for (index, element) in element_spans(doc).enumerate() {
        let (element, span) = element.map_err(|e| e.to_string())?;
        let value = element.value().map_err(|e| e.to_string())?;
        match value {
            RawBsonRef::Document(inner) => {
                index_head(out, ElementType::EmbeddedDocument, index);
                if !project_level(paths, prefix, inner, out, None)? {
                    return Ok(false);
                }
            }
            RawBsonRef::Array(_) => reencoded(out, &index.to_string(), value)?,
            _ if !verbatim(value) => reencoded(out, &index.to_string(), value)?,
            _ => {
                index_head(out, element.element_type(), index);
                // The value's bytes, after its type, key and the key's NUL.
                out.extend_from_slice(&bytes[span.start + element.key().len() + 2..span.end]);
            }
        }
    }
    close(out, start)?;
    Ok(true)
}

/// Whether a [`Bson`] encodes `value` (not a document nor an array) with the bytes it has:
/// not a regular expression (options sorted), a code-with-scope (a scope document) or an
/// old binary (its inner length written again).
fn verbatim(value: RawBsonRef<'_>) -> bool {
    match value {
        RawBsonRef::RegularExpression(_) | RawBsonRef::JavaScriptCodeWithScope(_) => false,
        RawBsonRef::Binary(binary) => binary.subtype != BinarySubtype::BinaryOld,
        _ => true,
    }
}

/// An element's type, `key` and the key's NUL.
fn head(out: &mut Vec<u8>, kind: ElementType, key: &str) {
    out.push(kind as u8);
    out.extend_from_slice(key.as_bytes());
    out.push(0);
}

/// An array item's type, `index` as its key and the key's NUL.
fn index_head(out: &mut Vec<u8>, kind: ElementType, index: usize) {
    out.push(kind as u8);
    // Writing to a `Vec` does not fail.
    let _ = write!(out, "{index}");
    out.push(0);
}

/// The element `key`: `value` as [`Bson`] encodes it, as [`allow_paths`]'s result holds it.
fn reencoded(out: &mut Vec<u8>, key: &str, value: RawBsonRef<'_>) -> Result<(), String> {
    let value = Bson::try_from(value.to_raw_bson()).map_err(|e| e.to_string())?;
    let value = RawBson::try_from(value).map_err(|e| e.to_string())?;
    let mut one = RawDocumentBuf::new();
    one.append(key, value);
    let bytes = one.as_bytes();
    out.extend_from_slice(&bytes[4..bytes.len() - 1]);
    Ok(())
}

/// Ends the document begun at `start` of `out`: its NUL, and its length in its first bytes.
fn close(out: &mut Vec<u8>, start: usize) -> Result<(), String> {
    out.push(0);
    let len = i32::try_from(out.len() - start).map_err(|_| "too large for BSON".to_owned())?;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
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
