//! The connector's properties as they are taken ([`Props`]) and the findings of a
//! translation ([`Out`]): properties not carried over ([`Dropped`]) and notes. Shared by the
//! source's and the sink's translations.

use std::collections::BTreeMap;
use std::fmt;

use super::table::{self, Section};

/// A property not carried over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The connector's property.
    pub property: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.reason)
    }
}

/// The connector's properties, taken one by one as they are carried over; what is left at the
/// end was not.
#[derive(Debug, Default)]
pub(crate) struct Props(pub(super) BTreeMap<String, String>);

impl Props {
    /// The value of `name`, removed; a blank value is the connector's default, as unset.
    pub(crate) fn take(&mut self, name: &str) -> Option<String> {
        self.0
            .remove(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// Every property starting with `prefix`, removed: the rest of its name and its value
    /// (blank values left out).
    pub(crate) fn take_prefixed(&mut self, prefix: &str) -> Vec<(String, String)> {
        let names: Vec<String> = self
            .0
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        names
            .into_iter()
            .filter_map(|name| {
                let value = self.take(&name)?;
                Some((name[prefix.len()..].to_owned(), value))
            })
            .collect()
    }

    pub(super) fn rest(self) -> BTreeMap<String, String> {
        self.0
    }
}

/// The findings of a translation so far.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub(super) dropped: Vec<Dropped>,
    pub(super) notes: Vec<String>,
}

impl Out {
    /// `property` is not carried over, because of `reason`.
    pub(crate) fn drop(&mut self, property: impl Into<String>, reason: impl Into<String>) {
        self.dropped.push(Dropped {
            property: one_line(property.into()),
            reason: one_line(reason.into()),
        });
    }

    /// Something the user should know.
    pub(crate) fn note(&mut self, text: impl Into<String>) {
        let text = one_line(text.into());
        if !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }

    /// `value` of `property` as a boolean, or dropped.
    pub(crate) fn boolean(&mut self, property: &str, value: Option<String>) -> Option<bool> {
        let value = value?;
        match value.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.drop(property, format!("`{value}` is not `true` or `false`"));
                None
            }
        }
    }

    /// `value` of `property` as an integer, or dropped.
    pub(crate) fn integer(&mut self, property: &str, value: Option<String>) -> Option<i64> {
        let value = value?;
        match value.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                self.drop(property, format!("`{value}` is not an integer"));
                None
            }
        }
    }

    /// The reason the table gives for `property` of `section`.
    pub(crate) fn drop_as_table(&mut self, section: Section, property: &str, shown: &str) {
        let reason = table::find(section, property)
            .and_then(table::Property::reason)
            .unwrap_or_else(|| UNHANDLED.to_owned());
        self.drop(shown, reason);
    }
}

/// `text` on one line: a finding is one line on stderr and one comment in the TOML.
pub(super) fn one_line(text: String) -> String {
    if text.contains(['\n', '\r']) {
        text.replace("\r\n", " ").replace(['\n', '\r'], " ")
    } else {
        text
    }
}

/// What a property that the guide says is carried over, but this tool did not take, is told.
pub const UNHANDLED: &str =
    "the migration guide carries it over, but this tool does not yet: set it by hand";

/// What an unknown property is told.
pub const UNKNOWN: &str =
    "not a property of the MongoDB Kafka Connector or of Kafka Connect that this tool knows";
