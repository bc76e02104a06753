//! Namespace → topic name. Pure.

use std::collections::BTreeMap;

use crate::config::SourceConfig;

/// Maps the namespace of a change event to its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMapper {
    prefix: Option<String>,
    suffix: Option<String>,
    separator: String,
    map: BTreeMap<String, String>,
}

impl TopicMapper {
    /// The mapper of a source pipeline.
    pub fn new(config: &SourceConfig) -> Self {
        Self {
            prefix: config.topic_prefix.clone().filter(|p| !p.is_empty()),
            suffix: config.topic_suffix.clone().filter(|s| !s.is_empty()),
            separator: config.topic_separator.clone(),
            map: config.topic_namespace_map.clone(),
        }
    }

    /// The topic of the namespace `db.coll` (`coll` is absent for database-level events such
    /// as `dropDatabase`). The most specific entry of the namespace map wins (`db.coll`, then
    /// `db.*`, then `*`); otherwise the name is `db` and `coll` joined by the separator.
    /// The prefix and suffix are added either way.
    pub fn topic(&self, db: &str, coll: Option<&str>) -> String {
        let mapped = coll
            .and_then(|c| self.map.get(&format!("{db}.{c}")))
            .or_else(|| self.map.get(&format!("{db}.*")))
            .or_else(|| self.map.get("*"));
        let mut parts: Vec<&str> = Vec::with_capacity(4);
        if let Some(prefix) = &self.prefix {
            parts.push(prefix);
        }
        match mapped {
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
        TopicMapper {
            prefix: prefix.map(str::to_owned),
            suffix: suffix.map(str::to_owned),
            separator: sep.to_owned(),
            map: map
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
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
}
