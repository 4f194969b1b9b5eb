//! Provider profiles as data (`profile = "gmail" | "office365" | "exchange"` on a backfill
//! side): one table of what the servers people migrate from and to need beyond plain IMAP —
//! message size limits, throttling defaults, the provider's names for the SPECIAL-USE folders,
//! folders that hold no mail, names it refuses, whether folders are Gmail labels. Data and
//! lookups only; `backfill::profile` holds the decisions made with it.

use serde::Deserialize;

/// `profile` on a backfill side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    /// Plain IMAP (or a Maildir); with X-GM-EXT-1 advertised, Gmail is assumed.
    #[default]
    Generic,
    Gmail,
    Office365,
    Exchange,
}

const MB: u64 = 1024 * 1024;

/// One provider's behaviour.
#[derive(Debug, PartialEq, Eq)]
pub struct Profile {
    pub id: ProfileName,
    pub name: &'static str,
    /// Largest message the provider takes as a destination; bigger ones are skipped and
    /// reported, never retried (`max_message_size` on the side overrides, up to the limit).
    pub max_message_size: Option<u64>,
    /// The most `max_message_size` may be raised to.
    pub max_message_size_limit: Option<u64>,
    /// Upload cap per account per day (`max_bytes_per_day` default).
    pub max_bytes_per_day: Option<u64>,
    /// Throttling defaults: mailboxes at once, connections per mailbox.
    pub concurrency: Option<usize>,
    pub connections_per_mailbox: Option<usize>,
    /// The provider's names of its SPECIAL-USE folders, for servers that do not send the
    /// attributes (both directions: source folders are recognised, destination folders used).
    pub special_names: &'static [(&'static str, &'static str)],
    /// Folders that hold no mail (calendars, contacts, sync logs): never copied from, and a
    /// source folder with such a name gets [`Profile::RESERVED_SUFFIX`] on the destination.
    pub non_mail: &'static [&'static str],
    /// Characters the provider refuses in folder names (replaced by `_`).
    pub refused_chars: &'static [char],
    /// Longest folder name level the provider takes (characters).
    pub max_name_len: Option<usize>,
    /// Folders are labels (`X-GM-LABELS`, `X-GM-MSGID`): see [`Labels`].
    pub labels: bool,
}

/// The profiles. `generic` is plain IMAP (and Maildirs).
pub const PROFILES: &[Profile] = &[
    Profile {
        id: ProfileName::Generic,
        name: "generic",
        max_message_size: None,
        max_message_size_limit: None,
        max_bytes_per_day: None,
        concurrency: None,
        connections_per_mailbox: None,
        special_names: &[],
        non_mail: &[],
        refused_chars: &[],
        max_name_len: None,
        labels: false,
    },
    Profile {
        id: ProfileName::Gmail,
        name: "gmail",
        // Gmail's IMAP APPENDLIMIT (35,651,584 bytes); uploads are capped at 500 MB a day per
        // account.
        max_message_size: Some(34 * MB),
        max_message_size_limit: Some(34 * MB),
        max_bytes_per_day: Some(500 * 1000 * 1000),
        concurrency: Some(4),
        // Gmail allows 15 simultaneous IMAP connections per account.
        connections_per_mailbox: Some(2),
        special_names: &[
            ("[Gmail]/Sent Mail", "\\Sent"),
            ("[Gmail]/Drafts", "\\Drafts"),
            ("[Gmail]/Trash", "\\Trash"),
            ("[Gmail]/Bin", "\\Trash"),
            ("[Gmail]/Spam", "\\Junk"),
            ("[Gmail]/All Mail", "\\All"),
        ],
        non_mail: &[],
        refused_chars: &[],
        max_name_len: Some(225),
        labels: true,
    },
    Profile {
        id: ProfileName::Office365,
        name: "office365",
        // Exchange Online's IMAP migration takes 35 MB by default, 150 MB at most, and throttles
        // per user and per tenant: one connection per mailbox.
        connections_per_mailbox: Some(1),
        ..EXCHANGE
    },
    EXCHANGE,
];

const EXCHANGE: Profile = Profile {
    id: ProfileName::Exchange,
    name: "exchange",
    // Exchange Server's default receive/IMAP limits (raised per organisation up to 150 MB).
    max_message_size: Some(35 * MB),
    max_message_size_limit: Some(150 * MB),
    max_bytes_per_day: None,
    concurrency: Some(4),
    connections_per_mailbox: Some(2),
    special_names: EXCHANGE_NAMES,
    non_mail: EXCHANGE_NON_MAIL,
    refused_chars: &['\\'],
    max_name_len: Some(250),
    labels: false,
};

const EXCHANGE_NAMES: &[(&str, &str)] = &[
    ("Sent Items", "\\Sent"),
    ("Deleted Items", "\\Trash"),
    ("Junk Email", "\\Junk"),
    ("Junk E-mail", "\\Junk"),
    ("Drafts", "\\Drafts"),
    ("Archive", "\\Archive"),
];

const EXCHANGE_NON_MAIL: &[&str] = &[
    "Calendar",
    "Contacts",
    "Tasks",
    "Notes",
    "Journal",
    "Outbox",
    "Sync Issues",
    "Conversation History",
];

impl Profile {
    /// Appended to a source folder whose name the destination keeps for non-mail items.
    pub const RESERVED_SUFFIX: &'static str = " (mail)";

    /// The profile of `id`.
    pub fn of(id: ProfileName) -> &'static Profile {
        PROFILES.iter().find(|p| p.id == id).unwrap_or(&PROFILES[0])
    }

    /// The effective message size limit (a configured one, else the profile's).
    pub fn size_limit(&self, configured: Option<u64>) -> Option<u64> {
        configured.or(self.max_message_size)
    }
}

/// `gmail_labels`: how a Gmail source's labels become folders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Labels {
    /// A copy in every label's folder (what Gmail's IMAP shows).
    #[default]
    Folders,
    /// One copy, in the folder of the message's first label (Inbox first), the other labels
    /// as keywords.
    Keywords,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for p in PROFILES {
            if let (Some(d), Some(m)) = (p.max_message_size, p.max_message_size_limit) {
                assert!(d <= m, "{}", p.name);
            }
            assert_eq!(Profile::of(p.id), p);
        }
        assert_eq!(Profile::of(ProfileName::Generic).name, "generic");
        assert_eq!(PROFILES.len(), 4);
    }
}
