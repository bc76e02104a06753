//! Field renames, as the MongoDB Kafka Connector's `RenameByMapping` and `RenameByRegExp`
//! (its `Renamer`), on the key and the value document.
//!
//! Rules, the connector's:
//! - A field's path is `key.` or `value.` and its dotted path, parents named as they were
//!   renamed: a rename of `a` to `b` makes the fields below it `value.b.*`.
//! - Documents in arrays are not reached.
//! - A field renamed to a name its document already has (before this pass, or kept by it)
//!   is dropped, the existing field kept: the connector removes it rather than overwrite
//!   the other. Two fields renamed to the same new name fail the record (the connector fails
//!   on it too, with a `ConcurrentModificationException`).
//! - Renamed fields move to the end of their document, in the order they were renamed.
//!
//! Ours on top: `field_rename_regex` rules without `regexp` (the form before the connector's
//! was supported) rewrite a value field's dotted path, the last segment of the result being
//! the new name; a rename to an empty name fails the record.

use std::collections::{BTreeMap, HashMap};

use bson::{Bson, Document};
use regex::Regex;

use crate::config::RegexRename;

/// Which document of the record a rename applies to; its name is the path's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The record's key.
    Key,
    /// The record's value.
    Value,
}

impl Side {
    fn prefix(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Value => "value",
        }
    }
}

#[derive(Debug, Clone)]
enum RegexRule {
    /// The connector's: fields whose prefixed path matches `regexp` whole have `pattern`
    /// replaced in their name.
    Selected {
        regexp: Regex,
        pattern: Regex,
        replace: String,
    },
    /// Ours before: `pattern` rewrites a value field's dotted path (no prefix).
    Path { pattern: Regex, replace: String },
}

#[derive(Debug, Clone)]
enum Rules {
    /// Prefixed old path → new name.
    Mapping(HashMap<String, String>),
    Regex(Vec<RegexRule>),
}

/// One renaming pass (`RenameByMapping` or `RenameByRegExp`).
#[derive(Debug, Clone)]
pub struct Renamer {
    rules: Rules,
}

impl Renamer {
    /// The mapping renames: `value` (`field_renames`) and `key` (`key_field_renames`), each
    /// unprefixed dotted path → new name.
    pub fn mapping(value: &BTreeMap<String, String>, key: &BTreeMap<String, String>) -> Self {
        let prefixed = |side: Side, map: &BTreeMap<String, String>| {
            map.iter()
                .map(move |(from, to)| (format!("{}.{from}", side.prefix()), to.clone()))
                .collect::<Vec<_>>()
        };
        let mut map = HashMap::new();
        map.extend(prefixed(Side::Value, value));
        map.extend(prefixed(Side::Key, key));
        Self {
            rules: Rules::Mapping(map),
        }
    }

    /// The regex renames of `field_rename_regex`, compiled; the error names the entry.
    pub fn regex(rules: &[RegexRename]) -> Result<Self, String> {
        let compile = |i: usize, field: &str, text: &str| {
            Regex::new(text).map_err(|e| format!("`field_rename_regex[{i}].{field}`: {e}"))
        };
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let pattern = compile(i, "pattern", &r.pattern)?;
                let replace = java_replacement(&r.replace, pattern.captures_len() - 1);
                Ok(match &r.regexp {
                    // Java's `String.matches`: the whole path.
                    Some(regexp) => RegexRule::Selected {
                        regexp: compile(i, "regexp", &format!("^(?:{regexp})$"))?,
                        pattern,
                        replace,
                    },
                    None => RegexRule::Path { pattern, replace },
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            rules: Rules::Regex(rules),
        })
    }

    /// Whether the pass renames anything at all.
    pub fn is_active(&self) -> bool {
        match &self.rules {
            Rules::Mapping(map) => !map.is_empty(),
            Rules::Regex(rules) => !rules.is_empty(),
        }
    }

    /// The new name of the field `name` under `path` (prefixed, `value.a.b`).
    fn renamed(&self, path: &str, name: &str) -> String {
        match &self.rules {
            Rules::Mapping(map) => map
                .get(&format!("{path}.{name}"))
                .cloned()
                .unwrap_or_else(|| name.to_owned()),
            Rules::Regex(rules) => {
                let full = format!("{path}.{name}");
                let mut new = name.to_owned();
                for rule in rules {
                    match rule {
                        RegexRule::Selected {
                            regexp,
                            pattern,
                            replace,
                        } => {
                            if regexp.is_match(&full) {
                                new = pattern.replace_all(&new, replace.as_str()).into_owned();
                            }
                        }
                        RegexRule::Path { pattern, replace } => {
                            let Some(under) = path.strip_prefix(Side::Value.prefix()) else {
                                continue;
                            };
                            let dotted = match under.strip_prefix('.') {
                                Some(parent) => format!("{parent}.{new}"),
                                None => new.clone(),
                            };
                            let rewritten = pattern.replace_all(&dotted, replace.as_str());
                            if rewritten != dotted {
                                new = rewritten.rsplit('.').next().unwrap_or_default().to_owned();
                            }
                        }
                    }
                }
                new
            }
        }
    }

    /// Renames the fields of `doc`, the record's `side`; answers how many fields were
    /// dropped because their new name was taken.
    pub fn apply(&self, side: Side, doc: &mut Document) -> Result<usize, String> {
        if self.is_active() {
            self.rename_in(side.prefix(), doc)
        } else {
            Ok(0)
        }
    }

    /// The connector's `doRenaming`: its `doc` is the fields kept so far and those not yet
    /// visited; its `modifications` the renamed ones, appended at the end.
    fn rename_in(&self, path: &str, doc: &mut Document) -> Result<usize, String> {
        let fields: Vec<(String, Bson)> = std::mem::take(doc).into_iter().collect();
        let mut kept = Document::new();
        let mut renamed = Document::new();
        let mut dropped = 0;
        for (i, (old, mut value)) in fields.iter().cloned().enumerate() {
            let new = self.renamed(path, &old);
            if let Bson::Document(inner) = &mut value {
                dropped += self.rename_in(&format!("{path}.{new}"), inner)?;
            }
            if new == old {
                kept.insert(old, value);
                continue;
            }
            if new.is_empty() {
                return Err(format!("renaming `{path}.{old}` gives an empty name"));
            }
            let present = kept.contains_key(&new) || fields[i + 1..].iter().any(|(k, _)| *k == new);
            if present {
                // The connector's choice: no overwrite, and the renamed field is gone.
                dropped += 1;
                continue;
            }
            if renamed.contains_key(&new) {
                return Err(format!(
                    "renaming `{path}.{old}` to `{new}`: another field of `{path}` was renamed to `{new}` too"
                ));
            }
            renamed.insert(new, value);
        }
        kept.extend(renamed);
        *doc = kept;
        Ok(dropped)
    }
}

/// A replacement of Java's `String.replaceAll` (`$1`, `\$`, `\\`) in the regex crate's
/// syntax (`${1}`, `$$`, `\`): after `$`, digits are read while they name one of the
/// pattern's `groups`, as Java reads them.
fn java_replacement(replace: &str, groups: usize) -> String {
    let mut out = String::with_capacity(replace.len());
    let mut chars = replace.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(other) => out.push(other),
                None => {}
            },
            '$' => {
                let mut number = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    let longer = format!("{number}{d}");
                    if !number.is_empty() && longer.parse::<usize>().map_or(true, |n| n > groups) {
                        break;
                    }
                    number = longer;
                    chars.next();
                }
                if number.is_empty() {
                    out.push_str("$$");
                } else {
                    out.push_str(&format!("${{{number}}}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    fn rule(regexp: Option<&str>, pattern: &str, replace: &str) -> RegexRename {
        RegexRename {
            regexp: regexp.map(str::to_owned),
            pattern: pattern.into(),
            replace: replace.into(),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    // The connector's `RenamerTest` documents (mongo-kafka 2.0.1).
    fn key_doc() -> Document {
        doc! {"fieldA": "my field value", "f2": true, "subDoc": {"fieldX": 42},
        "my_field1": {"my_field2": "testing rocks!"}}
    }

    fn value_doc() -> Document {
        doc! {"abc": "my field value", "f2": false, "subDoc": {"123": 0.0},
        "foo.foo.foo": {".blah..blah.": 23}}
    }

    /// `equals` of the connector's `BsonDocument`: the same fields, in any order.
    fn same_fields(a: &Document, b: &Document) -> bool {
        a.len() == b.len()
            && a.iter().all(|(k, v)| match (v, b.get(k)) {
                (Bson::Document(x), Some(Bson::Document(y))) => same_fields(x, y),
                (x, Some(y)) => x == y,
                _ => false,
            })
    }

    fn both(renamer: &Renamer) -> (Document, Document) {
        let (mut key, mut value) = (key_doc(), value_doc());
        renamer.apply(Side::Key, &mut key).expect("key renamed");
        renamer
            .apply(Side::Value, &mut value)
            .expect("value renamed");
        (key, value)
    }

    #[test]
    fn renames_by_mapping_as_the_connectors_renamer_test() {
        // `testRenamerUsingFieldnameMapping`: `key.` and `value.` choose the document.
        let renamer = Renamer::mapping(
            &map(&[("abc", "xyz"), ("f2", "f_two"), ("subDoc.123", "789")]),
            &map(&[
                ("fieldA", "f1"),
                ("f2", "fieldB"),
                ("subDoc.fieldX", "name_x"),
            ]),
        );
        let (key, value) = both(&renamer);
        let expected_key = doc! {"f1": "my field value", "fieldB": true, "subDoc": {"name_x": 42},
        "my_field1": {"my_field2": "testing rocks!"}};
        let expected_value = doc! {"xyz": "my field value", "f_two": false, "subDoc": {"789": 0.0},
        "foo.foo.foo": {".blah..blah.": 23}};
        assert!(same_fields(&key, &expected_key), "{key}");
        assert!(same_fields(&value, &expected_value), "{value}");
        // Renamed fields go last, in the order they were renamed.
        assert_eq!(
            key.keys().collect::<Vec<_>>(),
            ["subDoc", "my_field1", "f1", "fieldB"]
        );
    }

    #[test]
    fn renames_by_regexp_as_the_connectors_renamer_test() {
        // `testRenamerUsingRegExpSettings`: the selector sees the original name, each rule
        // rewrites the name the earlier ones left.
        let renamer = Renamer::regex(&[
            rule(Some(r"^key\..*my.*$"), "my", ""),
            rule(Some(r"^key\..*field.$"), "field", "F"),
            rule(Some(r"^value\..*$"), r"\.", "_"),
        ])
        .expect("compiles");
        let (key, value) = both(&renamer);
        let expected_key = doc! {"FA": "my field value", "f2": true, "subDoc": {"FX": 42},
        "_F1": {"_F2": "testing rocks!"}};
        let expected_value = doc! {"abc": "my field value", "f2": false, "subDoc": {"123": 0.0},
        "foo_foo_foo": {"_blah__blah_": 23}};
        assert!(same_fields(&key, &expected_key), "{key}");
        assert!(same_fields(&value, &expected_value), "{value}");
    }

    #[test]
    fn nested_paths_name_parents_as_renamed_and_arrays_are_not_reached() {
        let renamer = Renamer::mapping(
            &map(&[("a", "b"), ("b.x", "y"), ("list.x", "z")]),
            &map(&[]),
        );
        let mut value = doc! {"a": {"x": 1}, "list": [{"x": 1}]};
        renamer.apply(Side::Value, &mut value).expect("renamed");
        assert_eq!(value, doc! {"list": [{"x": 1}], "b": {"y": 1}});
        // A key rename leaves the value alone, and the other way round.
        let renamer = Renamer::mapping(&map(&[]), &map(&[("a", "k")]));
        let mut value = doc! {"a": 1};
        renamer.apply(Side::Value, &mut value).expect("renamed");
        assert_eq!(value, doc! {"a": 1});
    }

    #[test]
    fn a_clash_keeps_the_existing_field_and_drops_the_renamed_one() {
        // `b` is there before and after: `a` goes.
        let renamer = Renamer::mapping(&map(&[("a", "b")]), &map(&[]));
        let mut value = doc! {"a": 1, "b": 2};
        assert_eq!(renamer.apply(Side::Value, &mut value), Ok(1), "one dropped");
        assert_eq!(value, doc! {"b": 2});
        // Visited first, `b` is renamed away: `a` takes its name.
        let renamer = Renamer::mapping(&map(&[("a", "b"), ("b", "c")]), &map(&[]));
        let mut value = doc! {"b": 2, "a": 1};
        assert_eq!(
            renamer.apply(Side::Value, &mut value),
            Ok(0),
            "none dropped"
        );
        assert_eq!(value, doc! {"c": 2, "b": 1});
        // Visited later, `b` is still there when `a` is renamed: `a` goes.
        let mut value = doc! {"a": 1, "b": 2};
        renamer.apply(Side::Value, &mut value).expect("renamed");
        assert_eq!(value, doc! {"c": 2});
        // Two fields to one new name: the record fails, naming both.
        let renamer = Renamer::regex(&[rule(Some("^value\\..*"), "^.$", "z")]).expect("compiles");
        let mut value = doc! {"a": 1, "b": 2};
        let err = renamer
            .apply(Side::Value, &mut value)
            .expect_err("two to `z`");
        assert!(err.contains("`value.b` to `z`"), "{err}");
    }

    #[test]
    fn replacements_are_read_as_javas() {
        assert_eq!(java_replacement(r"$2$1x\$", 2), "${2}${1}x$$");
        assert_eq!(java_replacement("$12", 1), "${1}2");
        assert_eq!(java_replacement("$12", 12), "${12}");
        assert_eq!(java_replacement("$1_a", 1), "${1}_a");
        let renamer = Renamer::regex(&[rule(Some(".*"), "(a)(b)", r"$2$1_\$")]).expect("compiles");
        let mut value = doc! {"abc": 1};
        renamer.apply(Side::Value, &mut value).expect("renamed");
        assert_eq!(value, doc! {"ba_$c": 1});
    }

    #[test]
    fn rules_without_regexp_rewrite_value_paths_as_before() {
        let renamer = Renamer::regex(&[rule(None, r"(^|\.)my_", "$1")]).expect("compiles");
        let mut value = doc! {"my_a": 1, "sub": {"my_b": 2}};
        renamer.apply(Side::Value, &mut value).expect("renamed");
        assert_eq!(value, doc! {"sub": {"b": 2}, "a": 1});
        let mut key = doc! {"my_a": 1};
        renamer.apply(Side::Key, &mut key).expect("renamed");
        assert_eq!(key, doc! {"my_a": 1}, "value fields only");
        let renamer = Renamer::regex(&[rule(None, "^a$", "")]).expect("compiles");
        let mut value = doc! {"a": 1};
        let err = renamer.apply(Side::Value, &mut value).expect_err("empty");
        assert!(err.contains("empty"), "{err}");
    }
}
