//! `topic_namespace_map`: a source's namespace → topic rules, read as the MongoDB Kafka
//! Connector reads `topic.namespace.map` (its `DefaultTopicMapper`). This file owns the
//! table (kept in the order written), the meaning of each key and topic template, their
//! checks and the warnings about keys the connector would read otherwise; `source::topic`
//! applies the rules.
//!
//! The keys, as the connector's:
//! - `db.coll`: that namespace; the value is its topic.
//! - `db`: every namespace of the database; the topic is the value, the separator and the
//!   collection (the value alone for database-wide events such as `dropDatabase`).
//! - `/pattern`: a regex that must match the whole namespace (`db.coll`, or `db` for
//!   database-wide events); the value is a template where `{db}`, `{coll}`, `{sep}`,
//!   `{sep_coll}`, `{coll_sep}` and `{sep_coll_sep}` are replaced. Regex keys are tried in
//!   the order written.
//! - `*`: any other namespace; the value is its topic.
//!
//! An empty value leaves its key out, as the connector does. Two forms of this daemon's
//! before the connector's rules were followed keep their meaning, with a warning at load:
//! `db.*` (every collection of `db` into one topic) and `/pattern/` (the regex found
//! anywhere in the namespace, `{db}`/`{coll}` in the topic).

use std::collections::HashMap;
use std::fmt;

use regex::Regex;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `topic_namespace_map` table, in the order its keys are written (regex keys are
/// tried in that order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceMap(Vec<(String, String)>);

impl NamespaceMap {
    /// The keys and their topics, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// How many keys the table has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Puts the keys in the order of `order` (keys it does not name keep their place after
    /// those it does). Loading goes through tables that forget the order written; the file's
    /// own parse remembers it.
    pub(crate) fn reorder<'a>(&mut self, order: impl IntoIterator<Item = &'a str>) {
        let rank: HashMap<&str, usize> =
            order.into_iter().enumerate().map(|(i, k)| (k, i)).collect();
        self.0
            .sort_by_key(|(k, _)| rank.get(k.as_str()).copied().unwrap_or(usize::MAX));
    }
}

impl FromIterator<(String, String)> for NamespaceMap {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut map = Self::default();
        for (key, value) in iter {
            // As a table: a key given again keeps its place and takes the new value.
            match map.0.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => map.0.push((key, value)),
            }
        }
        map
    }
}

impl Serialize for NamespaceMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for NamespaceMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = NamespaceMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of namespace patterns and topic names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = access.next_entry::<String, String>()? {
                    entries.push(entry);
                }
                Ok(entries.into_iter().collect())
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// What a key of the map means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind<'a> {
    /// `*`: any namespace no other key maps.
    Wildcard,
    /// `/pattern`: matches the whole namespace (the connector's form).
    Regex(&'a str),
    /// `/pattern/`: found anywhere in the namespace (this daemon's earlier form).
    LegacyRegex(&'a str),
    /// `db.*`: every namespace of `db` into one topic (this daemon's form).
    WholeDatabase(&'a str),
    /// `db`: every namespace of `db`, the collection appended to the topic.
    Database(&'a str),
    /// `db.coll`: that namespace.
    Namespace(&'a str),
}

/// What `key` means, or why it means nothing.
pub fn key_kind(key: &str) -> Result<KeyKind<'_>, String> {
    if key.is_empty() {
        return Err("an empty key matches no namespace".to_owned());
    }
    if key == "*" {
        return Ok(KeyKind::Wildcard);
    }
    if let Some(pattern) = key.strip_prefix('/') {
        return Ok(match pattern.strip_suffix('/') {
            Some(legacy) => KeyKind::LegacyRegex(legacy),
            None => KeyKind::Regex(pattern),
        });
    }
    if key.contains('/') {
        return Err(
            "`/` is not allowed in a namespace key (a regex key starts with `/`, as in the connector)"
                .to_owned(),
        );
    }
    Ok(match key.split_once('.') {
        Some((db, "*")) if !db.is_empty() => KeyKind::WholeDatabase(db),
        Some(_) => KeyKind::Namespace(key),
        None => KeyKind::Database(key),
    })
}

/// A placeholder of a regex key's topic template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    Db,
    Sep,
    Coll,
    SepColl,
    CollSep,
    SepCollSep,
}

impl Placeholder {
    fn named(name: &str) -> Option<Self> {
        // Case-sensitive, as the connector's.
        Some(match name {
            "db" => Self::Db,
            "sep" => Self::Sep,
            "coll" => Self::Coll,
            "sep_coll" => Self::SepColl,
            "coll_sep" => Self::CollSep,
            "sep_coll_sep" => Self::SepCollSep,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Placeholder(Placeholder),
}

/// The topic template of a regex key: text and `{placeholder}`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate(Vec<Part>);

impl TopicTemplate {
    /// Parses a template; `{` and `}` only enclose a placeholder's name, as in the connector.
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = template;
        while let Some(i) = rest.find(['{', '}']) {
            if rest[i..].starts_with('}') {
                return Err(format!("`{template}`: unexpected `}}`"));
            }
            text.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let end = after
                .find(['{', '}'])
                .filter(|&j| after[j..].starts_with('}'))
                .ok_or_else(|| format!("`{template}`: unexpected `{{`"))?;
            let name = &after[..end];
            let placeholder = Placeholder::named(name).ok_or_else(|| {
                format!(
                    "`{template}`: `{{{name}}}` is not a placeholder (`{{db}}`, `{{coll}}`, `{{sep}}`, `{{sep_coll}}`, `{{coll_sep}}`, `{{sep_coll_sep}}`)"
                )
            })?;
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Placeholder(placeholder));
            rest = &after[end + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self(parts))
    }

    /// The topic of the namespace `db.coll` (`coll` absent for database-wide events).
    pub fn expand(&self, db: &str, coll: Option<&str>, separator: &str) -> String {
        let coll = coll.unwrap_or_default();
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Placeholder(p) => {
                    let (before, value, after) = match p {
                        Placeholder::Db => ("", db, ""),
                        Placeholder::Sep => ("", separator, ""),
                        Placeholder::Coll => ("", coll, ""),
                        Placeholder::SepColl => (separator, coll, ""),
                        Placeholder::CollSep => ("", coll, separator),
                        Placeholder::SepCollSep => (separator, coll, separator),
                    };
                    if matches!(p, Placeholder::Db | Placeholder::Sep) || !coll.is_empty() {
                        out.push_str(before);
                        out.push_str(value);
                        out.push_str(after);
                    }
                }
            }
        }
        out
    }
}

/// A regex key and its topic template.
#[derive(Debug, Clone)]
pub struct RegexRule {
    /// The key as written.
    pub key: String,
    /// The key's pattern, anchored at both ends unless the key is of the earlier form.
    pub regex: Regex,
    /// The topic template.
    pub template: TopicTemplate,
}

/// The rules of a map, by kind; keys with an empty topic are left out.
#[derive(Debug, Clone, Default)]
pub struct NamespaceRules {
    /// `db.coll` → topic.
    pub namespaces: HashMap<String, String>,
    /// `db` → topic the collection is appended to.
    pub databases: HashMap<String, String>,
    /// `db` of a `db.*` key → topic.
    pub whole_databases: HashMap<String, String>,
    /// Regex keys, in the order written.
    pub regexes: Vec<RegexRule>,
    /// The `*` key's topic.
    pub wildcard: Option<String>,
}

impl NamespaceRules {
    /// The rules of `map`, or every key that means nothing, with why.
    pub fn new(map: &NamespaceMap) -> Result<Self, Vec<(String, String)>> {
        let mut rules = Self::default();
        let mut errors = Vec::new();
        for (key, topic) in map.iter() {
            let kind = match key_kind(key) {
                Ok(kind) => kind,
                Err(e) => {
                    errors.push((key.clone(), e));
                    continue;
                }
            };
            let regex = match kind {
                KeyKind::Regex(pattern) => Some(format!("^(?:{pattern})$")),
                KeyKind::LegacyRegex(pattern) => Some(pattern.to_owned()),
                _ => None,
            };
            if let Some(regex) = regex {
                let compiled = Regex::new(&regex).map_err(|e| {
                    format!("not a valid regex (no look-around or back-references here, unlike java.util.regex): {e}")
                });
                let template = TopicTemplate::parse(topic);
                match (compiled, template) {
                    (Ok(regex), Ok(template)) if !topic.is_empty() => {
                        rules.regexes.push(RegexRule {
                            key: key.clone(),
                            regex,
                            template,
                        })
                    }
                    (Ok(_), Ok(_)) => {}
                    (compiled, template) => {
                        errors.extend(
                            [compiled.err(), template.err()]
                                .into_iter()
                                .flatten()
                                .map(|e| (key.clone(), e)),
                        );
                    }
                }
                continue;
            }
            if topic.is_empty() {
                continue;
            }
            let topic = topic.clone();
            match kind {
                KeyKind::Wildcard => rules.wildcard = Some(topic),
                KeyKind::WholeDatabase(db) => {
                    rules.whole_databases.insert(db.to_owned(), topic);
                }
                KeyKind::Database(db) => {
                    rules.databases.insert(db.to_owned(), topic);
                }
                KeyKind::Namespace(ns) => {
                    rules.namespaces.insert(ns.to_owned(), topic);
                }
                KeyKind::Regex(_) | KeyKind::LegacyRegex(_) => {}
            }
        }
        for db in rules.whole_databases.keys() {
            if rules.databases.contains_key(db) {
                errors.push((
                    format!("{db}.*"),
                    format!("`{db}` maps the collections of `{db}` too: keep one of the two keys"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(rules)
        } else {
            Err(errors)
        }
    }
}

/// The keys the MongoDB Kafka Connector would read otherwise than this daemon, each with
/// what it means here and what to write instead.
pub fn warnings(map: &NamespaceMap) -> Vec<(String, String)> {
    const REGEX_CHARACTERS: &[char] = &[
        '*', '?', '+', '[', ']', '(', ')', '{', '}', '|', '^', '$', '\\',
    ];
    let mut out = Vec::new();
    for (key, _) in map.iter() {
        let message = match key_kind(key) {
            Ok(KeyKind::LegacyRegex(pattern)) => format!(
                "read as before: the regex `{pattern}` found anywhere in the namespace; the MongoDB Kafka Connector reads this key as the regex `{pattern}/` matching the whole namespace. Write `/.*(?:{pattern}).*` for the same routing in the connector's form"
            ),
            Ok(KeyKind::WholeDatabase(db)) => format!(
                "this daemon's form: every namespace of `{db}` goes to this one topic; the MongoDB Kafka Connector reads it as the collection named `*` only. Its `\"{db}\"` key maps `{db}.coll` to the topic, the separator and `coll`; `\"/{db}(?:\\\\..*)?\"` maps every namespace of `{db}` to one topic"
            ),
            Ok(KeyKind::Namespace(k) | KeyKind::Database(k)) if k.contains(REGEX_CHARACTERS) => {
                "matched literally, as the MongoDB Kafka Connector does: a regex key starts with `/`".to_owned()
            }
            _ => continue,
        };
        out.push((key.clone(), message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> NamespaceMap {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn keys_mean_what_the_connector_reads() {
        assert_eq!(key_kind("*"), Ok(KeyKind::Wildcard));
        assert_eq!(key_kind("/a.*"), Ok(KeyKind::Regex("a.*")));
        assert_eq!(key_kind("/"), Ok(KeyKind::Regex("")));
        assert_eq!(key_kind("/^a\\./"), Ok(KeyKind::LegacyRegex("^a\\.")));
        assert_eq!(key_kind("shop.*"), Ok(KeyKind::WholeDatabase("shop")));
        assert_eq!(key_kind("shop"), Ok(KeyKind::Database("shop")));
        assert_eq!(key_kind("shop.a.b"), Ok(KeyKind::Namespace("shop.a.b")));
        assert!(key_kind("shop/a").is_err());
        assert!(key_kind("").is_err());
    }

    #[test]
    fn templates_expand_as_the_connectors() {
        let t = TopicTemplate::parse("x{db}{sep}{coll}|{sep_coll}|{coll_sep}|{sep_coll_sep}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.expand("d", Some("c"), "-"), "xd-c|-c|c-|-c-");
        assert_eq!(t.expand("d", None, "-"), "xd-|||");
        for bad in ["{", "}", "{}", "{{}", "{}}", "{DB}", "a{db", "a}b", "{db}}"] {
            assert!(TopicTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_database_key_and_its_whole_database_form_conflict() {
        let errors = NamespaceRules::new(&map(&[("shop", "a"), ("shop.*", "b")]))
            .err()
            .unwrap_or_default();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "shop.*");
    }

    #[test]
    fn keys_read_otherwise_by_the_connector_are_warned_about() {
        let warned: Vec<String> = warnings(&map(&[
            ("/^logs\\./", "l"),
            ("shop.*", "s"),
            ("a.b*x", "t"),
            ("shop.orders", "o"),
            ("/vertical(?:\\..*)?", "v"),
            ("crm", "c"),
            ("*", "w"),
        ]))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
        assert_eq!(warned, ["/^logs\\./", "shop.*", "a.b*x"]);
    }

    #[test]
    fn a_key_given_again_keeps_its_place() {
        let m = map(&[("a", "1"), ("b", "2"), ("a", "3")]);
        let entries: Vec<_> = m.iter().collect();
        assert_eq!(
            entries,
            [
                (&"a".to_owned(), &"3".to_owned()),
                (&"b".to_owned(), &"2".to_owned())
            ]
        );
    }
}
