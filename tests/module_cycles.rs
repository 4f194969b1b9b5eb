//! Data flows one way (DESIGN.md §2): no module of `src/` may depend, directly or through
//! others, on a module that depends on it. This reads every `crate::`, `super::` and `self::`
//! path in `src/` (comments and `#[cfg(test)] mod tests` blocks and `*tests.rs` files left out),
//! maps each to the module (file) it names, and fails on any cycle, both between files and
//! between top-level modules (`crate::X`). A module and its own parent or child (a `mod.rs`
//! facade and its parts) are not counted as an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`inbound::session`; `""` for the crate root) → file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            out.insert(parts.join("::"), p);
        }
    }
    out
}

/// The source without comments and without a trailing `#[cfg(test)] mod tests { … }`.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path starting with `crate`, `super` or `self` in `code`, with `{a, b}` groups expanded
/// one level (enough to name modules).
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let b = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        if !code.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &code[i..];
        let starts = ["crate::", "super::", "self::"]
            .iter()
            .any(|k| rest.starts_with(k));
        let boundary = i == 0 || !is_ident(b[i - 1] as char) && b[i - 1] != b':';
        if !(starts && boundary) {
            i += 1;
            continue;
        }
        let mut segs = Vec::new();
        let mut j = i;
        loop {
            let s = j;
            while j < code.len() && is_ident(b[j] as char) {
                j += 1;
            }
            segs.push(code[s..j].to_string());
            if code[j..].starts_with("::") {
                j += 2;
                if code[j..].starts_with('{') {
                    let end = code[j..].find('}').map_or(code.len(), |e| j + e);
                    for item in code[j + 1..end].split(',') {
                        let head: String =
                            item.trim().chars().take_while(|&c| is_ident(c)).collect();
                        if !head.is_empty() && head != "self" {
                            let mut p = segs.clone();
                            p.push(head);
                            out.push(p);
                        }
                    }
                    j = end;
                    break;
                }
                continue;
            }
            break;
        }
        out.push(segs);
        i = j.max(i + 1);
    }
    out
}

/// The module a path names: the longest known module prefix of its absolute form.
fn resolve(from: &str, path: &[String], known: &BTreeMap<String, PathBuf>) -> Option<String> {
    let mut base: Vec<&str> = if from.is_empty() {
        Vec::new()
    } else {
        from.split("::").collect()
    };
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    let full: Vec<&str> = base
        .into_iter()
        .chain(rest.iter().map(String::as_str))
        .collect();
    (0..=full.len())
        .rev()
        .map(|n| full[..n].join("::"))
        .find(|m| known.contains_key(m))
}

fn related(a: &str, b: &str) -> bool {
    a == b
        || a.is_empty()
        || b.is_empty()
        || a.starts_with(&format!("{b}::"))
        || b.starts_with(&format!("{a}::"))
}

/// Strongly connected components with more than one node (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'g> {
        g: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(t: &mut T<'g>, v: &'g str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn report(graph: &BTreeMap<String, BTreeSet<String>>, comps: &[Vec<String>]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push_str(&format!("cycle among {c:?}:\n"));
        for a in c {
            for b in graph.get(a).into_iter().flatten().filter(|b| c.contains(b)) {
                s.push_str(&format!("    {a} -> {b}\n"));
            }
        }
    }
    s
}

#[test]
fn no_module_depends_on_itself() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    assert!(known.len() > 20, "read {} modules", known.len());
    let mut files: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, file) in &known {
        if file.to_string_lossy().ends_with("tests.rs") {
            continue;
        }
        let text = code(&std::fs::read_to_string(file).unwrap());
        for p in paths(&text) {
            let Some(t) = resolve(m, &p, &known) else {
                continue;
            };
            if related(m, &t) {
                continue;
            }
            files.entry(m.clone()).or_default().insert(t.clone());
            let (ta, tb) = (
                m.split("::").next().unwrap_or(""),
                t.split("::").next().unwrap_or(""),
            );
            if ta != tb {
                top.entry(ta.to_string())
                    .or_default()
                    .insert(tb.to_string());
            }
        }
    }
    // The check can see: these edges exist.
    assert!(
        files["inbound::session::data"].contains("queue"),
        "{files:#?}"
    );
    assert!(top["outbound"].contains("queue"), "{top:#?}");
    let by_file = cycles(&files);
    let by_top = cycles(&top);
    assert!(
        by_file.is_empty() && by_top.is_empty(),
        "module cycles (data must flow one way):\n{}{}",
        report(&files, &by_file),
        report(&top, &by_top)
    );
}

#[test]
fn the_check_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("c".into()).or_default().insert("d".into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    let known: BTreeMap<String, PathBuf> =
        ["", "queue", "queue::model", "inbound", "inbound::session"]
            .iter()
            .map(|m| (m.to_string(), PathBuf::new()))
            .collect();
    let ps =
        paths("use crate::queue::{model::Leg, Queue};\nlet x = super::super::queue::model::X;");
    let got: BTreeSet<Option<String>> = ps
        .iter()
        .map(|p| resolve("inbound::session", p, &known))
        .collect();
    assert!(got.contains(&Some("queue::model".to_string())), "{ps:?}");
    assert!(got.contains(&Some("queue".to_string())), "{ps:?}");
}
