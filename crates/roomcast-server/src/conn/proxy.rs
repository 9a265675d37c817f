//! The PROXY protocol (HAProxy's `send-proxy` and `send-proxy-v2`): a load balancer that
//! passes TCP through (TLS left to the nodes, so it cannot add `X-Forwarded-For`) says
//! whose connection it is in a header before the first byte of the client's. The `ppp`
//! crate parses both versions; this file only reads the header off the socket.
//!
//! The specification (haproxy.org, `proxy-protocol.txt`, section 2): "the sender must
//! always ensure that the header is sent at once", so the receiver may peek at it with
//! `MSG_PEEK` and then take exactly its bytes, leaving the client's untouched. A header
//! split across segments is waited for until the handshake timeout.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::PartialResult;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Bytes peeked for a header: v1 is at most 107; v2 is 16 and its addresses (at most
/// 216) and TLVs, which HAProxy keeps well under this.
const MAX_HEADER: usize = 1024;

/// The longest v1 header, its line end included (section 2.1).
const V1_MAX: usize = 107;

/// How long to wait before peeking again at a header that came in parts.
const RETRY: Duration = Duration::from_millis(2);

/// Why a connection from a trusted proxy was dropped. Section 2 of the specification:
/// a receiver expecting the header "must not try to guess whether the protocol header is
/// present or not", and drops the connection when it is missing or invalid.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("the connection closed before its PROXY header")]
    Closed,
    #[error("no whole PROXY header within the handshake timeout")]
    Timeout,
    #[error("a PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("not a PROXY header: {0}")]
    Invalid(String),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the PROXY header that begins `stream`, and returns the client's address it
/// names: `None` for a header that names none (v1 `UNKNOWN`, v2 `LOCAL` such as a health
/// check, or a Unix socket), where the proxy's own address stands.
pub(crate) async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyError> {
    tokio::time::timeout(timeout, read(stream))
        .await
        .map_err(|_| ProxyError::Timeout)?
}

async fn read(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    let mut buf = vec![0u8; MAX_HEADER];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        match parse(&buf[..n])? {
            Some((len, addr)) => {
                // Take exactly the header: what follows is the client's.
                stream.read_exact(&mut buf[..len]).await?;
                return Ok(addr);
            }
            None if n == MAX_HEADER => return Err(ProxyError::TooLong),
            // Peeking again returns at once with the same bytes: wait for more.
            None => tokio::time::sleep(RETRY).await,
        }
    }
}

/// A header's length and the client's address, or `None` while it is incomplete.
fn parse(input: &[u8]) -> Result<Option<(usize, Option<SocketAddr>)>, ProxyError> {
    // v1 begins with "PROXY"; checked first, because `HeaderResult::parse` waits for the
    // 16 bytes of a v2 header while "PROXY UNKNOWN\r\n" is 15.
    let v1 = b"PROXY";
    if input[..input.len().min(v1.len())] == v1[..input.len().min(v1.len())] {
        // A v1 header is one line: judged once it has ended (the parser takes a line cut
        // after a space for a bad one), and at most 107 bytes long.
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            if input.len() >= V1_MAX {
                return Err(ProxyError::Invalid(
                    "a v1 header longer than 107 bytes".into(),
                ));
            }
            return Ok(None);
        };
        let header = ppp::v1::Header::try_from(&input[..=end])
            .map_err(|e| ProxyError::Invalid(e.to_string()))?;
        let addr = match header.addresses {
            ppp::v1::Addresses::Tcp4(a) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            ppp::v1::Addresses::Tcp6(a) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            ppp::v1::Addresses::Unknown => None,
        };
        return Ok(Some((header.header.len(), addr)));
    }
    let header = ppp::v2::Header::try_from(input);
    if header.is_incomplete() {
        return Ok(None);
    }
    let header = header.map_err(|e| ProxyError::Invalid(e.to_string()))?;
    let addr = match (header.command, header.addresses) {
        (ppp::v2::Command::Local, _) => None,
        (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        (ppp::v2::Command::Proxy, _) => None,
    };
    Ok(Some((header.header.len(), addr)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = (addresses.len() + tlvs.len()) as u16;
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    #[test]
    fn v1_names_the_client_and_leaves_what_follows() {
        let input = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let (len, addr) = parse(input).unwrap().unwrap();
        assert_eq!(&input[len..], b"GET / HTTP/1.1\r\n");
        assert_eq!(addr, Some("192.0.2.7:56324".parse().unwrap()));
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n";
        let (len, addr) = parse(six).unwrap().unwrap();
        assert_eq!(len, six.len());
        assert_eq!(addr, Some("[2001:db8::1]:4000".parse().unwrap()));
        // UNKNOWN, 15 bytes and nothing after: complete, and names no one.
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), Some((15, None)));
    }

    #[test]
    fn v2_names_the_client_skips_its_tlvs_and_local_names_no_one() {
        let mut addrs = vec![192, 0, 2, 7, 198, 51, 100, 1];
        addrs.extend_from_slice(&56324u16.to_be_bytes());
        addrs.extend_from_slice(&443u16.to_be_bytes());
        // A NOOP TLV of three bytes.
        let mut input = v2(1, 0x11, &addrs, &[0x04, 0, 3, 0, 0, 0]);
        let header_len = input.len();
        input.extend_from_slice(b"\x16\x03\x01");
        let (len, addr) = parse(&input).unwrap().unwrap();
        assert_eq!(len, header_len);
        assert_eq!(addr, Some("192.0.2.7:56324".parse().unwrap()));
        let local = v2(0, 0x00, &[], &[]);
        assert_eq!(parse(&local).unwrap(), Some((16, None)));
    }

    #[test]
    fn partial_headers_wait_and_bad_ones_are_refused() {
        let whole = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n";
        for cut in 1..whole.len() {
            assert_eq!(parse(&whole[..cut]).ok(), Some(None), "cut at {cut}");
        }
        let v2_whole = v2(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2], &[]);
        for cut in 1..v2_whole.len() {
            assert_eq!(parse(&v2_whole[..cut]).unwrap(), None, "cut at {cut}");
        }
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PROXY TCP4 not-an-address 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 99999 2\r\n",
            b"PROXY SCTP 192.0.2.7 198.51.100.1 1 2\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\x00\x00\x00\x00",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // A line that never ends.
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 100]].concat();
        assert!(matches!(parse(&endless), Err(ProxyError::Invalid(_))));
        // A v2 header whose length is shorter than its addresses.
        let short = v2(1, 0x11, &[1, 2, 3, 4], &[]);
        assert!(matches!(parse(&short), Err(ProxyError::Invalid(_))));
    }
}
