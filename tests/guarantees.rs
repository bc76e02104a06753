//! The Guarantees table (`docs/guarantees.md`) names, for every promise, the tests that fail
//! when it breaks.
//! This checks that the names are true: every row names at least one test, every file it
//! names exists, and every test it names is a function of the file (or module) it follows.
//! A renamed or deleted test fails here instead of leaving a promise proved by nothing.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The "proved by" cells of the Guarantees table in `docs/guarantees.md`, with their promise.
fn guarantees() -> Vec<(String, String)> {
    let file = read(&root().join("docs/guarantees.md"));
    // The section is the whole file: its `# Guarantees` heading, up to any next heading of
    // that level.
    let section = file
        .strip_prefix("# Guarantees\n")
        .expect("docs/guarantees.md starts with its `# Guarantees` heading");
    let section = section.split("\n# ").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| promise"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').rsplitn(2, " | ").collect();
            match cells.as_slice() {
                [proof, promise] => Some((promise.trim().to_owned(), proof.trim().to_owned())),
                _ => None,
            }
        })
        .collect()
}

/// The `backticked` words of a cell.
fn quoted(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

fn is_identifier(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_lowercase())
        && word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '*')
        && word.contains('_')
}

/// The source file of a module path such as `source::reader::settings`.
fn module_file(path: &[&str]) -> Option<PathBuf> {
    let base = root().join("src").join(path.join("/"));
    [base.with_extension("rs"), base.join("mod.rs")]
        .into_iter()
        .find(|p| p.exists())
}

/// Whether `text` defines a function `name` (a trailing `*` matches any ending).
fn defines(text: &str, name: &str) -> bool {
    match name.strip_suffix('*') {
        Some(prefix) => text.contains(&format!("fn {prefix}")),
        None => text.contains(&format!("fn {name}(")) || text.contains(&format!("fn {name}<")),
    }
}

/// The problems of one "proved by" cell.
fn problems(proof: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut current: Option<PathBuf> = None;
    let mut tests = 0;
    for word in quoted(proof) {
        if word.ends_with(".rs") || word.ends_with(".sh") {
            let path = root().join(word);
            if !path.exists() {
                problems.push(format!("`{word}` does not exist"));
            }
            if word.ends_with(".rs") {
                tests += 1;
                current = Some(path);
            }
        } else if word.contains("::") {
            // `module::path::tests::name`, or `module::path::tests` for all of them.
            let parts: Vec<&str> = word.split("::").collect();
            let Some(at) = parts.iter().position(|p| *p == "tests") else {
                problems.push(format!("`{word}` is not a path to a test"));
                continue;
            };
            tests += 1;
            match module_file(&parts[..at]) {
                None => problems.push(format!("`{word}`: no source file for its module")),
                Some(file) => {
                    let text = read(&file);
                    if !text.contains("mod tests") {
                        problems.push(format!("`{word}`: {} has no tests", file.display()));
                    }
                    if let Some(name) = parts.get(at + 1) {
                        if !defines(&text, name) {
                            problems
                                .push(format!("`{word}`: no `fn {name}` in {}", file.display()));
                        }
                    }
                    // Bare names after it are tests of that module.
                    current = Some(file);
                }
            }
        } else if is_identifier(word) {
            match &current {
                Some(file) if defines(&read(file), word) => tests += 1,
                Some(file) => problems.push(format!("no `fn {word}` in {}", file.display())),
                None => problems.push(format!("`{word}` follows no file")),
            }
        }
    }
    if tests == 0 {
        problems.push("names no test".to_owned());
    }
    problems
}

#[test]
fn every_guarantee_names_tests_that_exist() {
    let rows = guarantees();
    assert!(
        rows.len() >= 20,
        "the Guarantees table was not read: {} rows",
        rows.len()
    );
    let wrong: Vec<String> = rows
        .iter()
        .filter_map(|(promise, proof)| {
            let problems = problems(proof);
            (!problems.is_empty()).then(|| {
                let short: String = promise.chars().take(80).collect();
                format!("{short}…: {}", problems.join("; "))
            })
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "Guarantees rows whose tests are not what they say:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_catches_a_test_that_does_not_exist() {
    assert!(problems("`tests/source.rs` `no_such_test_anywhere`")
        .iter()
        .any(|p| p.contains("no `fn no_such_test_anywhere`")));
    assert!(problems("`tests/no_such_file.rs`")
        .iter()
        .any(|p| p.contains("does not exist")));
    assert!(problems("`source::ledger::tests::no_such_test`")
        .iter()
        .any(|p| p.contains("no `fn no_such_test`")));
    assert!(problems("words only").iter().any(|p| p == "names no test"));
    // A field name in backticks (`_id`) after a file is no test name.
    assert!(problems("`tests/source.rs` `an_event_too_large_*` (its `_id`)").is_empty());
    assert!(problems("`tests/source.rs` `an_event_too_large_*`").is_empty());
    assert!(problems("`source::ledger::tests` (`no_such_test`)")
        .iter()
        .any(|p| p.contains("no `fn no_such_test`")));
}
