//! Where values come from besides the file: `MKB__` environment overrides (any key, array
//! entries by index: `MKB__SOURCE__0__SCHEMA_REGISTRY__PASSWORD`), and `${env:NAME}` /
//! `${file:/path}` references inside string values (the secrets of systemd's
//! `LoadCredential=`, read from `$CREDENTIALS_DIRECTORY`, or of a Kubernetes secret mounted
//! as files). Both apply to the file's TOML tree before it is typed; pure but for reading the
//! referenced files and variables.
//!
//! Rules, as `docs/configuration.md` states them:
//! - a variable `MKB__A__B__C` sets the key `a.b.c` (segments lower-cased); a segment that is
//!   a number indexes an array the file has (`[[source]]`, `[[sink]]`, a list), and an index
//!   past its end is an error naming the variable; tables are created as needed; the value is
//!   text, read as the key's type (`5`, `true`, `10s`);
//! - keys holding dots or capitals (librdkafka properties, topic names in `topic_overrides`)
//!   cannot be spelt in a variable name, except librdkafka properties, whose `_` are read as
//!   `.`; give those in the file with a `${env:...}` reference instead;
//! - `${env:NAME}` is the variable `NAME`; `${file:/path}` is the file's content without one
//!   trailing newline; both may sit anywhere in a string (`mongodb://app:${file:/run/pw}@db`)
//!   and in values set through the environment; a variable that is not set or a file that
//!   cannot be read is an error naming the key (never the value).

use super::load::{ENV_PREFIX, ENV_SEPARATOR};
use super::violation::Violation;

/// Sets the `MKB__` variables of `vars` in `tree`; the problems, each naming its variable.
pub fn apply_overrides(
    tree: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<Violation> {
    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(&prefix))
        .collect();
    vars.sort();
    let mut out = Vec::new();
    for (name, value) in vars {
        let segments: Vec<String> = name[prefix.len()..]
            .split(ENV_SEPARATOR)
            .map(str::to_ascii_lowercase)
            .collect();
        if segments.iter().any(String::is_empty) {
            out.push(Violation::new(&name, "has an empty key segment"));
            continue;
        }
        if let Err(message) = set_in_table(tree, &segments, value, "") {
            out.push(Violation::new(&name, message));
        }
    }
    out
}

fn set_in_table(
    table: &mut toml::Table,
    segments: &[String],
    value: String,
    path: &str,
) -> Result<(), String> {
    let Some((key, rest)) = segments.split_first() else {
        return Ok(());
    };
    let here = if path.is_empty() {
        key.clone()
    } else {
        format!("{path}.{key}")
    };
    if rest.is_empty() {
        table.insert(key.clone(), toml::Value::String(value));
        return Ok(());
    }
    let node = table
        .entry(key.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    set_in_value(node, rest, value, &here)
}

fn set_in_value(
    node: &mut toml::Value,
    segments: &[String],
    value: String,
    path: &str,
) -> Result<(), String> {
    match node {
        toml::Value::Table(table) => set_in_table(table, segments, value, path),
        toml::Value::Array(items) => {
            let Some((index, rest)) = segments.split_first() else {
                return Ok(());
            };
            let Ok(i) = index.parse::<usize>() else {
                return Err(format!(
                    "`{path}` is a list: the segment after it must be an index, not `{index}`"
                ));
            };
            let len = items.len();
            let Some(item) = items.get_mut(i) else {
                return Err(format!(
                    "the file has {len} `{path}` entries (indexes 0 to {}): index {i} sets nothing",
                    len.saturating_sub(1)
                ));
            };
            if rest.is_empty() {
                *item = toml::Value::String(value);
                Ok(())
            } else {
                set_in_value(item, rest, value, &format!("{path}[{i}]"))
            }
        }
        _ => Err(format!("`{path}` is a value in the file, not a table")),
    }
}

/// Replaces every `${env:NAME}` and `${file:/path}` in the strings of `tree`, reading them
/// with `env` and `read`; the problems, each naming its key.
pub fn resolve_references(
    tree: &mut toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&str) -> Result<String, String>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for (key, value) in tree.iter_mut() {
        resolve_value(value, key, &Sources { env, read }, &mut out);
    }
    out
}

struct Sources<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    read: &'a dyn Fn(&str) -> Result<String, String>,
}

fn resolve_value(
    value: &mut toml::Value,
    path: &str,
    sources: &Sources<'_>,
    out: &mut Vec<Violation>,
) {
    match value {
        toml::Value::String(text) if text.contains("${") => match resolve(text, sources) {
            Ok(resolved) => *text = resolved,
            Err(message) => out.push(Violation::new(path, message)),
        },
        toml::Value::Table(table) => {
            for (key, value) in table.iter_mut() {
                resolve_value(value, &format!("{path}.{key}"), sources, out);
            }
        }
        toml::Value::Array(items) => {
            for (i, value) in items.iter_mut().enumerate() {
                resolve_value(value, &format!("{path}[{i}]"), sources, out);
            }
        }
        _ => {}
    }
}

/// `text` with its references replaced, or why one cannot be (naming the reference, which
/// is a name or a path, never a secret).
fn resolve(text: &str, sources: &Sources<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("has a `${` without its closing `}`".into());
        };
        let reference = &after[..end];
        let value = match reference.split_once(':') {
            Some(("env", name)) => (sources.env)(name).ok_or_else(|| {
                format!("`${{env:{name}}}`: the environment variable `{name}` is not set")
            })?,
            Some(("file", path)) => {
                let content = (sources.read)(path)
                    .map_err(|e| format!("`${{file:{path}}}` cannot be read: {e}"))?;
                let content = content.strip_suffix('\n').unwrap_or(&content);
                content.strip_suffix('\r').unwrap_or(content).to_owned()
            }
            _ => {
                return Err(format!(
                "`${{{reference}}}` is not a reference: use `${{env:NAME}}` or `${{file:/path}}`"
            ))
            }
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> toml::Table {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn overrides_index_the_files_arrays_and_create_tables() {
        let mut t =
            tree("[[source]]\nname = \"a\"\n[[source]]\nname = \"b\"\n[mongodb]\nuri = \"x\"\n");
        let problems = apply_overrides(
            &mut t,
            vars(&[
                ("MKB__SOURCE__1__SCHEMA_REGISTRY__PASSWORD", "pw"),
                ("MKB__SOURCE__0__BATCH_SIZE", "5"),
                ("MKB__MONGODB__URI", "y"),
                ("OTHER__SOURCE__0__NAME", "ignored"),
            ]),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            t["source"][1]["schema_registry"]["password"].as_str(),
            Some("pw")
        );
        assert_eq!(t["source"][0]["batch_size"].as_str(), Some("5"));
        assert_eq!(t["source"][0]["name"].as_str(), Some("a"));
        assert_eq!(t["mongodb"]["uri"].as_str(), Some("y"));
    }

    #[test]
    fn overrides_that_set_nothing_are_named() {
        let mut t = tree("[[sink]]\nname = \"a\"\n[mongodb]\nuri = \"x\"\n");
        let problems = apply_overrides(
            &mut t,
            vars(&[
                ("MKB__SINK__2__NAME", "b"),
                ("MKB__SINK__NAME", "b"),
                ("MKB__MONGODB__URI__X", "b"),
                ("MKB__SINK____NAME", "b"),
            ]),
        );
        let text = Violation::list(&problems);
        for name in [
            "MKB__SINK__2__NAME",
            "MKB__SINK__NAME",
            "MKB__MONGODB__URI__X",
            "MKB__SINK____NAME",
        ] {
            assert!(text.contains(name), "{name} not named in {text}");
        }
        assert!(text.contains("the file has 1 `sink` entries"), "{text}");
    }

    #[test]
    fn references_are_read_anywhere_in_a_string_and_problems_named_by_key() {
        let mut t = tree(
            "[mongodb]\nuri = \"mongodb://app:${file:/run/pw}@db/\"\n\
             [[source]]\nschema_registry = { password = \"${env:PW}\", username = \"${env:NOPE}\" }\n\
             [kafka.properties]\n\"sasl.password\" = \"${file:/missing}\"\nplain = \"a $ {b}\"\nodd = \"${vault:x}\"\n",
        );
        let env = |name: &str| (name == "PW").then(|| "from-env".to_owned());
        let read = |path: &str| match path {
            "/run/pw" => Ok("from-file\r\n".to_owned()),
            _ => Err("No such file or directory".to_owned()),
        };
        let problems = resolve_references(&mut t, &env, &read);
        assert_eq!(
            t["mongodb"]["uri"].as_str(),
            Some("mongodb://app:from-file@db/")
        );
        assert_eq!(
            t["source"][0]["schema_registry"]["password"].as_str(),
            Some("from-env")
        );
        assert_eq!(t["kafka"]["properties"]["plain"].as_str(), Some("a $ {b}"));
        let text = Violation::list(&problems);
        assert!(
            text.contains("source[0].schema_registry.username")
                && text.contains("`NOPE` is not set"),
            "{text}"
        );
        assert!(
            text.contains("kafka.properties.sasl.password") && text.contains("/missing"),
            "{text}"
        );
        assert!(
            text.contains("kafka.properties.odd") && text.contains("not a reference"),
            "{text}"
        );
    }
}
