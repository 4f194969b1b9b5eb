//! Folder planning: which source folder goes to which destination folder (SPECIAL-USE first,
//! then `folders.map`, then the same name in the destination's namespace), filtered by
//! `folders.include` / `folders.exclude`. Pure: LIST and NAMESPACE results in, plan out; never
//! does IO.
//!
//! Names are compared in their *logical* form: without the side's personal namespace prefix
//! (RFC 2342: `INBOX.` on Cyrus and Courier), decoded from modified UTF-7 and with the side's
//! delimiter replaced by `/`. So `INBOX.Archive.2019` (Cyrus), `Archive.2019` (Maildir++, `.`)
//! and `Archive/2019` (fs, `/`) are the same logical folder `Archive/2019`, which the patterns
//! and the map use. Folders in other users' or shared namespaces are never planned.

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

/// One side's LIST, with its personal namespace.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub delimiter: Option<char>,
    pub folders: Vec<FolderInfo>,
    /// Personal namespace prefix as on the wire (`INBOX.`), empty without NAMESPACE.
    pub prefix: String,
    /// Prefixes of other users' and shared namespaces (never copied).
    pub foreign: Vec<String>,
}

impl Listing {
    /// Logical name of a wire name, `None` when it is outside the personal namespace.
    pub fn logical(&self, wire_name: &str) -> Option<String> {
        if is_inbox(wire_name) {
            return Some("INBOX".to_string());
        }
        if self
            .foreign
            .iter()
            .any(|p| wire_name.starts_with(p.as_str()))
        {
            return None;
        }
        let inner = if self.prefix.is_empty() {
            wire_name
        } else {
            wire_name.strip_prefix(self.prefix.as_str())?
        };
        if inner.is_empty() {
            return None;
        }
        Some(logical(inner, self.delimiter))
    }

    /// Wire name of a logical name, and whether a name component had to change because it
    /// contains this side's hierarchy delimiter (`a.b` on a `.` server becomes `a_b`, not a
    /// folder `b` inside `a`).
    pub fn wire(&self, logical_name: &str) -> (String, bool) {
        if is_inbox(logical_name) {
            return ("INBOX".to_string(), false);
        }
        let mut changed = false;
        let safe = match self.delimiter {
            Some(d) if d != '/' && logical_name.contains(d) => {
                changed = true;
                logical_name.replace(d, "_")
            }
            _ => logical_name.to_string(),
        };
        (
            format!("{}{}", self.prefix, wire(&safe, self.delimiter)),
            changed,
        )
    }
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
    /// Why the destination name differs from the source's (reported), if it had to.
    pub note: Option<String>,
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

/// English names of the SPECIAL-USE folders that servers without SPECIAL-USE (Courier,
/// Maildirs, old Exchange) create: used only when no source folder carries the attribute.
const WELL_KNOWN: [(&str, &str); 14] = [
    ("Sent", "\\Sent"),
    ("Sent Items", "\\Sent"),
    ("Sent Messages", "\\Sent"),
    ("Sent Mail", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Deleted Items", "\\Trash"),
    ("Deleted Messages", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Junk E-mail", "\\Junk"),
    ("Junk Email", "\\Junk"),
    ("Spam", "\\Junk"),
    ("Archive", "\\Archive"),
    ("Archives", "\\Archive"),
];

/// The SPECIAL-USE a source folder stands for: its attribute, else its well-known name when
/// no source folder carries that attribute.
fn special_use_of(f: &FolderInfo, name: &str, src: &Listing) -> Option<&'static str> {
    f.special_use().or_else(|| {
        let (_, u) = WELL_KNOWN
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        (!src.folders.iter().any(|g| g.has_attr(u))).then_some(*u)
    })
}

/// Plan the folder pairs of one mailbox.
pub fn plan(src: &Listing, dst: &Listing, folders: &Folders) -> Vec<FolderPair> {
    let filter = Filter::new(folders);
    let mut out: Vec<FolderPair> = Vec::new();
    for f in src.folders.iter().filter(|f| f.selectable()) {
        let Some(name) = src.logical(&f.wire) else {
            continue;
        };
        if !filter.admits(&name) {
            continue;
        }
        let mapped = folders.map.get(&name);
        // 1. SPECIAL-USE (unless the map says otherwise)
        let by_use = special_use_of(f, &name, src)
            .filter(|_| mapped.is_none())
            .and_then(|u| {
                let d = dst
                    .folders
                    .iter()
                    .find(|d| d.selectable() && d.has_attr(u))?;
                Some((dst.logical(&d.wire)?, d.wire.clone()))
            });
        let mut note = None;
        let (dst_name, dst_wire) = match by_use {
            Some(x) => x,
            None => {
                // 2. explicit map (keys and values logical), 3. same name
                let target = mapped.cloned().unwrap_or_else(|| name.clone());
                // Prefer an existing destination folder with this logical name (any case for INBOX).
                match dst
                    .folders
                    .iter()
                    .find(|d| dst.logical(&d.wire).as_deref() == Some(target.as_str()))
                {
                    Some(d) => (target, d.wire.clone()),
                    None => {
                        let (w, changed) = dst.wire(&target);
                        if changed {
                            note = Some(format!(
                                "renamed: the name contains the destination's hierarchy delimiter {:?}",
                                dst.delimiter.unwrap_or('/')
                            ));
                        }
                        (dst.logical(&w).unwrap_or(target), w)
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
            note,
        });
    }
    out
}

/// A deterministic substitute for a destination folder name the server refused to create:
/// attempt 1 keeps ASCII letters, digits, space, `-` and `_` of each level (others become
/// `_`); attempt 2 and later use `Migrated-<hash>` (a stable hash of the logical name), so
/// every pass picks the same substitute.
pub fn substitute(logical_name: &str, attempt: u32) -> String {
    if attempt <= 1 {
        let levels: Vec<String> = logical_name
            .split('/')
            .map(|l| {
                let s: String = l
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_') {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let s = s.trim().to_string();
                if s.is_empty() { "_".to_string() } else { s }
            })
            .collect();
        return levels.join("/");
    }
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(logical_name.as_bytes());
    format!("Migrated-{}", hex::encode(&h[..6]))
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
            ..Default::default()
        };
        let dst = Listing {
            delimiter: Some('/'),
            folders: vec![
                fi("INBOX", &[], true),
                fi("Sent", &["\\Sent"], true),
                fi("Junk E-mail", &["\\Junk"], true),
            ],
            ..Default::default()
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
            ..Default::default()
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

    fn cyrus(folders: Vec<FolderInfo>) -> Listing {
        Listing {
            delimiter: Some('.'),
            folders,
            prefix: "INBOX.".into(),
            foreign: vec!["user.".into()],
        }
    }

    #[test]
    fn namespaces_both_directions() {
        // Dovecot fs ("" prefix, "/") -> Cyrus ("INBOX." prefix, "."), with the
        // destination's existing \Sent folder used rather than a new "Sent".
        let dovecot = Listing {
            delimiter: Some('/'),
            folders: vec![
                fi("INBOX", &[], true),
                fi("Sent", &["\\Sent"], true),
                fi("Projects", &["\\Noselect"], false),
                fi("Projects/Alpha", &[], true),
                fi("Entw&APw-rfe", &[], false),
                fi("v1.2", &[], false),
            ],
            ..Default::default()
        };
        let cy = cyrus(vec![
            fi("INBOX", &[], true),
            fi("INBOX.Sent Messages", &["\\Sent"], true),
            fi("user.bob.Secret", &[], false),
        ]);
        let p = plan(&dovecot, &cy, &Folders::default());
        let got: Vec<(&str, &str, &str, bool, bool)> = p
            .iter()
            .map(|f| {
                (
                    f.name.as_str(),
                    f.dst_wire.as_str(),
                    f.dst_name.as_str(),
                    f.create,
                    f.note.is_some(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("INBOX", "INBOX", "INBOX", false, false),
                ("Sent", "INBOX.Sent Messages", "Sent Messages", false, false),
                (
                    "Projects/Alpha",
                    "INBOX.Projects.Alpha",
                    "Projects/Alpha",
                    true,
                    false
                ),
                ("Entwürfe", "INBOX.Entw&APw-rfe", "Entwürfe", true, false),
                ("v1.2", "INBOX.v1_2", "v1_2", true, true),
            ]
        );
        // And back: Cyrus -> Dovecot; other users' folders are never planned.
        let cy_src = cyrus(vec![
            fi("INBOX", &[], true),
            fi("INBOX.Projects.Alpha", &[], true),
            fi("INBOX.Sent", &[], true),
            fi("user.bob.Secret", &[], true),
            fi("shared-outside", &[], true),
        ]);
        let dst = Listing {
            delimiter: Some('/'),
            folders: vec![fi("INBOX", &[], true), fi("Sent Items", &["\\Sent"], true)],
            ..Default::default()
        };
        let p = plan(&cy_src, &dst, &Folders::default());
        let got: Vec<(&str, &str)> = p
            .iter()
            .map(|f| (f.name.as_str(), f.dst_wire.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("INBOX", "INBOX"),
                ("Projects/Alpha", "Projects/Alpha"),
                // No \Sent on the source: the well-known name finds the destination's.
                ("Sent", "Sent Items"),
            ]
        );
    }

    #[test]
    fn substitutes_are_deterministic() {
        assert_eq!(substitute("Proj%ekte/Ä*b", 1), "Proj_ekte/__b");
        assert_eq!(substitute("x", 2), substitute("x", 3));
        assert!(substitute("x", 2).starts_with("Migrated-"));
        assert_ne!(substitute("x", 2), substitute("y", 2));
    }

    proptest::proptest! {
        #[test]
        fn logical_wire_roundtrip(
            levels in proptest::collection::vec("[a-zA-Z0-9 äöü&_-]{1,8}", 1..4),
            prefix in proptest::sample::select(vec!["", "INBOX.", "INBOX/"]),
        ) {
            let d = if prefix.ends_with('/') { '/' } else { '.' };
            let side = Listing {
                delimiter: Some(d),
                prefix: prefix.to_string(),
                ..Default::default()
            };
            let name = levels.join("/");
            proptest::prop_assume!(!name.eq_ignore_ascii_case("INBOX"));
            let (w, changed) = side.wire(&name);
            proptest::prop_assert!(!changed);
            proptest::prop_assert_eq!(side.logical(&w), Some(name));
        }
    }
}
