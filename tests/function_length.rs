//! No function in `src/` is longer than 100 lines (the project rule), counted from the line of
//! its `fn` keyword to the line of its closing brace. Test code is left out: `#[cfg(test)]`
//! items (usually `mod tests { … }`) and files named `tests.rs` or `*_tests.rs`. Reads the
//! sources with std only: comments, string and char literals are blanked out before braces are
//! matched, which is all the parsing this codebase needs. Fails listing every offender.

use std::path::{Path, PathBuf};

const LIMIT: usize = 100;

/// A function found in a source text: name, line of `fn` (1-based), length in lines.
#[derive(Debug, PartialEq)]
struct Function {
    name: String,
    line: usize,
    lines: usize,
}

/// `text` with comments and the contents of string, byte-string, raw-string and char literals
/// replaced by spaces (newlines kept, so offsets and line numbers stay valid).
fn blank(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let wipe = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |n| i + n);
                wipe(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (mut depth, mut j) = (1, i + 2);
                while j < b.len() && depth > 0 {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                wipe(&mut out, i, j);
                i = j;
            }
            b'r' | b'b' if !ident_before && raw_string_start(&b[i..]).is_some() => {
                let (hashes, open) = raw_string_start(&b[i..]).unwrap_or_default();
                let body = i + open;
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat_n(b'#', hashes));
                let end = b[body..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |n| body + n + close.len());
                wipe(&mut out, body, end - close.len());
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                wipe(&mut out, i + 1, j);
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}', '{'), or a lifetime / label ('a).
                let end = if b.get(i + 1) == Some(&b'\\') {
                    // The escaped character itself may be a quote: look from the one after it.
                    b.get(i + 3..)
                        .and_then(|rest| rest.iter().position(|&c| c == b'\''))
                        .map(|n| i + 3 + n)
                } else {
                    let len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + 1 + len)
                };
                match end {
                    Some(e) => {
                        wipe(&mut out, i + 1, e);
                        i = e + 1;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// At a raw (byte) string start (`r"`, `r#"`, `br##"` …): the number of `#` and the offset of
/// the body.
fn raw_string_start(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = usize::from(b.first() == Some(&b'b'));
    if b.get(i) != Some(&b'r') {
        return None;
    }
    i += 1;
    let hashes = b[i..].iter().take_while(|&&c| c == b'#').count();
    (b.get(i + hashes) == Some(&b'"')).then_some((hashes, i + hashes + 1))
}

/// Offset just past the `}` that closes the `{` at `open` (or the end of the text).
fn matching_brace(code: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    for (k, &c) in code.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// Where the item that starts at `from` ends: `Ok` just past its `{ … }` body, `Err` just past
/// its `;` (no body), whichever comes first outside parentheses and brackets.
fn item_body(code: &[u8], from: usize) -> Result<usize, usize> {
    let mut nest = 0i32;
    for (k, &c) in code.iter().enumerate().skip(from) {
        match c {
            b'(' | b'[' => nest += 1,
            b')' | b']' => nest -= 1,
            b';' if nest == 0 => return Err(k + 1),
            b'{' if nest == 0 => return Ok(matching_brace(code, k)),
            _ => {}
        }
    }
    Err(code.len())
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn line_of(code: &[u8], at: usize) -> usize {
    1 + code[..at].iter().filter(|&&c| c == b'\n').count()
}

/// Every function with a body in `text`, outside `#[cfg(test)]` items (none at all in a file
/// that is `#![cfg(test)]` as a whole).
fn functions(text: &str) -> Vec<Function> {
    let code = blank(text);
    if code.windows(13).any(|w| w == b"#![cfg(test)]") {
        return Vec::new();
    }
    // Byte ranges of `#[cfg(test)]` items.
    let mut excluded = Vec::new();
    let marker = b"#[cfg(test)]";
    let mut at = 0;
    while let Some(n) = code[at..].windows(marker.len()).position(|w| w == marker) {
        let start = at + n;
        let end = match item_body(&code, start + marker.len()) {
            Ok(end) | Err(end) => end,
        };
        excluded.push(start..end);
        at = end;
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 < code.len() {
        let is_fn = &code[i..i + 2] == b"fn"
            && (i == 0 || !is_ident(code[i - 1]))
            && code[i + 2].is_ascii_whitespace();
        if !is_fn || excluded.iter().any(|r| r.contains(&i)) {
            i += 1;
            continue;
        }
        let name_at = i
            + 2
            + code[i + 2..]
                .iter()
                .take_while(|c| c.is_ascii_whitespace())
                .count();
        let name: String = code[name_at..]
            .iter()
            .take_while(|&&c| is_ident(c))
            .map(|&c| c as char)
            .collect();
        if name.is_empty() {
            i += 2;
            continue;
        }
        if let Ok(end) = item_body(&code, name_at) {
            let line = line_of(&code, i);
            out.push(Function {
                name,
                line,
                lines: line_of(&code, end - 1) - line + 1,
            });
        }
        // Nested functions are checked on their own: continue inside this one.
        i = name_at;
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            sources(&p, out);
        } else if name.ends_with(".rs") && name != "tests.rs" && !name.ends_with("_tests.rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_function_in_src_is_over_100_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    assert!(!files.is_empty());
    let mut long = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for func in functions(&text) {
            if func.lines > LIMIT {
                long.push(format!(
                    "{}:{} fn {}: {} lines",
                    f.strip_prefix(root).unwrap_or(f).display(),
                    func.line,
                    func.name,
                    func.lines
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "{} functions longer than {LIMIT} lines (split them):\n{}",
        long.len(),
        long.join("\n")
    );
}

#[test]
fn counter_on_samples() {
    let f = |name: &str, line: usize, lines: usize| Function {
        name: name.into(),
        line,
        lines,
    };
    // One-liner, multi-line, braces in strings, raw strings, chars, comments; a lifetime.
    let text = r####"
fn one() {}
pub(crate) async fn two<'a>(x: &'a str) -> [u8; 2] {
    let s = "}}} \" {";
    let r = r#"}"# ;
    let c = '}';
    let e = '\'';
    // } a comment
    /* } /* nested } */ } */
    [0; 2]
}
trait T {
    fn declared(&self);
    fn defaulted(&self) -> u8 { b'{' }
}
"####;
    assert_eq!(
        functions(text),
        vec![f("one", 2, 1), f("two", 3, 9), f("defaulted", 14, 1)]
    );

    // Nested functions count on their own; fn-pointer types are not functions.
    let text = "fn outer(g: fn(u8) -> u8) {\n    fn inner() {\n    }\n}\n";
    assert_eq!(functions(text), vec![f("outer", 1, 4), f("inner", 2, 2)]);

    let text = "#![cfg(test)]\nfn whole_file_is_test() {}\n";
    assert_eq!(functions(text), vec![]);

    // `#[cfg(test)]` items are left out, whatever they hold.
    let text = "fn kept() {\n}\n#[cfg(test)]\nmod tests {\n    fn gone() {}\n}\n#[cfg(test)]\nfn also_gone() {}\nfn after() {}\n";
    assert_eq!(functions(text), vec![f("kept", 1, 2), f("after", 9, 1)]);

    // A byte raw string with hashes, and a `where` clause before the body.
    let text = "fn w<T>(t: T) -> usize\nwhere\n    T: Copy,\n{\n    br##\"}\"# \"##.len()\n}\n";
    assert_eq!(functions(text), vec![f("w", 1, 6)]);
}
