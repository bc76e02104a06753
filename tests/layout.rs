//! The module layout of `src/`: no import circle, and no import back up into a folder.
//!
//! What is read: every `use` and `pub use` declaration of every file under `src/` (the
//! binary's `src/main.rs` aside), leaving out `#[cfg(test)] mod ...` blocks and files
//! declared as `#[cfg(test)] mod name;` (tests may reach anything they compare with).
//!
//! - Each file is one module: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`, `src/lib.rs`
//!   the crate root.
//! - An imported path (`crate::...`, `super::...`, `self::...`, or a child module's name)
//!   leads to the deepest module its leading names reach; the item after them (`X` in
//!   `crate::a::b::X`) is then followed through that module's `pub use` re-exports (named
//!   or `*`) to the module that defines it.
//!
//! **Rule 1, no circle**: with an edge A → B for every import in A of an item of B, edges
//! between a module and its own ancestors or descendants left out (a folder's `mod.rs`
//! uses its children; the other way round is rule 2), the graph of modules has no cycle.
//!
//! **Rule 2, no import back up**: no module imports an item that one of its ancestors
//! (a folder's `mod.rs`, the crate root) defines in its own file, nor `*` of an ancestor.
//! A name the ancestor only re-exports (`pub use child::X`) is fine: it leads to `child`.
//! [`KNOWN`] lists the imports back up that are left as they were (each one a later
//! refactor); an entry no longer needed fails the test, so the list only shrinks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Imports back up into a folder left for now: (importing module, ancestor's item).
const KNOWN: &[(&str, &str)] = &[
    ("source::reader::read_loop", "ReaderContext"),
    ("source::reader::records", "ReaderContext"),
];

type Module = Vec<String>;

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

/// Every module of `src/` (the binary aside) with its text.
fn sources(src: &Path) -> BTreeMap<Module, String> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Ok(rel) = path.strip_prefix(src) else {
                continue;
            };
            let rel = rel.to_string_lossy().replace('\\', "/");
            let Some(stem) = rel.strip_suffix(".rs") else {
                continue;
            };
            if stem == "main" {
                continue;
            }
            let mut module: Module = stem.split('/').map(str::to_owned).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            files.insert(module, text);
        }
    }
    files
}

/// `text` without comments, and without `#[cfg(test)] mod name { ... }` blocks.
fn without_tests(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
        if lines[i].trim() == "#[cfg(test)]" && next.starts_with("mod ") && next.ends_with('{') {
            // Skip to the block's closing brace at the same indentation.
            let indent = lines[i + 1].len() - lines[i + 1].trim_start().len();
            let close = format!("{}}}", " ".repeat(indent));
            i += 2;
            while i < lines.len() && lines[i] != close {
                i += 1;
            }
            i += 1;
            continue;
        }
        out.push_str(lines[i]);
        out.push('\n');
        i += 1;
    }
    out
}

/// The modules declared as `#[cfg(test)] mod name;` in `text`.
fn test_files(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "#[cfg(test)]")
        .filter_map(|w| w[1].strip_prefix("mod ")?.strip_suffix(';'))
        .map(str::to_owned)
        .collect()
}

/// One imported path, as written (`super::x::Y`), and whether it is a `pub use`.
struct Import {
    public: bool,
    path: String,
}

/// The `use` declarations of `text` (tests left out), one path per imported name.
fn imports(text: &str) -> Vec<Import> {
    let text = without_tests(text);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("use ") {
        let before = &rest[..at];
        let line_start = before.rfind('\n').map_or(0, |n| n + 1);
        let head = before[line_start..].trim();
        let public = head == "pub" || (head.starts_with("pub(") && head.ends_with(')'));
        if !(head.is_empty() || public) {
            // `use ` inside a word or a sentence.
            rest = &rest[at + 4..];
            continue;
        }
        let Some(end) = rest[at..].find(';') else {
            break;
        };
        let body = &rest[at + 4..at + end];
        rest = &rest[at + end + 1..];
        let compact: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
        let compact = compact
            .replace(" ::", "::")
            .replace(":: ", "::")
            .replace("{ ", "{")
            .replace(" }", "}")
            .replace(" ,", ",")
            .replace(", ", ",");
        for path in expand(&compact) {
            let path = match path.split_once(" as ") {
                Some((p, _)) => p.to_owned(),
                None => path,
            };
            out.push(Import { public, path });
        }
    }
    out
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.to_owned()];
    };
    let prefix = &tree[..open];
    let body = tree[open + 1..]
        .strip_suffix('}')
        .unwrap_or(&tree[open + 1..]);
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&body[start..]);
    items
        .into_iter()
        .filter(|i| !i.is_empty())
        .flat_map(expand)
        .map(|i| format!("{prefix}{i}"))
        .collect()
}

/// The layout's problems, by the rules of the module doc.
fn check(files: &BTreeMap<Module, String>) -> Vec<String> {
    let mut tests: BTreeSet<Module> = BTreeSet::new();
    for (module, text) in files {
        for child in test_files(text) {
            let mut m = module.clone();
            m.push(child);
            tests.insert(m);
        }
    }
    let is_module = |m: &Module| files.contains_key(m);
    // The module a path leads to, and the names after it.
    let resolve = |current: &Module, path: &str| -> Option<(Module, Vec<String>)> {
        let mut segments: Vec<String> = path.split("::").map(str::to_owned).collect();
        let mut base = match segments.first().map(String::as_str) {
            Some("crate") => {
                segments.remove(0);
                Vec::new()
            }
            Some("super") => {
                let mut base = current.clone();
                while segments.first().map(String::as_str) == Some("super") {
                    segments.remove(0);
                    base.pop();
                }
                base
            }
            Some("self") => {
                segments.remove(0);
                current.clone()
            }
            Some(first) => {
                let mut child = current.clone();
                child.push(first.to_owned());
                if !is_module(&child) {
                    return None; // another crate
                }
                current.clone()
            }
            None => return None,
        };
        while let Some(next) = segments.first() {
            let mut deeper = base.clone();
            deeper.push(next.clone());
            if !is_module(&deeper) {
                break;
            }
            base = deeper;
            segments.remove(0);
        }
        Some((base, segments))
    };
    let defines = |module: &Module, item: &str| -> bool {
        let text = without_tests(&files[module]);
        text.lines().any(|line| {
            let words: Vec<&str> = line
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
                .collect();
            words.first() == Some(&"pub")
                && words.windows(2).any(|w| {
                    matches!(
                        w[0],
                        "struct" | "enum" | "fn" | "const" | "static" | "type" | "trait" | "mod"
                    ) && w[1] == item
                })
        })
    };
    // The module defining `item` when `module` re-exports it, else `module`.
    let origin = |module: &Module, item: &str| -> Module {
        for import in imports(&files[module]).into_iter().filter(|i| i.public) {
            let last = import.path.rsplit("::").next().unwrap_or("");
            if last != item && last != "*" {
                continue;
            }
            if let Some((to, _)) = resolve(module, &import.path) {
                if to != *module && (last == item || defines(&to, item)) {
                    return to;
                }
            }
        }
        module.clone()
    };
    let is_prefix = |a: &Module, b: &Module| a.len() <= b.len() && b[..a.len()] == a[..];
    let mut problems = Vec::new();
    let mut known_seen = BTreeSet::new();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, text) in files {
        if tests.iter().any(|t| is_prefix(t, module)) {
            continue;
        }
        for import in imports(text) {
            let Some((to, rest)) = resolve(module, &import.path) else {
                continue;
            };
            let item = rest.first().map(String::as_str).unwrap_or("self");
            let target = if item == "self" || item == "*" {
                to.clone()
            } else {
                origin(&to, item)
            };
            if target == *module {
                continue;
            }
            if is_prefix(&target, module) {
                if target == to && item != "self" {
                    let here = name(module);
                    if KNOWN.contains(&(here.as_str(), item)) {
                        known_seen.insert((here, item.to_owned()));
                    } else {
                        problems.push(format!(
                            "{here} imports `{}` back up from its ancestor {} (move the item \
                             into a module of its own)",
                            import.path,
                            name(&target)
                        ));
                    }
                }
                continue;
            }
            if is_prefix(module, &target) {
                continue;
            }
            edges.entry(module.clone()).or_default().insert(target);
        }
    }
    for (module, item) in KNOWN {
        if !known_seen.contains(&((*module).to_owned(), (*item).to_owned())) {
            problems.push(format!(
                "KNOWN lists {module} importing `{item}` back up, which it no longer does: \
                 take it off the list"
            ));
        }
    }
    for cycle in cycles(&edges) {
        let names: Vec<String> = cycle.iter().map(|m| name(m)).collect();
        problems.push(format!("import circle: {}", names.join(" → ")));
    }
    problems
}

/// One cycle through each strongly connected group of modules that has one.
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    let nodes: BTreeSet<&Module> = edges
        .iter()
        .flat_map(|(from, to)| std::iter::once(from).chain(to))
        .collect();
    let mut found: Vec<Vec<Module>> = Vec::new();
    let mut covered: BTreeSet<Module> = BTreeSet::new();
    for start in nodes {
        if covered.contains(start) {
            continue;
        }
        // Breadth-first from `start` back to `start`: the shortest cycle through it.
        let mut parent: BTreeMap<&Module, &Module> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closed = None;
        while let Some(at) = queue.pop_front() {
            for next in edges.get(at).into_iter().flatten() {
                if next == start {
                    closed = Some(at);
                    break;
                }
                if !parent.contains_key(next) {
                    parent.insert(next, at);
                    queue.push_back(next);
                }
            }
            if closed.is_some() {
                break;
            }
        }
        if let Some(mut at) = closed {
            let mut cycle = vec![at.clone()];
            while at != start {
                at = parent[at];
                cycle.push(at.clone());
            }
            cycle.reverse();
            cycle.push(start.clone());
            covered.extend(cycle.iter().cloned());
            found.push(cycle);
        }
    }
    found
}

#[test]
fn no_import_circle_and_no_import_back_up_into_a_folder() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources(&src);
    assert!(files.len() > 50, "src/ was not read: {} files", files.len());
    let problems = check(&files);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The check itself, on a made-up crate: it sees a circle through a re-export and an
/// import back up, and leaves alone a parent using its child and a re-exported name.
#[test]
fn the_check_sees_circles_and_imports_back_up() {
    let file = |path: &str, text: &str| {
        let module: Module = if path.is_empty() {
            Vec::new()
        } else {
            path.split("::").map(str::to_owned).collect()
        };
        (module, text.to_owned())
    };
    let files: BTreeMap<Module, String> = [
        file("", "pub mod a;\npub mod b;\n"),
        file(
            "a",
            "pub mod x;\npub mod y;\npub use self::y::Y;\npub struct Top;\nuse self::x::X;\n",
        ),
        file("a::x", "use super::Y;\npub struct X;\n"),
        file(
            "a::y",
            "use crate::b::B;\nuse super::Top;\npub struct Y;\n#[cfg(test)]\nmod tests {\n    use super::super::*;\n}\n",
        ),
        file("b", "use crate::a::{\n    Y,\n    x::X as Renamed,\n};\npub struct B;\n"),
    ]
    .into_iter()
    .collect();
    let problems = check(&files);
    let back_up = problems
        .iter()
        .filter(|p| p.contains("back up"))
        .filter(|p| !p.starts_with("KNOWN"))
        .collect::<Vec<_>>();
    assert_eq!(back_up.len(), 1, "{problems:#?}");
    assert!(
        back_up[0].starts_with("a::y imports `super::Top`"),
        "{problems:#?}"
    );
    let circles = problems
        .iter()
        .filter(|p| p.starts_with("import circle"))
        .collect::<Vec<_>>();
    // b → a::y (through a's re-export) → b, and b → a::x → (a::y, re-exported by a) → b.
    assert!(!circles.is_empty(), "{problems:#?}");
    assert!(
        circles
            .iter()
            .any(|c| c.contains("a::y") && c.contains('b')),
        "{problems:#?}"
    );
}
