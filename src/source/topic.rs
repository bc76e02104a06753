//! Namespace → topic name. Pure.
//!
//! The namespace map's keys are tried from the most specific: `db.coll`, then `db.*`, then
//! regex keys written `/pattern/` (matched anywhere in `db.coll`, or in `db` for
//! database-wide events, as the MongoDB Kafka Connector's `topic.namespace.map` matches them;
//! anchor with `^` and `$`), in the order of their text, then `*`. A regex key's topic may
//! name the event's database and collection as `{db}` and `{coll}`.

use std::collections::BTreeMap;

use regex::Regex;

use crate::config::SourceConfig;

/// Maps the namespace of a change event to its topic.
#[derive(Debug, Clone)]
pub struct TopicMapper {
    prefix: Option<String>,
    suffix: Option<String>,
    separator: String,
    map: BTreeMap<String, String>,
    patterns: Vec<(Regex, String)>,
}

/// The pattern of a regex key (`/pattern/`) of the namespace map, if it is one.
pub fn regex_key(key: &str) -> Option<&str> {
    key.strip_prefix('/')?.strip_suffix('/')
}

impl TopicMapper {
    /// The mapper of a source pipeline; a regex key that does not compile is an error
    /// naming it (validation reports it first, with its key).
    pub fn new(config: &SourceConfig) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        let mut patterns = Vec::new();
        for (key, topic) in &config.topic_namespace_map {
            match regex_key(key) {
                Some(pattern) => patterns.push((
                    Regex::new(pattern)
                        .map_err(|e| format!("topic_namespace_map key `{key}`: {e}"))?,
                    topic.clone(),
                )),
                None => {
                    map.insert(key.clone(), topic.clone());
                }
            }
        }
        Ok(Self {
            prefix: config.topic_prefix.clone().filter(|p| !p.is_empty()),
            suffix: config.topic_suffix.clone().filter(|s| !s.is_empty()),
            separator: config.topic_separator.clone(),
            map,
            patterns,
        })
    }

    /// The topic of the namespace `db.coll` (`coll` is absent for database-level events such
    /// as `dropDatabase`), by the namespace map (see the module's rules); otherwise `db` and
    /// `coll` joined by the separator. The prefix and suffix are added either way.
    pub fn topic(&self, db: &str, coll: Option<&str>) -> String {
        let namespace = match coll {
            Some(c) => format!("{db}.{c}"),
            None => db.to_owned(),
        };
        let mapped = coll
            .and_then(|_| self.map.get(&namespace).cloned())
            .or_else(|| self.map.get(&format!("{db}.*")).cloned())
            .or_else(|| {
                self.patterns
                    .iter()
                    .find(|(regex, _)| regex.is_match(&namespace))
                    .map(|(_, topic)| {
                        topic
                            .replace("{db}", db)
                            .replace("{coll}", coll.unwrap_or_default())
                    })
            })
            .or_else(|| self.map.get("*").cloned());
        let mut parts: Vec<&str> = Vec::with_capacity(4);
        if let Some(prefix) = &self.prefix {
            parts.push(prefix);
        }
        match &mapped {
            Some(topic) => parts.push(topic),
            None => {
                parts.push(db);
                if let Some(coll) = coll {
                    parts.push(coll);
                }
            }
        }
        if let Some(suffix) = &self.suffix {
            parts.push(suffix);
        }
        parts.join(&self.separator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper(
        prefix: Option<&str>,
        suffix: Option<&str>,
        sep: &str,
        map: &[(&str, &str)],
    ) -> TopicMapper {
        let mut config: SourceConfig =
            toml::from_str("name = \"s\"").unwrap_or_else(|e| panic!("{e}"));
        config.topic_prefix = prefix.map(str::to_owned);
        config.topic_suffix = suffix.map(str::to_owned);
        config.topic_separator = sep.to_owned();
        config.topic_namespace_map = map
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TopicMapper::new(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn default_names_join_the_namespace() {
        let m = mapper(None, None, ".", &[]);
        assert_eq!(m.topic("shop", Some("orders")), "shop.orders");
        assert_eq!(m.topic("shop", None), "shop");
        let m = mapper(Some("mongo"), Some("v1"), "-", &[]);
        assert_eq!(m.topic("shop", Some("orders")), "mongo-shop-orders-v1");
    }

    #[test]
    fn the_most_specific_map_entry_wins() {
        let m = mapper(
            Some("p"),
            None,
            ".",
            &[
                ("shop.orders", "orders"),
                ("shop.*", "shop-all"),
                ("*", "everything"),
            ],
        );
        assert_eq!(m.topic("shop", Some("orders")), "p.orders");
        assert_eq!(m.topic("shop", Some("items")), "p.shop-all");
        assert_eq!(m.topic("shop", None), "p.shop-all");
        assert_eq!(m.topic("crm", Some("people")), "p.everything");
        let m = mapper(None, None, ".", &[("shop.orders", "orders")]);
        assert_eq!(m.topic("crm", Some("people")), "crm.people");
    }

    #[test]
    fn regex_keys_map_what_exact_keys_do_not() {
        let m = mapper(
            None,
            None,
            ".",
            &[
                ("shop.orders", "orders"),
                ("/^shop\\.(archive|old)_/", "{db}-history"),
                ("/^metrics[0-9]+$/", "metrics-{coll}-by-db"),
                ("/^logs\\./", "logs.{coll}"),
                ("*", "everything"),
            ],
        );
        assert_eq!(m.topic("shop", Some("orders")), "orders");
        assert_eq!(m.topic("shop", Some("archive_2024")), "shop-history");
        assert_eq!(m.topic("shop", Some("old_x")), "shop-history");
        assert_eq!(m.topic("logs", Some("app")), "logs.app");
        // Database-wide events match against the database alone.
        assert_eq!(m.topic("metrics7", None), "metrics--by-db");
        assert_eq!(m.topic("shop", Some("items")), "everything");
        // An exact `db.*` key is more specific than any regex.
        let m = mapper(None, None, ".", &[("/shop/", "r"), ("shop.*", "all-shop")]);
        assert_eq!(m.topic("shop", Some("x")), "all-shop");
        // Several regex keys: the first by their text wins.
        let m = mapper(None, None, ".", &[("/b/", "second"), ("/a/", "first")]);
        assert_eq!(m.topic("ab", Some("c")), "first");
    }

    #[test]
    fn a_regex_key_that_does_not_compile_is_named() {
        let mut config: SourceConfig =
            toml::from_str("name = \"s\"").unwrap_or_else(|e| panic!("{e}"));
        config
            .topic_namespace_map
            .insert("/(/".to_owned(), "t".to_owned());
        let err = TopicMapper::new(&config).expect_err("bad regex");
        assert!(err.contains("`/(/`"), "{err}");
    }
}
