//! Decisions made with a provider profile (the table is `config::profile`): which folders are
//! the provider's SPECIAL-USE folders or hold no mail, what a destination folder must be called
//! there, and for Gmail which label folder a message's copy belongs in and with which keywords.
//! Pure: names and labels in, decisions out; never does IO.

use super::plan::{FolderInfo, FolderPair, Listing};
pub use crate::config::profile::{Labels, Profile, ProfileName};
use std::collections::HashMap;

/// Whether a logical folder name is one of the provider's non-mail folders (or inside one).
pub fn is_non_mail(p: &Profile, logical: &str) -> bool {
    p.non_mail.iter().any(|n| {
        logical.eq_ignore_ascii_case(n)
            || logical
                .get(..n.len() + 1)
                .is_some_and(|p| p.eq_ignore_ascii_case(&format!("{n}/")))
    })
}

/// Give the folders of a listing the SPECIAL-USE attribute the provider's name stands for,
/// where no folder carries that attribute already (Exchange 2010, servers without
/// SPECIAL-USE).
pub fn annotate(p: &Profile, listing: &mut Listing) {
    for (name, attr) in p.special_names {
        if listing.folders.iter().any(|f| f.has_attr(attr)) {
            continue;
        }
        let hit = listing
            .folders
            .iter()
            .position(|f| f.selectable() && listing.logical(&f.wire).as_deref() == Some(*name));
        if let Some(i) = hit {
            listing.folders[i].attrs.push((*attr).to_string());
        }
    }
}

/// A destination folder name this provider takes: non-mail names get a suffix, refused
/// characters become `_`, over-long levels are cut. `None` when the name is fine as is;
/// otherwise the new name and why.
pub fn destination_name(p: &Profile, logical: &str) -> Option<(String, String)> {
    let mut why = Vec::new();
    let mut name = logical.to_string();
    if is_non_mail(p, logical) && !logical.contains('/') {
        name.push_str(Profile::RESERVED_SUFFIX);
        why.push(format!("{} keeps {logical:?} for non-mail items", p.name));
    }
    if name.contains(p.refused_chars) {
        name = name.replace(p.refused_chars, "_");
        why.push(format!(
            "{} refuses {:?} in folder names",
            p.name, p.refused_chars
        ));
    }
    if let Some(max) = p.max_name_len
        && name.split('/').any(|l| l.chars().count() > max)
    {
        name = name
            .split('/')
            .map(|l| l.chars().take(max).collect::<String>())
            .collect::<Vec<_>>()
            .join("/");
        why.push(format!(
            "{} takes folder names up to {max} characters",
            p.name
        ));
    }
    (!why.is_empty()).then(|| (name, why.join("; ")))
}

/// Adjust a folder plan to the sides' profiles: the source's non-mail folders and Gmail's views
/// (Starred, Important) are left out; Gmail's All Mail goes to `Archive` (only its messages
/// without a label are copied there); a destination folder still to create gets a name the
/// destination's provider takes. Returns the pairs and, for a Gmail source (`gmail`), the
/// label each source folder stands for.
pub fn adjust_plan(
    pairs: Vec<FolderPair>,
    (src, dst): (&Listing, &Listing),
    (src_p, dst_p): (&Profile, &Profile),
    gmail: bool,
) -> (Vec<FolderPair>, HashMap<String, Home>) {
    let mut homes = HashMap::new();
    let mut out = Vec::with_capacity(pairs.len());
    for mut p in pairs {
        if is_non_mail(src_p, &p.name) {
            continue;
        }
        let info = src.folders.iter().find(|f| f.wire == p.src_wire);
        if gmail && let Some(f) = info {
            if is_view(f) {
                continue;
            }
            if f.has_attr(ALL_MAIL_ATTR) {
                let archive = dst
                    .folders
                    .iter()
                    .find(|d| d.selectable() && d.has_attr("\\Archive"))
                    .and_then(|d| dst.logical(&d.wire))
                    .unwrap_or_else(|| ARCHIVE.to_string());
                retarget(&mut p, dst, &archive);
                p.note = Some(format!(
                    "Gmail's All Mail: only messages without a label are copied, into {archive:?}"
                ));
                homes.insert(p.name.clone(), Home::Archive);
            } else if let Some(h) = folder_label(f) {
                homes.insert(p.name.clone(), h);
            }
            // `[Gmail]/Sent Mail` and friends without a counterpart: the plain names.
            if p.create
                && p.name.starts_with("[Gmail]/")
                && let Some((_, plain)) = GMAIL_PLAIN.iter().find(|(a, _)| f.has_attr(a))
            {
                retarget(&mut p, dst, plain);
            }
        }
        if p.create
            && let Some((name, why)) = destination_name(dst_p, &p.dst_name)
        {
            retarget(&mut p, dst, &name);
            p.note = Some(why);
        }
        out.push(p);
    }
    (out, homes)
}

/// Names for Gmail's `[Gmail]/...` SPECIAL-USE folders on a destination that has none.
const GMAIL_PLAIN: [(&str, &str); 4] = [
    ("\\Sent", "Sent"),
    ("\\Drafts", "Drafts"),
    ("\\Trash", "Trash"),
    ("\\Junk", "Junk"),
];

/// Point a pair at the destination folder with logical name `logical` (created if missing).
fn retarget(p: &mut FolderPair, dst: &Listing, logical: &str) {
    let existing = dst
        .folders
        .iter()
        .find(|d| d.selectable() && dst.logical(&d.wire).as_deref() == Some(logical));
    let wire = match existing {
        Some(d) => d.wire.clone(),
        None => dst.wire(logical).0,
    };
    p.create = existing.is_none() && wire != "INBOX";
    p.dst_name = dst.logical(&wire).unwrap_or_else(|| logical.to_string());
    p.dst_wire = wire;
}

/// Where a Gmail message's copy lives in `keywords` mode, or which label a folder stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Home {
    Inbox,
    Sent,
    Drafts,
    /// A user label (its name as X-GM-LABELS gives it, which is the folder's wire name).
    Label(String),
    /// Only in All Mail: the `Archive` folder.
    Archive,
}

impl Home {
    /// The label the folder's messages carry (`None` for Archive, which is no label).
    pub fn label(&self) -> Option<String> {
        match self {
            Home::Inbox => Some("\\Inbox".into()),
            Home::Sent => Some("\\Sent".into()),
            Home::Drafts => Some("\\Draft".into()),
            Home::Label(l) => Some(l.clone()),
            Home::Archive => None,
        }
    }
}

/// The Gmail name of the folder that holds the messages without a label.
pub const ALL_MAIL_ATTR: &str = "\\All";
/// The destination folder for messages only in All Mail.
pub const ARCHIVE: &str = "Archive";

/// Labels that are not folders of their own (flags or Gmail's own sorting).
fn is_pseudo_label(l: &str) -> bool {
    ["\\Important", "\\Starred", "\\Muted"]
        .iter()
        .any(|p| l.eq_ignore_ascii_case(p))
}

/// The label a Gmail folder stands for (`None`: All Mail, Spam, Trash, Starred, Important:
/// folders that are not one label).
pub fn folder_label(f: &FolderInfo) -> Option<Home> {
    if f.wire.eq_ignore_ascii_case("INBOX") {
        return Some(Home::Inbox);
    }
    if f.has_attr("\\Sent") {
        return Some(Home::Sent);
    }
    if f.has_attr("\\Drafts") {
        return Some(Home::Drafts);
    }
    let special = ["\\All", "\\Junk", "\\Trash", "\\Flagged", "\\Important"];
    if special.iter().any(|a| f.has_attr(a)) || f.wire.starts_with("[Gmail]") {
        return None;
    }
    Some(Home::Label(f.wire.clone()))
}

/// Whether a Gmail folder is a view of messages that live elsewhere (Starred, Important):
/// never copied as a folder (Starred is the `\Flagged` flag).
pub fn is_view(f: &FolderInfo) -> bool {
    f.has_attr("\\Flagged") || f.has_attr("\\Important")
}

/// The homes a message's labels give it, in order: Inbox, Sent, Drafts, then user labels
/// sorted (so the choice is stable across passes), else Archive.
pub fn homes(labels: &[String]) -> Vec<Home> {
    let has = |s: &str| labels.iter().any(|l| l.eq_ignore_ascii_case(s));
    let mut out = Vec::new();
    if has("\\Inbox") {
        out.push(Home::Inbox);
    }
    if has("\\Sent") {
        out.push(Home::Sent);
    }
    if has("\\Draft") || has("\\Drafts") {
        out.push(Home::Drafts);
    }
    let mut user: Vec<&String> = labels
        .iter()
        .filter(|l| !l.starts_with('\\') && !is_pseudo_label(l))
        .collect();
    user.sort();
    user.dedup();
    out.extend(user.into_iter().map(|l| Home::Label(l.clone())));
    if out.is_empty() {
        out.push(Home::Archive);
    }
    out
}

/// Whether a message with `labels` is copied into the folder standing for `folder`
/// (`Home::Archive` for All Mail), and the keywords it carries there.
pub fn placement(mode: Labels, folder: &Home, labels: &[String]) -> Option<Vec<String>> {
    let homes = homes(labels);
    match mode {
        Labels::Folders => homes.contains(folder).then(Vec::new),
        Labels::Keywords => (homes.first() == Some(folder)).then(|| {
            homes[1..]
                .iter()
                .filter_map(|h| match h {
                    Home::Label(l) => Some(keyword(l)),
                    _ => None,
                })
                .collect()
        }),
    }
}

/// An IMAP keyword (an atom) for a label: characters an atom cannot hold become `_`.
pub fn keyword(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !"(){%*\"\\]".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fi(wire: &str, attrs: &[&str]) -> FolderInfo {
        FolderInfo {
            wire: wire.into(),
            attrs: attrs.iter().map(|s| s.to_string()).collect(),
            subscribed: true,
        }
    }

    fn labels(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exchange_names() {
        let p = Profile::of(ProfileName::Exchange);
        assert!(is_non_mail(p, "Calendar"));
        assert!(is_non_mail(p, "sync issues/Conflicts"));
        assert!(!is_non_mail(p, "Calendars of 2019"));
        let (n, why) = destination_name(p, "Calendar").unwrap();
        assert_eq!(n, "Calendar (mail)");
        assert!(why.contains("non-mail"));
        assert_eq!(destination_name(p, "Projects/Alpha"), None);
        let (n, _) = destination_name(p, "a\\b").unwrap();
        assert_eq!(n, "a_b");
        let long = "x".repeat(300);
        let (n, _) = destination_name(p, &long).unwrap();
        assert_eq!(n.chars().count(), 250);
    }

    #[test]
    fn annotate_only_where_missing() {
        let p = Profile::of(ProfileName::Office365);
        let mut l = Listing {
            delimiter: Some('/'),
            folders: vec![
                fi("INBOX", &[]),
                fi("Sent Items", &[]),
                fi("Deleted Items", &[]),
                fi("Junk Email", &[]),
                fi("Old Junk", &["\\Junk"]),
            ],
            ..Default::default()
        };
        annotate(p, &mut l);
        assert!(l.folders[1].has_attr("\\Sent"));
        assert!(l.folders[2].has_attr("\\Trash"));
        // A folder already carries \Junk: the name does not add a second one.
        assert!(!l.folders[3].has_attr("\\Junk"));
    }

    fn pair(name: &str, wire: &str, dst: &str) -> FolderPair {
        FolderPair {
            name: name.into(),
            src_wire: wire.into(),
            dst_wire: dst.into(),
            dst_name: dst.into(),
            create: true,
            subscribe: true,
            note: None,
        }
    }

    #[test]
    fn adjusts_gmail_and_exchange_plans() {
        let src = Listing {
            delimiter: Some('/'),
            folders: vec![
                fi("INBOX", &[]),
                fi("Work", &[]),
                fi("[Gmail]/All Mail", &["\\All"]),
                fi("[Gmail]/Starred", &["\\Flagged"]),
            ],
            ..Default::default()
        };
        let dst = Listing {
            delimiter: Some('/'),
            folders: vec![fi("INBOX", &[]), fi("Archive", &["\\Archive"])],
            ..Default::default()
        };
        let pairs = vec![
            pair("INBOX", "INBOX", "INBOX"),
            pair("Work", "Work", "Work"),
            pair("[Gmail]/All Mail", "[Gmail]/All Mail", "[Gmail]/All Mail"),
            pair("[Gmail]/Starred", "[Gmail]/Starred", "[Gmail]/Starred"),
        ];
        let g = Profile::of(ProfileName::Gmail);
        let x = Profile::of(ProfileName::Exchange);
        let (out, homes) = adjust_plan(pairs, (&src, &dst), (g, x), true);
        let names: Vec<&str> = out.iter().map(|p| p.dst_wire.as_str()).collect();
        assert_eq!(names, ["INBOX", "Work", "Archive"]);
        assert!(!out[2].create, "the existing \\Archive folder is used");
        assert_eq!(homes.get("[Gmail]/All Mail"), Some(&Home::Archive));
        assert_eq!(homes.get("Work"), Some(&Home::Label("Work".into())));
        // Exchange as the source: Calendar is not mail; as the destination: renamed.
        let src = Listing {
            delimiter: Some('/'),
            folders: vec![fi("Calendar", &[]), fi("Notes", &[])],
            ..Default::default()
        };
        let (out, _) = adjust_plan(
            vec![pair("Calendar", "Calendar", "Calendar")],
            (&src, &dst),
            (x, Profile::of(ProfileName::Generic)),
            false,
        );
        assert!(out.is_empty());
        let (out, _) = adjust_plan(
            vec![pair("Notes", "Notes", "Notes")],
            (&src, &dst),
            (Profile::of(ProfileName::Generic), x),
            false,
        );
        assert_eq!(out[0].dst_wire, "Notes (mail)");
        assert!(out[0].note.as_deref().unwrap_or("").contains("non-mail"));
    }

    #[test]
    fn gmail_folders_and_labels() {
        assert_eq!(folder_label(&fi("INBOX", &[])), Some(Home::Inbox));
        assert_eq!(
            folder_label(&fi("[Gmail]/Sent Mail", &["\\Sent"])),
            Some(Home::Sent)
        );
        assert_eq!(folder_label(&fi("[Gmail]/All Mail", &["\\All"])), None);
        assert_eq!(
            folder_label(&fi("Work/Projects", &[])),
            Some(Home::Label("Work/Projects".into()))
        );
        assert!(is_view(&fi("[Gmail]/Starred", &["\\Flagged"])));
        let l = labels(&["Work", "\\Important", "\\Inbox", "Alpha"]);
        assert_eq!(
            homes(&l),
            vec![
                Home::Inbox,
                Home::Label("Alpha".into()),
                Home::Label("Work".into())
            ]
        );
        assert_eq!(homes(&labels(&["\\Important"])), vec![Home::Archive]);
        assert_eq!(homes(&[]), vec![Home::Archive]);
    }

    #[test]
    fn placement_by_mode() {
        let l = labels(&["\\Inbox", "Work", "Big Project"]);
        let work = Home::Label("Work".into());
        assert_eq!(placement(Labels::Folders, &work, &l), Some(vec![]));
        assert_eq!(placement(Labels::Folders, &Home::Archive, &l), None);
        assert_eq!(placement(Labels::Keywords, &work, &l), None);
        assert_eq!(
            placement(Labels::Keywords, &Home::Inbox, &l),
            Some(vec!["Big_Project".to_string(), "Work".to_string()])
        );
        let only_all = labels(&["\\Important"]);
        assert_eq!(
            placement(Labels::Keywords, &Home::Archive, &only_all),
            Some(vec![])
        );
        assert_eq!(
            placement(Labels::Folders, &Home::Archive, &only_all),
            Some(vec![])
        );
    }

    proptest::proptest! {
        #[test]
        fn keywords_mode_places_each_message_once(
            ls in proptest::collection::vec("(\\\\Inbox|\\\\Sent|\\\\Important|[A-Za-z ]{1,6})", 0..5)
        ) {
            let mut folders: Vec<Home> = vec![Home::Inbox, Home::Sent, Home::Drafts, Home::Archive];
            folders.extend(ls.iter().map(|l| Home::Label(l.clone())));
            folders.sort_by_key(|h| format!("{h:?}"));
            folders.dedup();
            let n = folders.iter().filter(|f| placement(Labels::Keywords, f, &ls).is_some()).count();
            proptest::prop_assert_eq!(n, 1);
            for k in folders.iter().filter_map(|f| placement(Labels::Keywords, f, &ls)).flatten() {
                proptest::prop_assert!(k.chars().all(|c| c.is_ascii_graphic()));
            }
        }
    }
}
