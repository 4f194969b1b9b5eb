//! SMTP replies: a code, an enhanced status code and a text, rendered as one CRLF-terminated
//! line. Pure formatting; never writes to a socket itself.

use std::borrow::Cow;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code (RFC 3463), e.g. `5.7.1`.
    pub esc: &'static str,
    pub text: Cow<'static, str>,
}

impl Reply {
    pub fn new(code: u16, esc: &'static str, text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            esc,
            text: text.into(),
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Append the wire form (`550 5.7.1 text\r\n`) to `out`. CR/LF in the text are replaced.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: String = self
            .text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        write!(f, "{} {} {}", self.code, self.esc, text)
    }
}

/// Replies used in several places.
pub fn bad_sequence(what: &'static str) -> Reply {
    Reply::new(503, "5.5.1", what)
}
