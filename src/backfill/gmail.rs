//! Gmail's IMAP extensions (`X-GM-EXT-1`): a message's labels and its `X-GM-MSGID` as a source,
//! and `STORE +X-GM-LABELS` as a destination (one message, several labels, instead of one
//! APPEND per folder). IMAP IO only; the decisions are `profile`'s.

use super::imap_ops::{open_folder, quote, uid_chunks};
use super::session::{Conn, timed};
use super::{BackfillError, CMD_TIMEOUT, Result};
use futures_util::TryStreamExt;
use std::collections::HashMap;

/// A Gmail message's identity and labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GmInfo {
    pub msgid: u64,
    pub labels: Vec<String>,
}

const LABEL_ITEMS: &str = "(UID X-GM-MSGID X-GM-LABELS)";

/// `X-GM-MSGID` and `X-GM-LABELS` of `uids` in `wire` (examined read-only).
pub async fn fetch_labels(
    conn: &mut Conn,
    wire: &str,
    uids: &[u32],
) -> Result<HashMap<u32, GmInfo>> {
    let mut out = HashMap::with_capacity(uids.len());
    if uids.is_empty() {
        return Ok(out);
    }
    open_folder(conn, wire, true).await?;
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for chunk in uid_chunks(&sorted, LABEL_ITEMS) {
        let what = format!("UID FETCH {wire} X-GM-LABELS");
        let got: Vec<(u32, GmInfo)> = timed(&what, CMD_TIMEOUT, async {
            let stream = conn
                .session
                .uid_fetch(chunk.set, LABEL_ITEMS)
                .await
                .map_err(|e| BackfillError::from_imap(&what, e))?;
            let fetches: Vec<_> = stream
                .try_collect()
                .await
                .map_err(|e| BackfillError::from_imap(&what, e))?;
            Ok(fetches
                .iter()
                .filter_map(|f| {
                    let labels = f
                        .gmail_labels()
                        .map(|l| l.iter().map(|s| s.to_string()).collect())
                        .unwrap_or_default();
                    Some((
                        f.uid?,
                        GmInfo {
                            msgid: f.gmail_msg_id().copied().unwrap_or(0),
                            labels,
                        },
                    ))
                })
                .collect())
        })
        .await?;
        out.extend(got);
    }
    Ok(out)
}

/// Add `label` to messages `uids` of `wire` (`UID STORE +X-GM-LABELS`), checked for its OK.
pub async fn add_label(conn: &mut Conn, wire: &str, uids: &[u32], label: &str) -> Result<()> {
    if uids.is_empty() {
        return Ok(());
    }
    open_folder(conn, wire, false).await?;
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let label = if label.starts_with('\\') {
        label.to_string()
    } else {
        quote(label)
    };
    let items = format!("+X-GM-LABELS.SILENT ({label})");
    for chunk in uid_chunks(&sorted, &items) {
        let what = format!("UID STORE {wire} {items}");
        timed(&what, CMD_TIMEOUT, async {
            conn.session
                .run_command_and_check_ok(format!("UID STORE {} {items}", chunk.set))
                .await
                .map_err(|e| BackfillError::from_imap(&what, e))
        })
        .await?;
    }
    Ok(())
}
