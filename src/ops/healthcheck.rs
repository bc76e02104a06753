//! The `healthcheck` subcommand: asks a running daemon's HTTP endpoint for `/health` (or
//! `/ready`), so a container image needs no `curl` for its `HEALTHCHECK`. It runs in its own
//! short-lived process, never in the daemon, so a blocking socket with a deadline is right.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Why the daemon is not healthy, as the subcommand prints it.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    /// Nothing answered at the address within the deadline.
    #[error("nothing answered on {address}: {source}")]
    Unreachable {
        /// Where it asked.
        address: SocketAddr,
        /// The socket's error.
        source: std::io::Error,
    },
    /// The endpoint answered something other than 200.
    #[error("{path} on {address} answered: {answer}")]
    Answered {
        /// Where it asked.
        address: SocketAddr,
        /// `/health` or `/ready`.
        path: &'static str,
        /// The status line and the body's first line.
        answer: String,
    },
}

/// The address to ask: the daemon's `http.address`, on loopback when it listens on every
/// interface (`0.0.0.0`, `::`), as it does in a container.
pub fn target(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), address.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), address.port())
        }
        _ => address,
    }
}

/// Asks `path` (`/health` or `/ready`) of the daemon listening on `address`, within
/// `timeout` for connecting and again for the answer; `Ok` when it answered 200.
pub fn probe(address: SocketAddr, path: &'static str, timeout: Duration) -> Result<(), Unhealthy> {
    let address = target(address);
    let unreachable = |source| Unhealthy::Unreachable { address, source };
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(unreachable)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(unreachable)?;
    let mut answer = Vec::new();
    // The answer is short; a cap keeps a stranger on the port from feeding us forever.
    stream
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .map_err(unreachable)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        return Ok(());
    }
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.lines().next().unwrap_or_default())
        .unwrap_or_default();
    Err(Unhealthy::Answered {
        address,
        path,
        answer: format!("{status} {body}").trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_address_is_asked_on_loopback() {
        let any: SocketAddr = "0.0.0.0:9187".parse().expect("address");
        assert_eq!(target(any).to_string(), "127.0.0.1:9187");
        let any6: SocketAddr = "[::]:9187".parse().expect("address");
        assert_eq!(target(any6).to_string(), "[::1]:9187");
        let given: SocketAddr = "10.1.2.3:80".parse().expect("address");
        assert_eq!(target(given), given);
    }

    #[test]
    fn nothing_listening_is_unhealthy_naming_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let error = probe(address, "/health", Duration::from_secs(1)).expect_err("unhealthy");
        assert!(error.to_string().contains(&address.to_string()), "{error}");
    }
}
