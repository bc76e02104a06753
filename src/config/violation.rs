//! A problem in a configuration, naming its key ([`Violation`]), and the checks of single
//! values every section makes (names MongoDB and Kafka accept, durations above zero). The
//! sections' own checks (`source`, `sink`, `registry`, `env`) and the whole-file one
//! (`validate`) all report through it, so it imports none of them.

use std::fmt;
use std::time::Duration;

/// One problem in a configuration, naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The dotted path of the offending key (`sink[1].topics[0]`).
    pub key: String,
    /// What is wrong with its value.
    pub message: String,
}

impl Violation {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Renders several violations, one a line.
    pub fn list(violations: &[Violation]) -> String {
        let mut out = format!(
            "{} problem{} in the configuration:",
            violations.len(),
            if violations.len() == 1 { "" } else { "s" }
        );
        for v in violations {
            out.push_str("\n  - ");
            out.push_str(&v.to_string());
        }
        out
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.message)
    }
}

pub(super) fn database_name(key: &str, name: &str, out: &mut Vec<Violation>) {
    // The characters MongoDB forbids in database names on every platform.
    const FORBIDDEN: &[char] = &['/', '\\', '.', ' ', '"', '$', '*', '<', '>', ':', '|', '?'];
    if name.is_empty() {
        out.push(Violation::new(key, "must not be empty"));
    } else if let Some(c) = name.chars().find(|c| FORBIDDEN.contains(c) || *c == '\0') {
        out.push(Violation::new(
            key,
            format!("`{name}` holds `{c}`, which MongoDB forbids in database names"),
        ));
    } else if name.len() >= 64 {
        out.push(Violation::new(
            key,
            format!("`{name}` is longer than MongoDB's 63-byte limit for database names"),
        ));
    }
}

pub(super) fn collection_name(key: &str, name: &str, out: &mut Vec<Violation>) {
    if name.is_empty() {
        out.push(Violation::new(key, "must not be empty"));
    } else if name.contains('$') || name.contains('\0') {
        out.push(Violation::new(
            key,
            format!("`{name}` holds `$` or NUL, which MongoDB forbids in collection names"),
        ));
    } else if name.starts_with("system.") {
        out.push(Violation::new(
            key,
            format!("`{name}` is a system collection"),
        ));
    }
}

pub(super) fn topic_name(key: &str, name: &str, out: &mut Vec<Violation>) {
    if name.is_empty() || name == "." || name == ".." {
        out.push(Violation::new(key, format!("`{name}` is not a topic name")));
    } else if name.len() > 249 {
        out.push(Violation::new(
            key,
            "is longer than Kafka's 249-character limit",
        ));
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        out.push(Violation::new(
            key,
            format!("`{name}` holds `{c}`; Kafka topic names allow letters, digits, `.`, `_`, `-`"),
        ));
    }
}

pub(super) fn positive(out: &mut Vec<Violation>, key: &str, value: Duration, what: &str) {
    if value.is_zero() {
        out.push(Violation::new(key, format!("{what} must be longer than 0")));
    }
}
