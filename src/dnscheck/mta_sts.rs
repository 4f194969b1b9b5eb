//! MTA-STS (RFC 8461) for `cutover dns check`: the `_mta-sts` TXT record, the policy file
//! (`version`, `mode`, `mx`, `max_age`) and MX pattern matching (`*.` matches exactly one
//! leftmost label). Pure: never fetches; the caller hands in the texts.

use serde::Serialize;

/// Where senders fetch the policy for `domain`.
pub fn policy_url(domain: &str) -> String {
    format!("https://{}/.well-known/mta-sts.txt", policy_host(domain))
}

/// The policy host of `domain`.
pub fn policy_host(domain: &str) -> String {
    format!("mta-sts.{}", domain.trim_end_matches('.'))
}

/// The `id` of the one `v=STSv1` record among the TXT strings of `_mta-sts.DOMAIN`; `Ok(None)`
/// when there is none.
pub fn txt_id(txts: &[String]) -> Result<Option<String>, String> {
    let sts: Vec<&String> = txts.iter().filter(|t| t.starts_with("v=STSv1")).collect();
    let record = match sts.as_slice() {
        [] => return Ok(None),
        [one] => one,
        _ => {
            return Err(format!(
                "{} v=STSv1 records (RFC 8461 allows one)",
                sts.len()
            ));
        }
    };
    let id = record
        .split(';')
        .filter_map(|f| f.trim().split_once('='))
        .find(|(k, _)| *k == "id")
        .map(|(_, v)| v.trim().to_string());
    match id {
        Some(id)
            if (1..=32).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            Ok(Some(id))
        }
        _ => Err(format!(
            "{record:?} has no valid id (1-32 letters and digits)"
        )),
    }
}

/// `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

/// A parsed policy file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub mode: Mode,
    pub mx: Vec<String>,
    /// Seconds senders may cache the policy.
    pub max_age: u64,
}

/// Largest `max_age` (RFC 8461 §3.2: about a year).
const MAX_AGE_LIMIT: u64 = 31_557_600;

/// Parse the policy text (`key: value` lines, CRLF or LF).
pub fn parse_policy(text: &str) -> Result<Policy, String> {
    let (mut version, mut mode, mut max_age, mut mx) = (None, None, None, Vec::new());
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(format!("line {line:?} is not \"key: value\""));
        };
        let v = v.trim();
        match k.trim() {
            "version" => version = Some(v.to_string()),
            "mode" => {
                mode = Some(match v {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    _ => return Err(format!("mode {v:?} is not enforce, testing or none")),
                })
            }
            "max_age" => {
                max_age = Some(
                    v.parse::<u64>()
                        .ok()
                        .filter(|a| *a <= MAX_AGE_LIMIT)
                        .ok_or_else(|| format!("max_age {v:?} is not 0..{MAX_AGE_LIMIT}"))?,
                )
            }
            "mx" => mx.push(v.to_ascii_lowercase()),
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err("no \"version: STSv1\" line".into());
    }
    let mode = mode.ok_or("no mode line")?;
    let max_age = max_age.ok_or("no max_age line")?;
    if mx.is_empty() && mode != Mode::None {
        return Err("no mx line".into());
    }
    Ok(Policy { mode, mx, max_age })
}

/// Does `pattern` (`mx.example.com` or `*.example.com`) match host `name`?
pub fn mx_matches(pattern: &str, name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => name == pattern,
    }
}

/// The first pattern of `policy` matching `name`.
pub fn listed<'a>(policy: &'a Policy, name: &str) -> Option<&'a str> {
    policy
        .mx
        .iter()
        .find(|p| mx_matches(p, name))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_record() {
        assert_eq!(
            txt_id(&["v=STSv1; id=20261130T1".into()]).unwrap(),
            Some("20261130T1".into())
        );
        assert_eq!(txt_id(&["v=spf1 -all".into()]).unwrap(), None);
        assert!(txt_id(&["v=STSv1; id=a".into(), "v=STSv1; id=b".into()]).is_err());
        assert!(txt_id(&["v=STSv1;".into()]).is_err());
        assert!(txt_id(&["v=STSv1; id=bad-id".into()]).is_err());
    }

    #[test]
    fn policy_file() {
        let p = parse_policy(
            "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.Example.net\r\nmax_age: 604800\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.mx, vec!["mx1.example.com", "*.example.net"]);
        assert_eq!(p.max_age, 604800);
        assert!(parse_policy("mode: enforce\nmx: a\nmax_age: 1\n").is_err());
        assert!(parse_policy("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n").is_err());
        assert!(parse_policy("version: STSv1\nmode: enforce\nmax_age: 1\n").is_err());
        assert!(parse_policy("version: STSv1\nmode: none\nmax_age: 99999999999\n").is_err());
        assert!(parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n").is_ok());
        assert!(parse_policy("<html>").is_err());
    }

    #[test]
    fn wildcards_match_one_label() {
        assert!(mx_matches("mx1.example.com", "MX1.example.com."));
        assert!(mx_matches("*.example.com", "mx1.example.com"));
        assert!(!mx_matches("*.example.com", "a.b.example.com"));
        assert!(!mx_matches("*.example.com", "example.com"));
        assert!(!mx_matches("mx1.example.com", "mx2.example.com"));
    }

    proptest::proptest! {
        #[test]
        fn parse_policy_never_panics(s in "[a-z_:* .\r\n0-9]{0,80}") {
            let _ = parse_policy(&s);
        }
    }
}
