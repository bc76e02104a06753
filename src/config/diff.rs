//! What a configuration reload changes: pipelines compared by name, like Vector's
//! `config/diff.rs`. The supervisor applies the result.

use std::collections::BTreeMap;

use super::{Config, SinkConfig, SourceConfig};

/// A pipeline's configuration, to tell what a reload changed.
#[derive(Debug, Clone, PartialEq)]
enum PipelineConfig {
    Source(SourceConfig),
    Sink(SinkConfig),
}

fn pipeline_configs(config: &Config) -> BTreeMap<String, PipelineConfig> {
    config
        .sources
        .iter()
        .map(|s| (s.name.clone(), PipelineConfig::Source(s.clone())))
        .chain(
            config
                .sinks
                .iter()
                .map(|s| (s.name.clone(), PipelineConfig::Sink(s.clone()))),
        )
        .collect()
}

/// What a reload changes, by pipeline name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Pipelines only in the new configuration.
    pub added: Vec<String>,
    /// Pipelines only in the old one.
    pub removed: Vec<String>,
    /// Pipelines in both whose settings (or the clients they use) differ.
    pub changed: Vec<String>,
    /// Pipelines left running as they are.
    pub unchanged: Vec<String>,
    /// Top-level sections that changed but apply only at the next start.
    pub needs_restart: Vec<&'static str>,
}

impl ConfigDiff {
    /// Compares two valid configurations. A change of `[mongodb]` or `[kafka]` changes
    /// every pipeline, since all of them use those clients.
    pub fn between(old: &Config, new: &Config) -> Self {
        let (before, after) = (pipeline_configs(old), pipeline_configs(new));
        let clients_changed = old.mongodb != new.mongodb || old.kafka != new.kafka;
        let mut diff = Self::default();
        for (name, config) in &after {
            match before.get(name) {
                None => diff.added.push(name.clone()),
                Some(previous) if clients_changed || previous != config => {
                    diff.changed.push(name.clone())
                }
                Some(_) => diff.unchanged.push(name.clone()),
            }
        }
        diff.removed = before
            .keys()
            .filter(|name| !after.contains_key(*name))
            .cloned()
            .collect();
        for (section, differs) in [("http", old.http != new.http), ("log", old.log != new.log)] {
            if differs {
                diff.needs_restart.push(section);
            }
        }
        diff
    }

    /// Whether the reload touches any pipeline.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The names of every pipeline of `config`, sources and sinks.
pub fn pipeline_names(config: &Config) -> Vec<String> {
    pipeline_configs(config).into_keys().collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn config(pipelines: &str) -> Config {
        let text = format!(
            "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"h:1\"\n{pipelines}"
        );
        super::super::load_str(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    const A: &str = "[[source]]\nname = \"a\"\ndatabase = \"d\"\n";
    const B: &str = "[[sink]]\nname = \"b\"\ntopics = [\"t\"]\ndatabase = \"d\"\n";
    const C: &str = "[[source]]\nname = \"c\"\ndatabase = \"d\"\ncollection = \"x\"\n";

    #[test]
    fn a_reload_is_split_into_added_removed_changed_and_unchanged() {
        let old = config(&format!("{A}{B}{C}"));
        let changed_c = C.replace("\"x\"", "\"y\"");
        let new = config(&format!(
            "{A}{changed_c}[[sink]]\nname = \"d\"\ntopics = [\"t\"]\ndatabase = \"d\"\n"
        ));
        let diff = ConfigDiff::between(&old, &new);
        assert_eq!(diff.added, ["d"]);
        assert_eq!(diff.removed, ["b"]);
        assert_eq!(diff.changed, ["c"]);
        assert_eq!(diff.unchanged, ["a"]);
        assert!(diff.needs_restart.is_empty());
        assert!(!diff.is_empty());
        let same = ConfigDiff::between(&old, &old);
        assert!(same.is_empty());
        assert_eq!(same.unchanged, ["a", "b", "c"]);
    }

    #[test]
    fn client_changes_change_every_pipeline_and_http_needs_a_restart() {
        let old = config(&format!("{A}{B}"));
        let mut new = old.clone();
        new.kafka.request_timeout = Duration::from_secs(99);
        new.http.address = "127.0.0.1:1".parse().unwrap_or(new.http.address);
        let diff = ConfigDiff::between(&old, &new);
        assert_eq!(diff.changed, ["a", "b"]);
        assert!(diff.unchanged.is_empty());
        assert_eq!(diff.needs_restart, ["http"]);
    }
}
