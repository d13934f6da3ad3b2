//! The PROXY protocol (haproxy's, v1 text and v2 binary) on connections from
//! a trusted load balancer (`[sftp] proxy_protocol_from`): the header says
//! which client the connection is for, so per-source limits, login
//! penalties and logs see the merchant's address, not the balancer's.
//!
//! The header is read exactly, never a byte past it (the SSH banner follows
//! at once), within a time limit, and bounded: v1 is at most 107 bytes, v2
//! at most 16 + 512 here (addresses and a few TLVs).

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;

const V1_PREFIX: &[u8] = b"PROXY ";
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_MAX_PAYLOAD: usize = 512;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no PROXY protocol header within {0:?}")]
    Timeout(Duration),
    #[error("the connection ended inside the PROXY protocol header")]
    Closed,
    #[error("not a PROXY protocol header: {0}")]
    Invalid(String),
}

/// Reads the PROXY header at the start of `stream`: `Some(client)` for a
/// proxied TCP connection, `None` for the balancer's own (a health check:
/// v2 LOCAL, v1 UNKNOWN).
pub(crate) async fn read_header<R: AsyncReadExt + Unpin>(
    stream: &mut R,
    limit: Duration,
) -> Result<Option<SocketAddr>, ProxyError> {
    let bytes = tokio::time::timeout(limit, read_exactly_the_header(stream))
        .await
        .map_err(|_| ProxyError::Timeout(limit))??;
    parse(&bytes)
}

async fn read_exactly_the_header<R: AsyncReadExt + Unpin>(stream: &mut R) -> Result<Vec<u8>, ProxyError> {
    let closed = |_| ProxyError::Closed;
    // The shortest header of either version is 15 bytes (`PROXY UNKNOWN\r\n`).
    let mut bytes = vec![0u8; 15];
    stream.read_exact(&mut bytes).await.map_err(closed)?;
    if bytes.starts_with(V1_PREFIX) {
        while !bytes.ends_with(b"\r\n") {
            if bytes.len() >= V1_MAX {
                return Err(ProxyError::Invalid(format!("a v1 header longer than {V1_MAX} bytes")));
            }
            bytes.push(stream.read_u8().await.map_err(closed)?);
        }
        return Ok(bytes);
    }
    if !bytes.starts_with(V2_SIGNATURE) {
        return Err(ProxyError::Invalid("neither the v1 nor the v2 signature".into()));
    }
    bytes.push(stream.read_u8().await.map_err(closed)?);
    let payload = u16::from_be_bytes([bytes[14], bytes[15]]) as usize;
    if payload > V2_MAX_PAYLOAD {
        return Err(ProxyError::Invalid(format!("a v2 header of {payload} bytes (at most {V2_MAX_PAYLOAD})")));
    }
    let mut rest = vec![0u8; payload];
    stream.read_exact(&mut rest).await.map_err(closed)?;
    bytes.extend_from_slice(&rest);
    Ok(bytes)
}

fn parse(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    use ppp::{v1, v2, HeaderResult};
    let invalid = |e: &dyn std::fmt::Display| ProxyError::Invalid(e.to_string());
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(header)) => Ok(match header.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(header)) => match (header.command, header.addresses) {
            (v2::Command::Local, _) => Ok(None),
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                Ok(Some(SocketAddr::from((a.source_address, a.source_port))))
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                Ok(Some(SocketAddr::from((a.source_address, a.source_port))))
            }
            (v2::Command::Proxy, other) => Err(ProxyError::Invalid(format!("a v2 header for {other:?}"))),
        },
        HeaderResult::V1(Err(e)) => Err(invalid(&e)),
        HeaderResult::V2(Err(e)) => Err(invalid(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(input: &[u8]) -> (Result<Option<SocketAddr>, ProxyError>, Vec<u8>) {
        let mut stream = std::io::Cursor::new(input.to_vec());
        let header = read_header(&mut stream, Duration::from_secs(1)).await;
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        (header, rest)
    }

    #[tokio::test]
    async fn v1_gives_the_client_and_leaves_the_ssh_banner_unread() {
        let (client, rest) = read(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 22\r\nSSH-2.0-OpenSSH_9.2\r\n").await;
        assert_eq!(client.unwrap(), Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(rest, b"SSH-2.0-OpenSSH_9.2\r\n");
        let (client, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 22\r\n").await;
        assert_eq!(client.unwrap(), Some("[2001:db8::7]:4000".parse().unwrap()));
        let (client, rest) = read(b"PROXY UNKNOWN\r\nSSH-2.0-x\r\n").await;
        assert_eq!(client.unwrap(), None, "a health check");
        assert_eq!(rest, b"SSH-2.0-x\r\n");
    }

    #[tokio::test]
    async fn v2_gives_the_client_and_leaves_the_ssh_banner_unread() {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend_from_slice(&[0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0, 22]);
        header.extend_from_slice(b"SSH-2.0-x\r\n");
        let (client, rest) = read(&header).await;
        assert_eq!(client.unwrap(), Some("198.51.100.9:8080".parse().unwrap()));
        assert_eq!(rest, b"SSH-2.0-x\r\n");
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(read(&local).await.0.unwrap(), None, "LOCAL: the balancer's own connection");
    }

    #[tokio::test]
    async fn bad_headers_are_refused_within_their_bounds() {
        assert!(matches!(read(b"SSH-2.0-OpenSSH_9.2\r\n").await.0, Err(ProxyError::Invalid(_))));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert!(matches!(read(long.as_bytes()).await.0, Err(ProxyError::Invalid(_))));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(read(&huge).await.0, Err(ProxyError::Invalid(_))));
        assert!(matches!(read(b"PROXY TCP4 1.2.3.4").await.0, Err(ProxyError::Closed)));
        assert!(matches!(read(b"PROXY TCP4 999.2.3.4 1.2.3.4 1 2\r\n").await.0, Err(ProxyError::Invalid(_))));
    }

    #[tokio::test]
    async fn a_silent_balancer_times_out() {
        let (_balancer, mut server) = tokio::io::duplex(64);
        let header = read_header(&mut server, Duration::from_millis(50)).await;
        assert!(matches!(header, Err(ProxyError::Timeout(_))));
    }
}
