//! Reading a connector's configuration: Kafka Connect's REST shapes (`{"name": ..., "config":
//! {...}}` from `GET /connectors/<name>`, the bare map of `GET /connectors/<name>/config`) and
//! `.properties` files.

use std::collections::BTreeMap;
use std::path::Path;

use super::ImportError;

/// A connector's configuration, as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connector {
    /// The connector's name, when the input gives one.
    pub name: Option<String>,
    /// Every property, its value as text (JSON booleans and numbers as written).
    pub properties: BTreeMap<String, String>,
}

/// Reads `text`, from the file `path` (whose extension only decides between JSON and
/// properties when the text does not).
pub fn parse(text: &str, path: &Path) -> Result<Connector, ImportError> {
    let json_file = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if json_file || text.trim_start().starts_with('{') {
        parse_json(text)
    } else {
        parse_properties(text)
    }
}

fn parse_json(text: &str) -> Result<Connector, ImportError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ImportError::NotJson(e.to_string()))?;
    let serde_json::Value::Object(mut top) = value else {
        return Err(ImportError::NotAConnector(
            "the JSON is not an object: give the connector as `GET /connectors/<name>` or `GET /connectors/<name>/config` returns it".to_owned(),
        ));
    };
    let (name, config) = match top.remove("config") {
        Some(serde_json::Value::Object(config)) => {
            let name = match top.get("name") {
                Some(serde_json::Value::String(name)) => Some(name.clone()),
                _ => None,
            };
            (name, config)
        }
        Some(_) => {
            return Err(ImportError::NotAConnector(
                "`config` is not an object of properties".to_owned(),
            ))
        }
        None => (None, top),
    };
    let mut properties = BTreeMap::new();
    for (key, value) in config {
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            // Kafka Connect takes strings only; an array or object is kept as its JSON text
            // (a `pipeline` written as an array means the same).
            other => other.to_string(),
        };
        properties.insert(key, text);
    }
    Ok(Connector { name, properties })
}

fn parse_properties(text: &str) -> Result<Connector, ImportError> {
    let map = java_properties::read(text.as_bytes())
        .map_err(|e| ImportError::NotProperties(e.to_string()))?;
    Ok(Connector {
        name: None,
        properties: map.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_shape_bare_map_and_properties() {
        let rest = parse(
            r#"{"name": "n", "config": {"connector.class": "X", "tasks.max": 1, "schemas": false, "gone": null}, "tasks": []}"#,
            Path::new("c.json"),
        )
        .expect("parses");
        assert_eq!(rest.name.as_deref(), Some("n"));
        assert_eq!(rest.properties["tasks.max"], "1");
        assert_eq!(rest.properties["schemas"], "false");
        assert!(!rest.properties.contains_key("gone"));
        let bare =
            parse(r#"{"connector.class": "X", "name": "m"}"#, Path::new("c")).expect("parses");
        assert_eq!(bare.name, None);
        assert_eq!(bare.properties["name"], "m");
        let props = parse(
            "# comment\nconnector.class=X\nmax.batch.size = 0\nregex=^a\\.(b|c)$\nlong=a,\\\n  b\n",
            Path::new("c.properties"),
        )
        .expect("parses");
        assert_eq!(props.properties["max.batch.size"], "0");
        // Java's rules: an unknown escape drops its backslash.
        assert_eq!(props.properties["regex"], "^a.(b|c)$");
        assert_eq!(props.properties["long"], "a,b");
    }

    #[test]
    fn bad_json_is_named() {
        assert!(matches!(
            parse("{\"a\": ", Path::new("c.json")),
            Err(ImportError::NotJson(_))
        ));
        assert!(matches!(
            parse("[1]", Path::new("c.json")),
            Err(ImportError::NotAConnector(_))
        ));
    }
}
