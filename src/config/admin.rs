//! `[admin]` checks: reads `admin.token_file` into [`AdminToken`](super::AdminToken) (at load,
//! so a SIGHUP reload re-reads it) and warns about an admin listener off loopback without one.
//! Reads the token file; nothing else.

use super::{AdminToken, Config, KeyPath, Reader, resolve_path};
use std::path::Path;

pub(crate) fn check(c: &mut Config, base_dir: &Path, cx: &mut Reader<'_>) {
    let a = KeyPath::root().key("admin");
    match &c.admin.token_file {
        Some(file) => {
            let full = resolve_path(base_dir, file);
            match std::fs::read_to_string(&full) {
                Ok(text) => match AdminToken::parse(&text) {
                    Ok(t) => c.admin.token = Some(t),
                    Err(why) => {
                        cx.error(&a.key("token_file"), format!("{}: {why}", full.display()))
                    }
                },
                Err(e) => cx.error(
                    &a.key("token_file"),
                    format!("cannot read {}: {e}", full.display()),
                ),
            }
        }
        None if !c.admin.listen.ip().is_loopback() => cx.warn(
            &a.key("listen"),
            format!(
                "{} is not loopback and admin.token_file is not set: the admin API will refuse \
                 everything but /healthz (set token_file; clients send it as \
                 `Authorization: Bearer <token>`)",
                c.admin.listen
            ),
        ),
        None => {}
    }
}
