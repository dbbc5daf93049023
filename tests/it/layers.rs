//! The map in `src/lib.rs` is true: every top-level module is in its layer
//! table, and every `crate::…` path in `src/` points to a strictly lower
//! layer (never sideways, never up). Reads the source as text; a plain
//! lexer skips comments, strings and test code (`#[cfg(test)] mod tests`
//! tails and `tests.rs` files).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's layer: 1 is the top.
type Layers = BTreeMap<String, u32>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    from: String,
    to: String,
    file: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Rows of lib.rs's layer table: ``//! | 3 engines | [`proxy`] | …``.
fn layer_table(lib_rs: &str) -> Layers {
    let mut out = Layers::new();
    for line in lib_rs.lines() {
        let Some(row) = line.strip_prefix("//! |") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(layer), Some(module)) = (cells.first(), cells.get(1)) else {
            continue;
        };
        let Some(n) = layer
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let name = module.trim_matches(|c| c == '[' || c == ']' || c == '`');
        out.insert(name.to_string(), n);
    }
    out
}

/// `pub mod x;` / `mod x;` declared in lib.rs.
fn declared_modules(lib_rs: &str) -> BTreeSet<String> {
    lib_rs
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').trim().to_string())
        })
        .collect()
}

/// Every `.rs` file under `src` except lib.rs and main.rs, with its
/// top-level module.
fn sources(src: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src").to_path_buf();
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or_default()
                .trim_end_matches(".rs")
                .to_string();
            // `tests.rs` holds a module's `#[cfg(test)] mod tests;` (test
            // code may use anything, as an inline tests module may).
            if top == "lib" || top == "main" || path.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            out.push((top, rel.display().to_string(), text));
        }
    }
    out.sort();
    out
}

/// The code of a file without comments, string and char literals, and
/// without its `#[cfg(test)] mod tests` tail.
fn code_only(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'r' if matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // r"…" or r#"…"#
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == b'"'
                        && b[j + 1..].iter().take(hashes).all(|&c| c == b'#')
                        && b.len() >= j + 1 + hashes
                    {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' => {
                // A char literal ('x', '\n', '\'') or a lifetime ('a).
                if b.get(i + 1) == Some(&b'\\') {
                    let mut j = i + 2;
                    while j < b.len() && b[j] != b'\'' {
                        j += 1;
                    }
                    i = j + 1;
                    out.push_str("' '");
                } else if b.get(i + 2) == Some(&b'\'') {
                    i += 3;
                    out.push_str("' '");
                } else {
                    out.push('\'');
                    i += 1;
                }
            }
            _ => {
                // Copy one whole UTF-8 character.
                let ch = text[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(s.len(), |(i, _)| i);
    (end > 0).then(|| &s[..end])
}

/// The top-level modules a file's code names through `crate::`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // e.g. `my_crate::`
        }
        let after = rest.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            // `crate::{a::b, c, d::{e, f}}`: the first name of each item.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        if let Some(id) = ident_at(&group[j..]) {
                            out.insert(id.to_string());
                        }
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else if let Some(id) = ident_at(after) {
            out.insert(id.to_string());
        }
    }
    out
}

/// Every edge that runs against the table: up, sideways, or to or from a
/// module the table does not place.
fn violations(layers: &Layers, files: &[(String, String, String)]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (from, file, text) in files {
        for to in crate_refs(&code_only(text)) {
            if &to == from {
                continue;
            }
            let ok = match (layers.get(from), layers.get(&to)) {
                (Some(a), Some(b)) => b > a,
                // `crate::` followed by something that is no module (a
                // macro path, an item re-exported at the root) is not an
                // edge; an unplaced module is caught by the map test.
                (_, None) => continue,
                (None, Some(_)) => false,
            };
            if !ok {
                out.push(Violation {
                    from: from.clone(),
                    to: to.clone(),
                    file: file.clone(),
                });
            }
        }
    }
    out
}

fn lib_rs() -> String {
    std::fs::read_to_string(src_dir().join("lib.rs")).expect("src/lib.rs is readable")
}

#[test]
fn every_module_is_placed_in_the_layer_table() {
    let lib = lib_rs();
    let table: BTreeSet<String> = layer_table(&lib).into_keys().collect();
    let declared = declared_modules(&lib);
    assert!(!table.is_empty(), "lib.rs has no layer table");
    assert_eq!(
        declared, table,
        "the modules lib.rs declares and the modules its layer table places differ"
    );
}

#[test]
fn every_crate_path_points_to_a_lower_layer() {
    let layers = layer_table(&lib_rs());
    let files = sources(&src_dir());
    assert!(files.len() > 20, "read only {} files", files.len());
    let bad = violations(&layers, &files);
    assert!(
        bad.is_empty(),
        "imports against the layer table in src/lib.rs (a module may use only lower layers):\n{}",
        bad.iter()
            .map(|v| format!(
                "  {} (layer {}) -> {} (layer {}) in src/{}",
                v.from, layers[&v.from], v.to, layers[&v.to], v.file
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn an_upward_or_sideways_use_is_caught() {
    let layers = layer_table(&lib_rs());
    let mut files = sources(&src_dir());
    // The real tree, with one upward and one sideways import slipped in.
    let pki = files
        .iter_mut()
        .find(|(m, f, _)| m == "pki" && f.ends_with("mod.rs"))
        .expect("src/pki/mod.rs");
    pki.2.insert_str(0, "use crate::{tls::Outcome, cli};\n");
    let load = files
        .iter_mut()
        .find(|(m, f, _)| m == "load" && f.ends_with("mod.rs"))
        .expect("src/load/mod.rs");
    load.2
        .insert_str(0, "fn f() { let _ = crate::proxy::ProxyArgs::default; }\n");
    let bad = violations(&layers, &files);
    let pairs: BTreeSet<(&str, &str)> = bad
        .iter()
        .map(|v| (v.from.as_str(), v.to.as_str()))
        .collect();
    assert!(pairs.contains(&("pki", "tls")), "{bad:?}");
    assert!(pairs.contains(&("pki", "cli")), "{bad:?}");
    assert!(pairs.contains(&("load", "proxy")), "{bad:?}");
}

#[test]
fn the_lexer_skips_comments_strings_and_tests() {
    let code = code_only(
        "use crate::a::b; // crate::c\n/* crate::d */ let s = \"crate::e\"; let r = r#\"crate::f\"#;\nlet c = '\"'; use crate::{g::h, i};\n#[cfg(test)]\nmod tests { use crate::j; }\n",
    );
    let refs: Vec<String> = crate_refs(&code).into_iter().collect();
    assert_eq!(refs, ["a", "g", "i"]);
}
