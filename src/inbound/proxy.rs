//! The PROXY protocol (HAProxy's v1 text and v2 binary header) in front of an SMTP session: who
//! may send one (`gateway.proxy_from`), reading it before the greeting within a time limit, and
//! the client address it names, which then stands for the connection in policy, limits, logs and
//! `Received:`. Parsing is the `ppp` crate's; this module never speaks SMTP.

use ipnet::IpNet;
use ppp::{HeaderResult, PartialResult, v1, v2};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a load balancer has to send the whole header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest header accepted (v1 is at most 107 bytes; v2's TLVs from cloud balancers are small).
pub const MAX_HEADER: usize = 4096;

/// Why a connection from a load balancer was dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before the PROXY header was complete")]
    Eof,
    /// Closed before sending anything: a balancer's TCP health check, not an error.
    #[error("connection closed without data (health check)")]
    Closed,
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
    #[error("PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("read error: {0}")]
    Io(String),
}

/// What the header said.
#[derive(Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The real client; `None` for `LOCAL` (v2) or `UNKNOWN` (v1): the balancer's own
    /// connection (health checks), which keeps the balancer's address.
    pub client: Option<SocketAddr>,
    /// Bytes read past the header (a client that pipelined before the greeting).
    pub rest: Vec<u8>,
}

/// Does `peer` have to send a PROXY header?
pub fn expects_header(enabled: bool, from: &[IpNet], peer: IpAddr) -> bool {
    let peer = super::policy::canonical_ip(peer);
    enabled && from.iter().any(|n| n.contains(&peer))
}

/// Parse a complete header at the start of `buf`: `Ok(None)` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, ProxyError> {
    let r = HeaderResult::parse(buf);
    if r.is_incomplete() {
        return if buf.len() >= MAX_HEADER {
            Err(ProxyError::TooLong)
        } else {
            Ok(None)
        };
    }
    match r {
        HeaderResult::V1(Ok(h)) => {
            let client = match h.addresses {
                v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                v1::Addresses::Unknown => None,
            };
            Ok(Some((client, h.header.len())))
        }
        HeaderResult::V2(Ok(h)) => {
            let client = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                (v2::Command::Proxy, other) => {
                    return Err(ProxyError::Invalid(format!(
                        "unsupported address family {:?}",
                        other.address_family()
                    )));
                }
            };
            if h.command == v2::Command::Proxy && h.protocol != v2::Protocol::Stream {
                return Err(ProxyError::Invalid(format!(
                    "protocol {:?}, not a TCP stream",
                    h.protocol
                )));
            }
            Ok(Some((client, h.header.len())))
        }
        HeaderResult::V1(Err(e)) => Err(ProxyError::Invalid(format!("v1: {e}"))),
        HeaderResult::V2(Err(e)) => Err(ProxyError::Invalid(format!("v2: {e}"))),
    }
}

/// Read the header from `io` (never more than [`MAX_HEADER`] bytes), within `limit`.
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
    limit: Duration,
) -> Result<ProxyHeader, ProxyError> {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let work = async {
        loop {
            let mut chunk = [0u8; 512];
            let room = (MAX_HEADER - buf.len()).min(chunk.len());
            let n = io
                .read(&mut chunk[..room])
                .await
                .map_err(|e| ProxyError::Io(e.to_string()))?;
            if n == 0 {
                return Err(if buf.is_empty() {
                    ProxyError::Closed
                } else {
                    ProxyError::Eof
                });
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some((client, used)) = parse(&buf)? {
                return Ok(ProxyHeader {
                    client,
                    rest: buf[used..].to_vec(),
                });
            }
        }
    };
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::Timeout(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
        v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (client, server),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let (c, n) = parse(b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\nEHLO x\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(c, Some("192.0.2.10:40000".parse().unwrap()));
        assert_eq!(n, "PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n".len());
        let (c, _) = parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(c, Some("[2001:db8::7]:40000".parse().unwrap()));
        let (c, _) = parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!(c, None);
    }

    #[test]
    fn v2_proxy_and_local() {
        let h = v2(
            "203.0.113.5:5555".parse().unwrap(),
            "10.0.0.1:25".parse().unwrap(),
        );
        let mut input = h.clone();
        input.extend_from_slice(b"EHLO");
        let (c, n) = parse(&input).unwrap().unwrap();
        assert_eq!(c, Some("203.0.113.5:5555".parse().unwrap()));
        assert_eq!(n, h.len());
        let local = v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(parse(&local).unwrap(), Some((None, local.len())));
    }

    #[test]
    fn partial_then_complete_and_garbage() {
        assert_eq!(parse(b"PROXY TCP4 192.0.2.10").unwrap(), None);
        assert_eq!(parse(b"\r\n\r\n\0\r\nQU").unwrap(), None);
        assert!(matches!(
            parse(b"EHLO client.example\r\n"),
            Err(ProxyError::Invalid(_))
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 999.0.2.10 198.51.100.1 40000 25\r\n"),
            Err(ProxyError::Invalid(_))
        ));
    }

    #[test]
    fn only_listed_balancers_send_headers() {
        let from: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        assert!(expects_header(true, &from, "10.0.0.9".parse().unwrap()));
        assert!(expects_header(
            true,
            &from,
            "::ffff:10.0.0.9".parse().unwrap()
        ));
        assert!(!expects_header(true, &from, "10.0.1.9".parse().unwrap()));
        assert!(!expects_header(false, &from, "10.0.0.9".parse().unwrap()));
    }

    #[tokio::test]
    async fn read_header_keeps_what_follows_and_times_out() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        use tokio::io::AsyncWriteExt;
        b.write_all(b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\nEHLO x\r\n")
            .await
            .unwrap();
        let h = read_header(&mut a, Duration::from_secs(5)).await.unwrap();
        assert_eq!(h.client, Some("192.0.2.10:40000".parse().unwrap()));
        assert_eq!(h.rest, b"EHLO x\r\n");
        let (mut a, _b) = tokio::io::duplex(1024);
        assert_eq!(
            read_header(&mut a, Duration::from_millis(50)).await,
            Err(ProxyError::Timeout(Duration::from_millis(50)))
        );
        let (mut a, b) = tokio::io::duplex(1024);
        drop(b);
        assert_eq!(
            read_header(&mut a, Duration::from_secs(1)).await,
            Err(ProxyError::Closed)
        );
        let (mut a, mut b) = tokio::io::duplex(1024);
        b.write_all(b"PROXY TCP4").await.unwrap();
        drop(b);
        assert_eq!(
            read_header(&mut a, Duration::from_secs(1)).await,
            Err(ProxyError::Eof)
        );
    }
}
