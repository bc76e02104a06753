//! Reading a connector's configuration: Kafka Connect's REST shapes (`{"name": ..., "config":
//! {...}}` from `GET /connectors/<name>`, the bare map of `GET /connectors/<name>/config`) and
//! `.properties` files.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::ImportError;

/// A connector's configuration, as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connector {
    /// The connector's name, when the input gives one.
    pub name: Option<String>,
    /// Every property, its value as text (JSON booleans and numbers as written).
    pub properties: BTreeMap<String, String>,
}

/// Reads `text`, from the file `path` (whose extension only decides between JSON and
/// properties when the text does not): one connector, or every connector of a
/// `GET /connectors?expand=info` answer or of a JSON array of connectors. A connector without
/// a name is named after the file.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Connector>, ImportError> {
    let json_file = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let trimmed = text.trim_start();
    let mut connectors = if json_file || trimmed.starts_with('{') || trimmed.starts_with('[') {
        parse_json(text)?
    } else {
        vec![parse_properties(text)?]
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    for connector in &mut connectors {
        if connector.name.is_none() && !connector.properties.contains_key("name") {
            connector.name = Some(stem.clone());
        }
    }
    Ok(connectors)
}

const SHAPES: &str = "give the connector as `GET /connectors/<name>` or `GET /connectors/<name>/config` returns it (or `GET /connectors?expand=info`)";

fn parse_json(text: &str) -> Result<Vec<Connector>, ImportError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ImportError::NotJson(e.to_string()))?;
    match value {
        serde_json::Value::Object(top) => {
            // `GET /connectors?expand=info`: `{"<name>": {"info": {"name", "config", ...}}}`.
            let expanded = !top.contains_key("config")
                && !top.contains_key("connector.class")
                && !top.is_empty()
                && top
                    .values()
                    .all(|v| v.get("info").is_some_and(|i| i.get("config").is_some()));
            if expanded {
                top.into_iter()
                    .map(|(name, v)| {
                        let mut info = v.get("info").cloned().unwrap_or_default();
                        if info.get("name").is_none() {
                            info["name"] = serde_json::Value::String(name);
                        }
                        one(info)
                    })
                    .collect()
            } else {
                Ok(vec![one(serde_json::Value::Object(top))?])
            }
        }
        serde_json::Value::Array(items)
            if items.iter().all(|i| i.get("config").is_some()) && !items.is_empty() =>
        {
            items.into_iter().map(one).collect()
        }
        _ => Err(ImportError::NotAConnector(format!(
            "the JSON is not an object of properties: {SHAPES}"
        ))),
    }
}

/// One connector: `{"name": ..., "config": {...}}` or the bare map.
fn one(value: serde_json::Value) -> Result<Connector, ImportError> {
    let serde_json::Value::Object(mut top) = value else {
        return Err(ImportError::NotAConnector(format!(
            "a connector is not an object: {SHAPES}"
        )));
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
        .expect("parses")
        .remove(0);
        assert_eq!(rest.name.as_deref(), Some("n"));
        assert_eq!(rest.properties["tasks.max"], "1");
        assert_eq!(rest.properties["schemas"], "false");
        assert!(!rest.properties.contains_key("gone"));
        let bare = parse(r#"{"connector.class": "X", "name": "m"}"#, Path::new("c"))
            .expect("parses")
            .remove(0);
        assert_eq!(bare.name, None);
        assert_eq!(bare.properties["name"], "m");
        let props = parse(
            "# comment\nconnector.class=X\nmax.batch.size = 0\nregex=^a\\.(b|c)$\nlong=a,\\\n  b\n",
            Path::new("c.properties"),
        )
        .expect("parses")
        .remove(0);
        assert_eq!(props.properties["max.batch.size"], "0");
        // Java's rules: an unknown escape drops its backslash.
        assert_eq!(props.properties["regex"], "^a.(b|c)$");
        assert_eq!(props.properties["long"], "a,b");
        assert_eq!(props.name.as_deref(), Some("c"), "named after the file");
        let expanded = parse(
            r#"{"a": {"info": {"name": "a", "config": {"connector.class": "X"}}}, "b": {"info": {"config": {"connector.class": "Y"}}}}"#,
            Path::new("all.json"),
        )
        .expect("parses");
        let names: Vec<_> = expanded.iter().map(|c| c.name.as_deref()).collect();
        assert_eq!(names, [Some("a"), Some("b")]);
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
