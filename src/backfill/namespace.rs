//! IMAP namespaces (RFC 2342): the parser of a `* NAMESPACE` response and the personal
//! namespace that folder names are mapped through (`INBOX.` on Cyrus in its standard namespace
//! and on Courier, `""` on Dovecot). Pure: a response line in, prefixes out; never does IO and
//! never panics on bad input (an unparsable response means "no NAMESPACE": today's behaviour).

/// One namespace: its prefix as on the wire (`"INBOX."`, `""`, `"Other Users/"`) and delimiter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespace {
    pub prefix: String,
    pub delimiter: Option<char>,
}

/// The three namespace lists of RFC 2342.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespaces {
    pub personal: Vec<Namespace>,
    pub other_users: Vec<Namespace>,
    pub shared: Vec<Namespace>,
}

impl Namespaces {
    /// The personal namespace folders are mapped through: the first one (RFC 2342: the default).
    pub fn personal(&self) -> Namespace {
        self.personal.first().cloned().unwrap_or_default()
    }

    /// Non-empty prefixes of the other users' and shared namespaces: folders under them are not
    /// the user's own and are never copied.
    pub fn foreign_prefixes(&self) -> Vec<String> {
        self.other_users
            .iter()
            .chain(&self.shared)
            .map(|n| n.prefix.clone())
            .filter(|p| !p.is_empty())
            .collect()
    }
}

/// Parse the untagged response line `* NAMESPACE (("" "/")) NIL (("Shared/" "/"))` (with or
/// without the leading `* `, trailing CRLF allowed). `None` when it is not a well-formed
/// NAMESPACE response.
pub fn parse(line: &str) -> Option<Namespaces> {
    let line = line.trim_end_matches(['\r', '\n']);
    let rest = line.strip_prefix("* ").unwrap_or(line);
    let rest = strip_prefix_ci(rest, "NAMESPACE ")?;
    let mut p = Parser {
        s: rest.as_bytes(),
        i: 0,
    };
    let personal = p.list()?;
    p.space()?;
    let other_users = p.list()?;
    p.space()?;
    let shared = p.list()?;
    Some(Namespaces {
        personal,
        other_users,
        shared,
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.i += 1)
    }
    fn space(&mut self) -> Option<()> {
        self.eat(b' ')?;
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
        Some(())
    }
    fn nil(&mut self) -> Option<()> {
        let w = self.s.get(self.i..self.i + 3)?;
        w.eq_ignore_ascii_case(b"NIL").then(|| self.i += 3)
    }
    /// `NIL` or `( "(" prefix SP delim *ext ")" )+`.
    fn list(&mut self) -> Option<Vec<Namespace>> {
        if self.peek()? != b'(' {
            self.nil()?;
            return Some(Vec::new());
        }
        self.eat(b'(')?;
        let mut out = Vec::new();
        while self.peek()? == b'(' {
            out.push(self.entry()?);
            while self.peek() == Some(b' ') {
                self.i += 1;
            }
        }
        self.eat(b')')?;
        Some(out)
    }
    fn entry(&mut self) -> Option<Namespace> {
        self.eat(b'(')?;
        let prefix = self.string()?;
        self.space()?;
        let delimiter = if self.peek()? == b'"' {
            self.string()?.chars().next()
        } else {
            self.nil()?;
            None
        };
        // Namespace response extensions (RFC 2342 §5): skip balanced parentheses and strings.
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b')' if depth == 0 => break,
                b')' => depth -= 1,
                b'(' => depth += 1,
                b'"' => {
                    self.string()?;
                    continue;
                }
                _ => {}
            }
            self.i += 1;
        }
        self.eat(b')')?;
        Some(Namespace { prefix, delimiter })
    }
    /// A quoted string with `\"` and `\\` escapes (literals are not used here by any server
    /// we know; they make the response unparsable, which falls back to no NAMESPACE).
    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return String::from_utf8(out).ok();
                }
                b'\\' => {
                    self.i += 1;
                    out.push(self.peek()?);
                }
                b'\r' | b'\n' => return None,
                c => out.push(c),
            }
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(prefix: &str, d: char) -> Namespace {
        Namespace {
            prefix: prefix.into(),
            delimiter: Some(d),
        }
    }

    #[test]
    fn dovecot_cyrus_courier_exchange() {
        let d = parse("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n").unwrap_or_default();
        assert_eq!(d.personal(), ns("", '/'));
        let c = parse("* NAMESPACE ((\"INBOX.\" \".\")) ((\"user.\" \".\")) ((\"\" \".\"))")
            .unwrap_or_default();
        assert_eq!(c.personal(), ns("INBOX.", '.'));
        // The shared namespace with an empty prefix is not a foreign prefix (it cannot be
        // told apart by name); other users' is.
        assert_eq!(c.foreign_prefixes(), vec!["user.".to_string()]);
        let x = parse("* namespace ((\"\" \"/\")) NIL ((\"Public Folders/\" \"/\"))")
            .unwrap_or_default();
        assert_eq!(x.foreign_prefixes(), vec!["Public Folders/".to_string()]);
        let two =
            parse("* NAMESPACE ((\"\" \"/\")(\"#mh/\" \"/\" \"X-PARAM\" (\"a\" \"b\"))) NIL NIL")
                .unwrap_or_default();
        assert_eq!(two.personal.len(), 2);
        assert_eq!(two.personal[1], ns("#mh/", '/'));
        let nil_delim = parse("* NAMESPACE ((\"\" NIL)) NIL NIL").unwrap_or_default();
        assert_eq!(nil_delim.personal[0].delimiter, None);
        let esc = parse(r#"* NAMESPACE (("a\"b\\" ".")) NIL NIL"#).unwrap_or_default();
        assert_eq!(esc.personal[0].prefix, "a\"b\\");
    }

    #[test]
    fn garbage_is_none() {
        for bad in [
            "",
            "* NAMESPACE",
            "* NAMESPACE ((\"\" \"/\"))",
            "* NAMESPACE ((\"\" \"/\" NIL NIL",
            "* LIST () \"/\" INBOX",
            "* NAMESPACE (({3}\r\nabc \"/\")) NIL NIL",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,80}") {
            let _ = parse(&s);
            let _ = parse(&format!("* NAMESPACE {s}"));
        }

        #[test]
        fn roundtrips_quoted(prefix in "[ -~]{0,12}", d in "[./]") {
            let q = prefix.replace('\\', "\\\\").replace('"', "\\\"");
            let line = format!("* NAMESPACE ((\"{q}\" \"{d}\")) NIL NIL");
            let got = parse(&line);
            proptest::prop_assert_eq!(got.map(|n| n.personal()), Some(Namespace {
                prefix,
                delimiter: d.chars().next(),
            }));
        }
    }
}
