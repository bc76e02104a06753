//! The parts of a source configuration a reader uses, resolved once when the pipeline
//! starts: stages parsed, regexes compiled, the start position read. Validation checked
//! them already; should one still not resolve, the pipeline stops saying which key, instead
//! of a reader falling back to something the user did not ask for.

use bson::{doc, Document};
use regex::Regex;

use super::fragments::token_fragment;
use crate::config::{SourceConfig, StartupMode, SPLIT_LARGE_EVENT};
use crate::source::error::SourceError;
use crate::source::model::{Scope, StartAt};

/// What a pipeline's readers take from its configuration, parsed.
#[derive(Debug, Clone)]
pub struct ReaderSettings {
    /// The stages of `pipeline`, appended to `$changeStream`.
    stages: Vec<Document>,
    /// Whether `pipeline` ends in `$changeStreamSplitLargeEvent`.
    fragments: bool,
    /// The stages of `copy_existing_pipeline`.
    pub copy_stages: Vec<Document>,
    /// `collection_regex`: the collections a database copy covers.
    pub collection_regex: Option<Regex>,
    /// `collection_exclude`: collections a database stream and its copy leave out.
    pub collection_exclude: Vec<String>,
    /// `copy_existing_namespace_regex`: the namespaces (`db.coll`) a copy covers.
    pub copy_namespaces: Option<Regex>,
    /// Where a reader without a checkpoint (or a pinned position) starts.
    pub initial_start: StartAt,
}

/// Whether `start` is after a fragment of an event MongoDB split.
pub fn resumes_after_a_fragment(start: &StartAt) -> bool {
    matches!(start, StartAt::Resume(position) if token_fragment(&position.token).is_some())
}

impl ReaderSettings {
    /// Resolves the settings of the pipeline `config`; an error names the key.
    pub fn resolve(config: &SourceConfig) -> Result<Self, SourceError> {
        let refused = |key: &str, reason: String| SourceError::Config {
            namespace: config.name.clone(),
            reason: format!("`{key}`: {reason}"),
        };
        let regex = |key: &str, text: &Option<String>| {
            text.as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| refused(key, e.to_string()))
        };
        let stages = config.stages().map_err(|e| refused("pipeline", e))?;
        config.collation().map_err(|e| refused("collation", e))?;
        let fragments = stages
            .last()
            .is_some_and(|stage| stage.contains_key(SPLIT_LARGE_EVENT));
        let copy_stages = match &config.copy_existing_pipeline {
            Some(text) => crate::config::parse_pipeline(text)
                .map_err(|e| refused("copy_existing_pipeline", e))?,
            None => Vec::new(),
        };
        let initial_start = match config.startup_mode {
            StartupMode::Latest => StartAt::Latest,
            StartupMode::CopyExisting => StartAt::CopyExisting,
            StartupMode::Timestamp => match config.startup_time() {
                Ok(Some(at)) => StartAt::Time(at),
                Ok(None) => {
                    return Err(refused(
                        "startup_timestamp",
                        "is required with `startup_mode = \"timestamp\"`".into(),
                    ))
                }
                Err(e) => return Err(refused("startup_timestamp", e)),
            },
        };
        Ok(Self {
            stages,
            fragments,
            copy_stages,
            collection_regex: regex("collection_regex", &config.collection_regex)?,
            collection_exclude: config.collection_exclude.clone(),
            copy_namespaces: regex(
                "copy_existing_namespace_regex",
                &config.copy_existing_namespace_regex,
            )?,
            initial_start,
        })
    }

    /// Whether the user's `pipeline` makes MongoDB return large events in fragments.
    pub fn fragments(&self) -> bool {
        self.fragments
    }

    /// Whether a change stream opened at `start` asks for large events in fragments: the
    /// user's `pipeline` does, or `start` is after a fragment of an event MongoDB split
    /// (the checkpoint after a split event is its last fragment's token), which MongoDB
    /// resumes after only with `$changeStreamSplitLargeEvent` (without it: error 280).
    pub fn fragments_at(&self, start: &StartAt) -> bool {
        self.fragments || resumes_after_a_fragment(start)
    }

    /// The stages of a change stream over `watched`: the collection filter of a database
    /// stream, the user's stages, and `$changeStreamSplitLargeEvent` last when `fragments`
    /// asks for it and the user's stages do not end in it already.
    pub fn change_stream_stages(&self, watched: &Scope, fragments: bool) -> Vec<Document> {
        let mut stages = Vec::with_capacity(self.stages.len() + 2);
        if let Scope::Database {
            collection_regex: Some(re),
            ..
        } = watched
        {
            stages.push(doc! { "$match": { "ns.coll": { "$regex": re.as_str() } } });
        }
        if matches!(watched, Scope::Database { .. }) && !self.collection_exclude.is_empty() {
            stages.push(doc! { "$match": { "ns.coll": { "$nin": &self.collection_exclude } } });
        }
        stages.extend(self.stages.iter().cloned());
        if fragments && !self.fragments {
            stages.push(doc! { SPLIT_LARGE_EVENT: {} });
        }
        stages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::model::Position;

    fn config(extra: &str) -> SourceConfig {
        let text = format!(
            "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"h:1\"\n[[source]]\nname = \"s\"\ndatabase = \"db\"\n{extra}\n"
        );
        crate::config::load_str(&text, std::path::Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .sources
            .remove(0)
    }

    fn resolve(config: &SourceConfig) -> ReaderSettings {
        ReaderSettings::resolve(config).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_split_stage_is_appended_last_and_only_once() {
        let plain = resolve(&config(
            "collection_regex = \"^o\"\npipeline = '[{\"$match\": {\"operationType\": \"insert\"}}]'",
        ));
        let watched = Scope::Database {
            db: "db".into(),
            collection_regex: Some("^o".into()),
        };
        let names = |stages: Vec<Document>| {
            stages
                .iter()
                .map(|s| s.keys().next().cloned().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert!(!plain.fragments());
        assert_eq!(
            names(plain.change_stream_stages(&watched, false)),
            ["$match", "$match"]
        );
        assert_eq!(
            names(plain.change_stream_stages(&watched, true)),
            ["$match", "$match", SPLIT_LARGE_EVENT]
        );
        let user = resolve(&config(
            "pipeline = '[{\"$changeStreamSplitLargeEvent\": {}}]'",
        ));
        assert!(user.fragments());
        assert_eq!(
            names(user.change_stream_stages(&Scope::Deployment, true)),
            [SPLIT_LARGE_EVENT]
        );
    }

    /// A resume token of a fragment of a split event, as MongoDB's `resume_token.cpp`
    /// encodes it (a KeyString, hex): cluster time, version 2, event token (128),
    /// txnOpIndex 0, not from an invalidate, the collection's UUID, the event identifier
    /// (`{operationType: "update", documentKey: {_id: 0}}`, as in the documentation's
    /// example of `$changeStreamSplitLargeEvent`), then `fragment` (0-based), if any.
    fn token(fragment: Option<u8>) -> Position {
        let mut hex = String::from(
            "826E8E8A2C000000012B042C0100296E5A100416E3B7B3F7AF4C26B5B4E8FB27F0E3B146",
        );
        // operationType: "update"
        hex.push_str("3C6F7065726174696F6E54797065003C75706461746500");
        // documentKey: {_id: 0}
        hex.push_str("46646F63756D656E744B657900461E5F6964002900");
        // The end of the event identifier.
        hex.push_str("00");
        match fragment {
            Some(0) => hex.push_str("29"),
            Some(n) => hex.push_str(&format!("2B{:02X}", u16::from(n) * 2)),
            None => {}
        }
        hex.push_str("04");
        let token: mongodb::change_stream::event::ResumeToken =
            bson::from_document(doc! { "_data": hex }).unwrap_or_else(|e| panic!("{e}"));
        Position::stream(token)
    }

    /// Issue 21, item 3: the checkpoint after an event MongoDB split is the last
    /// fragment's token; a restart opened the stream there without
    /// `$changeStreamSplitLargeEvent`, and MongoDB refused it (280), which the daemon took
    /// for a lost resume point.
    #[test]
    fn resuming_after_a_fragment_asks_for_fragments_again() {
        let plain = resolve(&config(""));
        let watched = Scope::Collection {
            db: "db".into(),
            coll: "c".into(),
        };
        let names = |stages: Vec<Document>| {
            stages
                .iter()
                .map(|s| s.keys().next().cloned().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        for fragment in [0, 1, 2] {
            let at = StartAt::Resume(token(Some(fragment)));
            assert!(plain.fragments_at(&at), "after fragment {fragment}");
            assert_eq!(
                names(plain.change_stream_stages(&watched, plain.fragments_at(&at))),
                [SPLIT_LARGE_EVENT]
            );
        }
        let whole = StartAt::Resume(token(None));
        assert!(!plain.fragments_at(&whole), "an event that was not split");
        assert!(!plain.fragments_at(&StartAt::Latest));
        // The user's own stage is not added twice.
        let user = resolve(&config(
            "pipeline = '[{\"$match\": {}}, {\"$changeStreamSplitLargeEvent\": {}}]'",
        ));
        let at = StartAt::Resume(token(Some(2)));
        assert_eq!(
            names(user.change_stream_stages(&watched, user.fragments_at(&at))),
            ["$match", SPLIT_LARGE_EVENT]
        );
    }

    #[test]
    fn the_start_and_the_copy_filters_are_resolved_once() {
        let at = resolve(&config(
            "startup_mode = \"timestamp\"\nstartup_timestamp = \"1700000000\"",
        ));
        assert!(
            matches!(at.initial_start, StartAt::Time(t) if t.time == 1_700_000_000),
            "{:?}",
            at.initial_start
        );
        let copy = resolve(&config(
            "startup_mode = \"copy_existing\"\ncollection_regex = \"^o\"\ncopy_existing_namespace_regex = \"^db\\\\.orders$\"\ncopy_existing_pipeline = '[{\"$match\": {}}]'",
        ));
        assert!(matches!(copy.initial_start, StartAt::CopyExisting));
        assert_eq!(copy.copy_stages.len(), 1);
        let matches =
            |re: &Option<Regex>, text: &str| re.as_ref().is_some_and(|re| re.is_match(text));
        assert!(matches(&copy.collection_regex, "orders"));
        assert!(!matches(&copy.collection_regex, "x"));
        assert!(matches(&copy.copy_namespaces, "db.orders"));
        assert!(!matches(&copy.copy_namespaces, "db.orders2"));
    }

    #[test]
    fn what_does_not_resolve_is_an_error_naming_the_key() {
        // Validation refuses these; a configuration built past it still names the key.
        let mut broken = config("");
        broken.startup_mode = StartupMode::Timestamp;
        let error = ReaderSettings::resolve(&broken)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(
            error,
            Err("s: configuration: `startup_timestamp`: is required with `startup_mode = \"timestamp\"`".into())
        );
        let mut broken = config("");
        broken.copy_existing_namespace_regex = Some("(".into());
        let error = ReaderSettings::resolve(&broken)
            .err()
            .map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("`copy_existing_namespace_regex`")),
            "{error:?}"
        );
    }
}
