//! Diagnostics that point into the configuration: `file:line: key.path: message`.
//! Owns key paths and the span index that turns a key path into a line number.

use std::fmt;
use std::ops::Range;
use toml::de::{DeTable, DeValue};

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path like `routing.rule[2].deliver`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }
    pub fn key(&self, k: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_string()));
        Self(v)
    }
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        Self(v)
    }
    /// Append the segments of a serde_path_to_error path.
    pub fn join_serde(&self, p: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        let mut v = self.0.clone();
        for s in p.iter() {
            match s {
                Segment::Seq { index } => v.push(Seg::Index(*index)),
                Segment::Map { key } => v.push(Seg::Key(key.clone())),
                Segment::Enum { variant } => v.push(Seg::Key(variant.clone())),
                Segment::Unknown => {}
            }
        }
        Self(v)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.0 {
            match s {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// Error or warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One message about the configuration, with where it applies.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file as the user named it (the config file, or a list file).
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Maps key paths and byte offsets of one TOML document to line numbers.
pub struct SpanIndex<'a> {
    text: &'a str,
    root: &'a DeTable<'a>,
}

impl<'a> SpanIndex<'a> {
    pub fn new(text: &'a str, root: &'a DeTable<'a>) -> Self {
        Self { text, root }
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The span of the deepest part of `path` present in the document (the key itself when present).
    pub fn span_of(&self, path: &KeyPath) -> Option<Range<usize>> {
        let mut table = self.root;
        let mut value: Option<&DeValue<'a>> = None;
        let mut best: Option<Range<usize>> = None;
        for seg in &path.0 {
            match seg {
                Seg::Key(k) => {
                    let t = match value {
                        None => table,
                        Some(DeValue::Table(t)) => t,
                        Some(_) => break,
                    };
                    let Some((key, val)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k)
                    else {
                        break;
                    };
                    best = Some(key.span());
                    table = t;
                    value = Some(val.get_ref());
                }
                Seg::Index(i) => {
                    let Some(DeValue::Array(a)) = value else {
                        break;
                    };
                    let Some(item) = a.get(*i) else {
                        break;
                    };
                    best = Some(item.span());
                    value = Some(item.get_ref());
                }
            }
        }
        best
    }

    /// Is every segment of `path` present in the document (not filled in by a default)?
    pub fn contains(&self, path: &KeyPath) -> bool {
        let mut table = self.root;
        let mut value: Option<&DeValue<'a>> = None;
        for seg in &path.0 {
            match seg {
                Seg::Key(k) => {
                    let t = match value {
                        None => table,
                        Some(DeValue::Table(t)) => t,
                        Some(_) => return false,
                    };
                    let Some((_, val)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k)
                    else {
                        return false;
                    };
                    table = t;
                    value = Some(val.get_ref());
                }
                Seg::Index(i) => {
                    let Some(DeValue::Array(a)) = value else {
                        return false;
                    };
                    let Some(item) = a.get(*i) else {
                        return false;
                    };
                    value = Some(item.get_ref());
                }
            }
        }
        true
    }

    pub fn line_of_path(&self, path: &KeyPath) -> Option<usize> {
        self.span_of(path).map(|s| self.line_of(s.start))
    }
}
