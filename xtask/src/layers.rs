//! `cargo xtask layers`: the code map's invariants that a compiler does not
//! check. No import circle between the top-level modules of a crate (a
//! module's files are `src/<m>.rs` and `src/<m>/**`, tests left out), and
//! the server crate depends on `core` and `service` only (not store, events
//! or alerts).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, bail};

/// Top-level modules a text names as `crate::<module>`.
fn named_modules(text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if known.contains(&name) {
            found.insert(name);
        }
    }
    found
}

fn read_tree(dir: &Path, into: &mut String) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            read_tree(&path, into)?;
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
            into.push_str(&std::fs::read_to_string(&path)?);
        }
    }
    Ok(())
}

/// The module graph of one crate's `src`.
fn graph(src: &Path) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut texts = BTreeMap::new();
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else { continue };
        if path.extension().is_none_or(|e| e != "rs") || ["lib", "main", "tests"].contains(&name.as_str()) {
            continue;
        }
        let mut text = std::fs::read_to_string(&path)?;
        read_tree(&src.join(&name), &mut text)?;
        texts.insert(name, text);
    }
    let known: BTreeSet<String> = texts.keys().cloned().collect();
    Ok(texts
        .into_iter()
        .map(|(name, text)| {
            let mut deps = named_modules(&text, &known);
            deps.remove(&name);
            (name, deps)
        })
        .collect())
}

/// A circle through `start`, if any, as the path that closes it.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in graph.get(&node).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![start.to_owned()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

pub fn check(root: &Path) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(root.join("crates"))? {
        let src = entry?.path().join("src");
        let g = graph(&src)?;
        let mut reported = BTreeSet::new();
        for module in g.keys() {
            if let Some(path) = circle(&g, module) {
                let members: BTreeSet<String> = path.iter().cloned().collect();
                if reported.insert(members) {
                    problems.push(format!("{}: import circle {}", src.display(), path.join(" → ")));
                }
            }
        }
    }
    let server = std::fs::read_to_string(root.join("crates/server/Cargo.toml"))?;
    for forbidden in ["keyward-store", "keyward-events", "keyward-alerts"] {
        if server.contains(forbidden) {
            problems
                .push(format!("crates/server/Cargo.toml lists {forbidden}: the server depends on the service only"));
        }
    }
    if !problems.is_empty() {
        bail!("layering broken:\n  {}", problems.join("\n  "));
    }
    eprintln!("layers: no import circle in any crate; the server depends on core and service only");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_circle_is_found_and_a_chain_is_not() {
        let edges = |pairs: &[(&str, &str)]| {
            let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in pairs {
                g.entry(a.to_string()).or_default().insert(b.to_string());
                g.entry(b.to_string()).or_default();
            }
            g
        };
        let chain = edges(&[("verify", "decision"), ("views", "decision"), ("verify", "views")]);
        assert!(chain.keys().all(|m| circle(&chain, m).is_none()));
        let looped = edges(&[("lifecycle", "views"), ("views", "verify"), ("verify", "lifecycle")]);
        assert_eq!(circle(&looped, "views").unwrap(), ["views", "verify", "lifecycle", "views"]);
        let known: BTreeSet<String> = ["views".to_string(), "index".to_string()].into();
        let named = named_modules("use crate::views::x; crate::index::CachedKey; crate::Service", &known);
        assert_eq!(named.into_iter().collect::<Vec<_>>(), ["index", "views"]);
    }
}
