//! No import circles between modules, in any crate of the workspace.
//!
//! Each crate's modules form a graph: an edge from module A to module B when A names B's items through a path
//! (`crate::`, `super::`, `self::` or a child module's name; in `use` or inline). A circle means two modules that can only be understood together; the
//! rooms of issue 7 point one way. Test modules (`tests.rs`, `#[cfg(test)]` blocks) are left out: they exist to
//! reach into their parent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A module path inside one crate, e.g. `["machine", "drift"]`; the crate root is `[]`.
type ModPath = Vec<String>;

/// The module a source file defines (`src/a/b.rs` and `src/a/b/mod.rs` → `a::b`; `lib.rs`/`main.rs` → root).
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code a module runs with: comments and the contents of string literals removed (a `use` or a path inside
/// them is text, not a reference), and every item marked `#[cfg(test)]` left out.
fn code_of(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '/' && at(&chars, i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if chars[i] == '/' && at(&chars, i + 1) == '*' {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && at(&chars, i + 1) == '/') {
                i += 1;
            }
            i += 2;
        } else if chars[i] == 'r'
            && (at(&chars, i + 1) == '"'
                || (at(&chars, i + 1) == '#' && (at(&chars, i + 2) == '"' || at(&chars, i + 2) == '#')))
        {
            // r"…", r#"…"#: ends at a quote followed by as many #.
            let mut hashes = 0;
            i += 1;
            while i < chars.len() && chars[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            while i < chars.len() && !(chars[i] == '"' && (0..hashes).all(|h| chars.get(i + 1 + h) == Some(&'#'))) {
                i += 1;
            }
            i += 1 + hashes;
            out.push_str("\"\"");
        } else if chars[i] == '\'' && (at(&chars, i + 1) == '\\' || at(&chars, i + 2) == '\'') {
            // A char literal ('"', '\''); a lifetime ('a) has no closing quote and stays.
            i += if at(&chars, i + 1) == '\\' { 2 } else { 1 };
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    without_test_items(&out)
}

fn at(chars: &[char], i: usize) -> char {
    chars.get(i).copied().unwrap_or('\0')
}

/// Removes each item that follows `#[cfg(test)]`: up to its `;`, or through its balanced `{ … }`.
fn without_test_items(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let item = &rest[at + MARK.len()..];
        let (mut depth, mut end) = (0usize, item.len());
        for (k, c) in item.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth > 0 => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path of two or more segments in the code (`crate::a::B`, `super::a`, `child::f`), with `use` groups
/// (`use super::{a, b::c}`) expanded.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut out = vec![];
    let mut rest = String::new();
    for stmt in code.split_inclusive(';') {
        // A `use` at a word boundary: expand its tree, and keep it out of the inline scan below.
        let at = stmt
            .match_indices("use ")
            .map(|(i, _)| i)
            .find(|&i| stmt[..i].chars().next_back().is_none_or(|c| !is_ident(c) && c != ':'));
        match at {
            Some(i) => {
                let tree: String = stmt[i + 4..].chars().filter(|c| !c.is_whitespace() && *c != ';').collect();
                expand(tree.trim_start_matches("::"), &[], &mut out);
                rest.push_str(&stmt[..i]);
            }
            None => rest.push_str(stmt),
        }
    }
    // Inline paths.
    let chars: Vec<char> = rest.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':');
        if !(boundary && is_ident(chars[i])) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && (is_ident(chars[j]) || chars[j] == ':') {
            j += 1;
        }
        let path: Vec<String> =
            chars[i..j].iter().collect::<String>().split("::").filter(|s| !s.is_empty()).map(str::to_string).collect();
        if path.len() > 1 {
            out.push(path);
        }
        i = j;
    }
    out
}

/// Expands one `use` tree into its leaf paths.
fn expand(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    match tree.find('{') {
        None => {
            let mut p = prefix.to_vec();
            p.extend(tree.split("::").filter(|s| !s.is_empty()).map(|s| s.split(" as ").next().unwrap_or(s).into()));
            out.push(p);
        }
        Some(open) => {
            let head = &tree[..open];
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut p = prefix.to_vec();
            p.extend(head.split("::").filter(|s| !s.is_empty()).map(str::to_string));
            // Split the group on top-level commas.
            let (mut depth, mut start) = (0, 0);
            let chars: Vec<char> = inner.chars().collect();
            for (k, c) in chars.iter().enumerate() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&chars[start..k].iter().collect::<String>(), &p, out);
                        start = k + 1;
                    }
                    _ => {}
                }
            }
            if start < chars.len() {
                expand(&chars[start..].iter().collect::<String>(), &p, out);
            }
        }
    }
}

/// The module a path refers to, seen from module `from`: the longest prefix naming a known module.
fn target(from: &ModPath, path: &[String], modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    let mut base: ModPath;
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base = vec![];
            rest = &rest[1..];
        }
        Some("super") => {
            base = from.clone();
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        Some("self") => {
            base = from.clone();
            rest = &rest[1..];
        }
        // A relative path counts only when it starts with a child module (not a crate, type or variable).
        Some(first) => {
            let mut child = from.clone();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            base = from.clone();
        }
        None => return None,
    }
    for seg in rest {
        let mut next = base.clone();
        next.push(seg.clone());
        if modules.contains(&next) {
            base = next;
        } else {
            break;
        }
    }
    Some(base)
}

/// The circles of a crate's module graph (each as the list of modules on it).
fn circles(src: &Path) -> Vec<Vec<String>> {
    let mut files = vec![];
    rust_files(src, &mut files);
    let files: Vec<PathBuf> = files.into_iter().filter(|f| f.file_name().is_some_and(|n| n != "tests.rs")).collect();
    let modules: BTreeSet<ModPath> = files.iter().map(|f| module_of(src, f)).collect();
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for f in &files {
        let from = module_of(src, f);
        let code = code_of(&std::fs::read_to_string(f).expect("readable source"));
        for p in paths_in(&code) {
            if let Some(to) = target(&from, &p, &modules).filter(|to| *to != from) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for back edges.
    let mut found = vec![];
    let mut state: BTreeMap<ModPath, u8> = BTreeMap::new(); // 1: on the stack, 2: done
    fn visit(
        m: &ModPath,
        edges: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        state: &mut BTreeMap<ModPath, u8>,
        stack: &mut Vec<ModPath>,
        found: &mut Vec<Vec<String>>,
    ) {
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for n in edges.get(m).into_iter().flatten() {
            match state.get(n) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == n).unwrap_or(0);
                    let name = |p: &ModPath| if p.is_empty() { "crate".to_string() } else { p.join("::") };
                    found.push(stack[at..].iter().chain(std::iter::once(n)).map(name).collect());
                }
                Some(_) => {}
                None => visit(n, edges, state, stack, found),
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
    }
    for m in &modules {
        if !state.contains_key(m) {
            visit(m, &edges, &mut state, &mut vec![], &mut found);
        }
    }
    found
}

fn crate_sources() -> Vec<PathBuf> {
    let mut dirs = vec![Path::new(REPO).join("src")];
    let mut members: Vec<PathBuf> = std::fs::read_dir(Path::new(REPO).join("crates"))
        .expect("crates/")
        .flatten()
        .map(|e| e.path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    members.sort();
    dirs.extend(members);
    dirs
}

#[test]
fn no_crate_has_an_import_circle() {
    let mut report = vec![];
    for src in crate_sources() {
        for circle in circles(&src) {
            report.push(format!("{}: {}", src.display(), circle.join(" -> ")));
        }
    }
    assert!(report.is_empty(), "import circles between modules:\n{}", report.join("\n"));
}

#[test]
fn the_checker_sees_a_circle() {
    // The check itself can fail: two modules that name each other form a circle.
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use super::b::{B, other::{X, Y}};\nuse super::{c, d};\npub struct A;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub struct B(crate::a::A);\n").unwrap();
    let found = circles(src);
    assert_eq!(found, vec![vec!["a".to_string(), "b".into(), "a".into()]]);
    // A parent naming its child's items while the child names the parent's is one too.
    std::fs::write(src.join("b.rs"), "pub struct B;\n").unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\npub use a::A;\npub struct Root;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use super::{b, Root};\npub struct A(b::B);\n").unwrap();
    assert_eq!(circles(src), vec![vec!["crate".to_string(), "a".into(), "crate".into()]]);
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\npub use a::A;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use super::{b};\npub struct A(b::B, Vec::<u8>, std::fmt::Error);\n").unwrap();
    assert!(circles(src).is_empty(), "{:?}", circles(src));
    // Text is not a reference: a `use` inside a string literal hides nothing, and means nothing.
    let b =
        "pub const S: &str = \"use crate::a::A; \\\" r\";\nconst Q: char = '\"';\npub struct B<'x>(&'x crate::a::A);\n";
    std::fs::write(src.join("b.rs"), b).unwrap();
    std::fs::write(src.join("a.rs"), "use super::b::B;\npub struct A;\n").unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    assert_eq!(circles(src), vec![vec!["a".to_string(), "b".into(), "a".into()]], "the path after the string counts");
    // A test item in the middle of a file hides only itself.
    std::fs::write(src.join("b.rs"), "#[cfg(test)]\nmod t { use crate::a::A; }\npub struct B(crate::a::A);\n").unwrap();
    assert_eq!(circles(src).len(), 1);
    // ... and a test module reaching into its parent is not one.
    std::fs::write(src.join("b.rs"), "pub struct B;\n#[cfg(test)]\nmod tests { use crate::a::A; }\n").unwrap();
    assert!(circles(src).is_empty());
}
