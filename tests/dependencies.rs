//! Dependency hygiene (issue 22): every crate `Cargo.toml` names is used. A dependency of the
//! daemon is named in `src/`; a dev-dependency in the tests, benches, examples or the unit
//! tests. An unused one only costs build time and audit noise, and hides what the daemon
//! really relies on.

use std::path::Path;

/// The crate names of one `[section]` of the manifest.
fn section(manifest: &str, name: &str) -> Vec<String> {
    let header = format!("\n[{name}]\n");
    let Some(start) = manifest.find(&header) else {
        panic!("Cargo.toml has no [{name}]");
    };
    manifest[start + header.len()..]
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split('=').next())
        .map(|n| n.trim().to_owned())
        .collect()
}

/// The text of every `.rs` file under `dirs`.
fn sources(dirs: &[&str]) -> String {
    fn walk(path: &Path, out: &mut String) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(path).unwrap_or_default());
            out.push('\n');
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = String::new();
    for dir in dirs {
        walk(&root.join(dir), &mut out);
    }
    out
}

/// Whether `text` uses the crate `name`: a path (`name::`), a `use`, or a serde `with`
/// module (`"name"`).
fn uses(text: &str, name: &str) -> bool {
    let ident = name.replace('-', "_");
    let pattern = regex::Regex::new(&format!(
        r#"(\b{ident}::|\buse {ident}\b|"{ident}"|\b{ident}!)"#
    ))
    .expect("pattern");
    pattern.is_match(text)
}

fn unused(names: &[String], text: &str) -> Vec<String> {
    names.iter().filter(|n| !uses(text, n)).cloned().collect()
}

#[test]
fn every_dependency_is_used() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("Cargo.toml");
    let daemon = section(&manifest, "dependencies");
    assert!(
        daemon.len() > 20,
        "the dependencies were not read: {daemon:?}"
    );
    let unused_by_daemon = unused(&daemon, &sources(&["src"]));
    assert!(
        unused_by_daemon.is_empty(),
        "dependencies src/ never uses: {unused_by_daemon:?}"
    );
    let dev = section(&manifest, "dev-dependencies");
    let unused_by_tests = unused(&dev, &sources(&["src", "tests", "benches", "examples"]));
    assert!(
        unused_by_tests.is_empty(),
        "dev-dependencies nothing uses: {unused_by_tests:?}"
    );
}

#[test]
fn the_check_sees_a_crate_that_is_not_used() {
    let text = "use serde::Deserialize;\n#[serde(with = \"humantime_serde\")]\nlet x = futures_util::future::ready(1);";
    assert!(uses(text, "serde"));
    assert!(uses(text, "humantime-serde"));
    assert!(uses(text, "futures-util"));
    assert!(!uses(text, "anyhow"));
    assert!(
        !uses(text, "serde_json"),
        "a prefix of another crate's name is not a use"
    );
}

/// The versions of each package in `Cargo.lock`.
fn locked_versions() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))
        .expect("Cargo.lock");
    let mut versions =
        std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for package in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            package
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
                .map(|v| v.trim_end_matches('"').to_owned())
        };
        if let (Some(name), Some(version)) = (field("name"), field("version")) {
            versions.entry(name).or_default().insert(version);
        }
    }
    versions
}

/// One version of each crate the daemon depends on directly (`toml` was compiled twice,
/// ours and the `config` crate's), but where a dependency of ours insists on another.
#[test]
fn each_direct_dependency_is_compiled_in_one_version() {
    // hyper-util (under reqwest) wants base64 0.23; bson and mongodb, which ours matches, 0.22.
    const ALLOWED: [&str; 1] = ["base64"];
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("Cargo.toml");
    let versions = locked_versions();
    let twice: Vec<String> = section(&manifest, "dependencies")
        .into_iter()
        .filter(|n| !ALLOWED.contains(&n.as_str()))
        .filter_map(|n| {
            let found = versions.get(&n)?;
            (found.len() > 1).then(|| format!("{n} {found:?}"))
        })
        .collect();
    assert!(twice.is_empty(), "compiled in several versions: {twice:?}");
}
