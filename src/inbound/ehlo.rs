//! The greeting, EHLO/HELO and HELP replies: which extensions are offered in which session
//! state. Pure text building; never reads or writes a socket.

/// Extensions offered after EHLO.
#[derive(Clone, Copy, Debug)]
pub struct Offer {
    pub max_size: u64,
    /// STARTTLS is configured and the session is not under TLS yet.
    pub starttls: bool,
}

/// `220 <hostname> ESMTP`
pub fn greeting(hostname: &str) -> String {
    format!("220 {hostname} ESMTP cutover\r\n")
}

/// The multi-line EHLO reply.
pub fn ehlo_reply(hostname: &str, helo: &str, offer: Offer) -> String {
    let mut lines = vec![format!("{hostname} greets {}", printable(helo))];
    lines.push("PIPELINING".into());
    lines.push(format!("SIZE {}", offer.max_size));
    lines.push("8BITMIME".into());
    lines.push("SMTPUTF8".into());
    lines.push("ENHANCEDSTATUSCODES".into());
    if offer.starttls {
        lines.push("STARTTLS".into());
    }
    let mut out = String::new();
    let n = lines.len();
    for (i, l) in lines.iter().enumerate() {
        let sep = if i + 1 == n { ' ' } else { '-' };
        out.push_str(&format!("250{sep}{l}\r\n"));
    }
    out
}

/// The HELO reply.
pub fn helo_reply(hostname: &str) -> String {
    format!("250 {hostname}\r\n")
}

/// The HELP reply.
pub fn help_reply() -> String {
    "214-2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS\r\n\
     214 2.0.0 cutover mail gateway\r\n"
        .to_string()
}

fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(255).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ehlo_lists_extensions() {
        let r = ehlo_reply(
            "mx",
            "c",
            Offer {
                max_size: 100,
                starttls: true,
            },
        );
        assert!(r.starts_with("250-mx greets c\r\n250-PIPELINING\r\n250-SIZE 100\r\n"));
        assert!(r.ends_with("250 STARTTLS\r\n"));
        let r = ehlo_reply(
            "mx",
            "c\r\n",
            Offer {
                max_size: 1,
                starttls: false,
            },
        );
        assert!(r.ends_with("250 ENHANCEDSTATUSCODES\r\n"));
        assert!(!r.contains("STARTTLS"));
        assert_eq!(r.matches("\r\n").count(), 6);
    }
}
