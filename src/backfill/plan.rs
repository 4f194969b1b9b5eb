//! Folder planning: which source folder goes to which destination folder (SPECIAL-USE first,
//! then `folders.map`, then the same name with the destination's hierarchy delimiter), filtered
//! by `folders.include` / `folders.exclude`. Pure: LIST results in, plan out; never does IO.
//!
//! Names are compared in their *logical* form: decoded from modified UTF-7 and with the side's
//! delimiter replaced by `/`, so `Archive.2019` (Maildir++, `.`) and `Archive/2019` (fs, `/`)
//! are the same logical folder `Archive/2019`, which the patterns and the map use.

use super::utf7;
use crate::config::Folders;
use globset::{Glob, GlobMatcher};

/// The SPECIAL-USE attributes that map a folder to its counterpart (RFC 6154).
pub const SPECIAL_USE: [&str; 6] = [
    "\\Sent",
    "\\Drafts",
    "\\Trash",
    "\\Junk",
    "\\Archive",
    "\\All",
];

/// One folder from LIST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderInfo {
    /// The name exactly as on the wire (modified UTF-7).
    pub wire: String,
    /// Attributes as sent (`\Sent`, `\Noselect`, ...).
    pub attrs: Vec<String>,
    /// In LSUB.
    pub subscribed: bool,
}

impl FolderInfo {
    pub fn has_attr(&self, a: &str) -> bool {
        self.attrs.iter().any(|x| x.eq_ignore_ascii_case(a))
    }
    pub fn selectable(&self) -> bool {
        !self.has_attr("\\Noselect") && !self.has_attr("\\NonExistent")
    }
    pub fn special_use(&self) -> Option<&'static str> {
        SPECIAL_USE.iter().copied().find(|s| self.has_attr(s))
    }
}

/// One side's LIST.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub delimiter: Option<char>,
    pub folders: Vec<FolderInfo>,
}

/// A planned folder pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderPair {
    /// Logical source name (UTF-8, `/`-separated): the key of reports and state.
    pub name: String,
    pub src_wire: String,
    pub dst_wire: String,
    /// Logical destination name.
    pub dst_name: String,
    /// The destination folder does not exist yet.
    pub create: bool,
    /// Subscribe the destination folder (the source one is subscribed).
    pub subscribe: bool,
}

/// Logical (UTF-8, `/`-separated) name of a wire name.
pub fn logical(wire: &str, delimiter: Option<char>) -> String {
    let decoded = utf7::decode(wire);
    if is_inbox(&decoded) {
        return "INBOX".to_string();
    }
    match delimiter {
        Some(d) if d != '/' => decoded.replace(d, "/"),
        _ => decoded,
    }
}

/// Wire name for a logical name on a side with `delimiter`.
pub fn wire(logical: &str, delimiter: Option<char>) -> String {
    if is_inbox(logical) {
        return "INBOX".to_string();
    }
    let native = match delimiter {
        Some(d) if d != '/' => logical.replace('/', &d.to_string()),
        _ => logical.to_string(),
    };
    utf7::encode(&native)
}

fn is_inbox(name: &str) -> bool {
    name.eq_ignore_ascii_case("INBOX")
}

/// Compiled include/exclude patterns.
pub struct Filter {
    include: Vec<GlobMatcher>,
    exclude: Vec<GlobMatcher>,
}

impl Filter {
    /// Invalid patterns are skipped (config validation reports them).
    pub fn new(folders: &Folders) -> Filter {
        let compile = |v: &[String]| {
            v.iter()
                .filter_map(|g| Glob::new(g).ok().map(|g| g.compile_matcher()))
                .collect()
        };
        Filter {
            include: compile(&folders.include),
            exclude: compile(&folders.exclude),
        }
    }
    pub fn admits(&self, logical: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|m| m.is_match(logical)))
            && !self.exclude.iter().any(|m| m.is_match(logical))
    }
}

/// Plan the folder pairs of one mailbox.
pub fn plan(src: &Listing, dst: &Listing, folders: &Folders) -> Vec<FolderPair> {
    let filter = Filter::new(folders);
    let mut out: Vec<FolderPair> = Vec::new();
    for f in src.folders.iter().filter(|f| f.selectable()) {
        let name = logical(&f.wire, src.delimiter);
        if !filter.admits(&name) {
            continue;
        }
        // 1. SPECIAL-USE
        let by_use = f.special_use().and_then(|u| {
            dst.folders
                .iter()
                .find(|d| d.selectable() && d.has_attr(u))
                .map(|d| (logical(&d.wire, dst.delimiter), d.wire.clone()))
        });
        let (dst_name, dst_wire) = match by_use {
            Some(x) => x,
            None => {
                // 2. explicit map (keys and values logical), 3. same name
                let target = folders
                    .map
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| name.clone());
                // Prefer an existing destination folder with this logical name (any case for INBOX).
                match dst
                    .folders
                    .iter()
                    .find(|d| logical(&d.wire, dst.delimiter) == target)
                {
                    Some(d) => (target, d.wire.clone()),
                    None => {
                        let w = wire(&target, dst.delimiter);
                        (target, w)
                    }
                }
            }
        };
        let exists = dst
            .folders
            .iter()
            .any(|d| d.wire == dst_wire && d.selectable());
        out.push(FolderPair {
            name,
            src_wire: f.wire.clone(),
            create: !exists && dst_wire != "INBOX",
            subscribe: f.subscribed,
            dst_wire,
            dst_name,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn fi(wire: &str, attrs: &[&str], sub: bool) -> FolderInfo {
        FolderInfo {
            wire: wire.into(),
            attrs: attrs.iter().map(|s| s.to_string()).collect(),
            subscribed: sub,
        }
    }

    #[test]
    fn maps_special_use_map_and_delimiter() {
        let src = Listing {
            delimiter: Some('.'),
            folders: vec![
                fi("INBOX", &[], true),
                fi("Sent Items", &["\\Sent"], true),
                fi("Archive.2019", &[], true),
                fi("Entw&APw-rfe", &[], false),
                fi("Junk", &["\\Junk"], true),
                fi("Old", &[], true),
                fi("Parent", &["\\Noselect"], false),
            ],
        };
        let dst = Listing {
            delimiter: Some('/'),
            folders: vec![
                fi("INBOX", &[], true),
                fi("Sent", &["\\Sent"], true),
                fi("Junk E-mail", &["\\Junk"], true),
            ],
        };
        let mut map = BTreeMap::new();
        map.insert("Old".to_string(), "Legacy/Old".to_string());
        let folders = Folders {
            include: vec![],
            exclude: vec!["Junk".into()],
            map,
        };
        let p = plan(&src, &dst, &folders);
        let got: Vec<(&str, &str, bool, bool)> = p
            .iter()
            .map(|f| (f.name.as_str(), f.dst_wire.as_str(), f.create, f.subscribe))
            .collect();
        assert_eq!(
            got,
            vec![
                ("INBOX", "INBOX", false, true),
                ("Sent Items", "Sent", false, true),
                ("Archive/2019", "Archive/2019", true, true),
                ("Entwürfe", "Entw&APw-rfe", true, false),
                ("Old", "Legacy/Old", true, true),
            ]
        );
    }

    #[test]
    fn include_patterns() {
        let src = Listing {
            delimiter: Some('/'),
            folders: vec![
                fi("INBOX", &[], true),
                fi("A/b", &[], true),
                fi("C", &[], true),
            ],
        };
        let folders = Folders {
            include: vec!["A/*".into(), "INBOX".into()],
            ..Default::default()
        };
        let p = plan(&src, &Listing::default(), &folders);
        let names: Vec<_> = p.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, vec!["INBOX", "A/b"]);
    }

    #[test]
    fn logical_and_wire_roundtrip() {
        assert_eq!(logical("a.b&AOk-", Some('.')), "a/bé");
        assert_eq!(wire("a/bé", Some('.')), "a.b&AOk-");
        assert_eq!(logical("inbox", Some('.')), "INBOX");
    }
}
