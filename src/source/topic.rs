//! Namespace → topic name. Pure.
//!
//! As the MongoDB Kafka Connector's `DefaultTopicMapper`: the namespace map's rules
//! ([`crate::config::namespace_map`]) are tried from the most specific: the `db.coll` key,
//! then the `db` key (its topic, the separator and the collection), then this daemon's `db.*`
//! key, then the regex keys in the order written (each matching the whole namespace, `db.coll`
//! or `db` for database-wide events; the first that matches names the topic through its
//! template), then `*`. Without a match the topic is the database and the collection joined
//! by the separator. The prefix and suffix are added either way.

use crate::config::namespace_map::NamespaceRules;
use crate::config::SourceConfig;

/// Maps the namespace of a change event to its topic.
#[derive(Debug, Clone)]
pub struct TopicMapper {
    prefix: Option<String>,
    suffix: Option<String>,
    separator: String,
    rules: NamespaceRules,
}

impl TopicMapper {
    /// The mapper of a source pipeline; a key that means nothing (a regex or a template that
    /// does not parse) is an error naming it (validation reports them first, each with its
    /// key).
    pub fn new(config: &SourceConfig) -> Result<Self, String> {
        let rules = NamespaceRules::new(&config.topic_namespace_map).map_err(|errors| {
            errors
                .iter()
                .map(|(key, e)| format!("topic_namespace_map key `{key}`: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        Ok(Self {
            prefix: config.topic_prefix.clone().filter(|p| !p.is_empty()),
            suffix: config.topic_suffix.clone().filter(|s| !s.is_empty()),
            separator: config.topic_separator.clone(),
            rules,
        })
    }

    /// The topic of the namespace `db.coll` (`coll` is absent for database-level events such
    /// as `dropDatabase`), by the namespace map (see the module's rules); otherwise `db` and
    /// `coll` joined by the separator. The prefix and suffix are added either way.
    pub fn topic(&self, db: &str, coll: Option<&str>) -> String {
        let rules = &self.rules;
        let namespace = match coll {
            Some(c) => format!("{db}.{c}"),
            None => db.to_owned(),
        };
        let with_collection = |topic: &str| match coll {
            Some(coll) => format!("{topic}{}{coll}", self.separator),
            None => topic.to_owned(),
        };
        let mapped = coll
            .and_then(|_| rules.namespaces.get(&namespace).cloned())
            .or_else(|| rules.databases.get(db).map(|t| with_collection(t)))
            .or_else(|| rules.whole_databases.get(db).cloned())
            .or_else(|| {
                rules
                    .regexes
                    .iter()
                    .find(|rule| rule.regex.is_match(&namespace))
                    .map(|rule| rule.template.expand(db, coll, &self.separator))
            })
            .or_else(|| rules.wildcard.clone());
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
    fn regex_keys_of_the_earlier_form_match_anywhere() {
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
        // Several regex keys: the first written wins.
        let m = mapper(None, None, ".", &[("/b/", "first"), ("/a/", "second")]);
        assert_eq!(m.topic("ab", Some("c")), "first");
    }

    /// A mapper from the `[source]` keys in `toml` (`topic_namespace_map` in document order).
    fn mapper_toml(toml: &str) -> TopicMapper {
        let config: SourceConfig =
            toml::from_str(&format!("name = \"s\"\n{toml}")).unwrap_or_else(|e| panic!("{e}"));
        TopicMapper::new(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `db.coll` or `db` as the connector's tests name a namespace.
    fn topic_of(m: &TopicMapper, namespace: &str) -> String {
        match namespace.split_once('.') {
            Some((db, coll)) => m.topic(db, Some(coll)),
            None => m.topic(namespace, None),
        }
    }

    // The examples of the connector's documentation, "Topic Naming": `topic.namespace.map`.
    #[test]
    fn connector_docs_database_and_collection_names() {
        let map = "[topic_namespace_map]\n\"carDb\" = \"automobiles\"\n\"carDb.ev\" = \"electricVehicles\"\n";
        let m = mapper_toml(map);
        assert_eq!(topic_of(&m, "carDb.ev"), "electricVehicles");
        assert_eq!(topic_of(&m, "carDb.sedans"), "automobiles.sedans");
        assert_eq!(topic_of(&m, "carDb"), "automobiles");
        assert_eq!(topic_of(&m, "trucks.big"), "trucks.big");
        let m = mapper_toml(&format!(
            "topic_prefix = \"p\"\ntopic_suffix = \"s\"\n{map}"
        ));
        assert_eq!(topic_of(&m, "carDb.ev"), "p.electricVehicles.s");
        assert_eq!(topic_of(&m, "carDb.sedans"), "p.automobiles.sedans.s");
    }

    #[test]
    fn connector_docs_regular_expressions() {
        let m = mapper_toml(
            "[topic_namespace_map]\n\"/vertical(?:\\\\..*)?\" = \"industrial{sep_coll}\"\n\"vertical.health\" = \"healthcare\"\n",
        );
        assert_eq!(topic_of(&m, "vertical.health"), "healthcare");
        assert_eq!(
            topic_of(&m, "vertical.wasteManagement"),
            "industrial.wasteManagement"
        );
        assert_eq!(topic_of(&m, "vertical"), "industrial");
        // The pattern must match the whole namespace.
        assert_eq!(topic_of(&m, "verticals.a"), "verticals.a");
        assert_eq!(topic_of(&m, "the_vertical.a"), "the_vertical.a");
    }

    #[test]
    fn connector_docs_wildcard() {
        let m = mapper_toml(
            "[topic_namespace_map]\n\"carDb\" = \"automobiles\"\n\"carDb.ev\" = \"electricVehicles\"\n\"*\" = \"otherVehicles\"\n",
        );
        assert_eq!(topic_of(&m, "carDb.ev"), "electricVehicles");
        assert_eq!(topic_of(&m, "carDb.vans"), "automobiles.vans");
        assert_eq!(topic_of(&m, "boats.sail"), "otherVehicles");
        assert_eq!(topic_of(&m, "boats"), "otherVehicles");
    }

    // The examples of the connector's `topic.namespace.map` reference (separator `-`).
    #[test]
    fn connector_reference_examples() {
        let m = mapper_toml(
            "topic_separator = \"-\"\n[topic_namespace_map]\n\"myDb\" = \"topicTwo\"\n\"myDb.myColl\" = \"topicOne\"\n",
        );
        assert_eq!(topic_of(&m, "myDb.myColl"), "topicOne");
        assert_eq!(topic_of(&m, "myDb.other"), "topicTwo-other");
        assert_eq!(topic_of(&m, "myDb"), "topicTwo");
        assert_eq!(topic_of(&m, "db2.c"), "db2-c");
        assert_eq!(topic_of(&m, "db2"), "db2");
        let m = mapper_toml(
            "topic_separator = \"-\"\n[topic_namespace_map]\n\"/myDb(?:\\\\..*)?\" = \"topicTwo{sep_coll}\"\n\"*\" = \"topicThree\"\n\"myDb.myColl\" = \"topicOne\"\n",
        );
        assert_eq!(topic_of(&m, "myDb.myColl"), "topicOne");
        assert_eq!(topic_of(&m, "myDb.myColl2"), "topicTwo-myColl2");
        assert_eq!(topic_of(&m, "myDb"), "topicTwo");
        assert_eq!(topic_of(&m, "myDb2.myColl2"), "topicThree");
    }

    // The connector's own test (DefaultTopicMapperTest): order, precedence and the
    // placeholders. Its duplicate `/my.*` key (TOML refuses duplicates) is here once, with the
    // empty template that the connector keeps of it: an empty template is ignored.
    #[test]
    fn connector_test_extensive_map() {
        let m = mapper_toml(
            "[topic_namespace_map]\n\"/my.*\" = \"\"\n\"*\" = \"topicFive\"\n\"myDb\" = \"topicTwo\"\n\"/myDb\\\\d?\" = \"topicThree\"\n\"/myDb\\\\d{0,2}\" = \"topicFour\"\n\"myDb.myColl\" = \"topicOne\"\n",
        );
        assert_eq!(topic_of(&m, "myDb.myColl"), "topicOne");
        assert_eq!(topic_of(&m, "myDb"), "topicTwo");
        assert_eq!(topic_of(&m, "myDb.myColl2"), "topicTwo.myColl2");
        assert_eq!(topic_of(&m, "myDb2"), "topicThree");
        assert_eq!(topic_of(&m, "myDb3"), "topicThree");
        assert_eq!(topic_of(&m, "myDb10"), "topicFour");
        assert_eq!(topic_of(&m, "myDb100"), "topicFive");
        for sep in ["-", "_", "."] {
            let m = mapper_toml(&format!(
                "topic_separator = \"{sep}\"\n[topic_namespace_map]\n\"/.*\" = \"begin{{coll}}{{sep}}{{db}}x{{sep_coll_sep}}y{{coll_sep}}{{db}}{{sep_coll}}end\"\n"
            ));
            assert_eq!(
                topic_of(&m, "myDb.myColl"),
                format!("beginmyColl{sep}myDbx{sep}myColl{sep}ymyColl{sep}myDb{sep}myCollend")
            );
            // Without a collection the collection placeholders are empty, `{sep}` is not.
            assert_eq!(topic_of(&m, "myDb"), format!("begin{sep}myDbxymyDbend"));
        }
    }

    #[test]
    fn regex_keys_are_tried_in_the_order_configured() {
        // By their text `/.*` would come first.
        let m = mapper_toml("[topic_namespace_map]\n\"/z.*\" = \"first\"\n\"/.*\" = \"second\"\n");
        assert_eq!(topic_of(&m, "zoo.c"), "first");
        assert_eq!(topic_of(&m, "ape.c"), "second");
    }

    // The connector refuses these maps (DefaultTopicMapperTest): a `/` in a plain key,
    // unbalanced braces, an unknown or upper-case placeholder, a regex that does not compile.
    #[test]
    fn maps_the_connector_refuses_are_refused() {
        for (key, template) in [
            ("myDb/myColl", "topicOne"),
            ("/", "{"),
            ("/", "}"),
            ("/", "{}"),
            ("/", "{{}"),
            ("/", "{}}"),
            ("/", "{unsupported_variable}"),
            ("/", "{DB}"),
            ("/[invalid", "topicOne"),
        ] {
            let mut config: SourceConfig =
                toml::from_str("name = \"s\"").unwrap_or_else(|e| panic!("{e}"));
            config.topic_namespace_map = toml::from_str(&format!("{key:?} = {template:?}"))
                .unwrap_or_else(|e| panic!("{e}"));
            let err = TopicMapper::new(&config).err();
            assert!(err.is_some(), "`{key}` = `{template}` was accepted");
        }
    }

    #[test]
    fn a_regex_key_that_does_not_compile_is_named() {
        let mut config: SourceConfig =
            toml::from_str("name = \"s\"").unwrap_or_else(|e| panic!("{e}"));
        config.topic_namespace_map = [("/(/".to_owned(), "t".to_owned())].into_iter().collect();
        let err = TopicMapper::new(&config).expect_err("bad regex");
        assert!(err.contains("`/(/`"), "{err}");
    }
}
