//! How broker connections are dialed: the [`Connector`] seam.
//!
//! Brokers advertise their own addresses, so a test cannot intercept traffic
//! by proxying only the bootstrap port. Every connection this crate opens goes
//! through one `Connector`; a fault proxy implements it to route each broker
//! address through itself. TLS and SASL are layered on top of whatever stream
//! the connector returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream to a broker.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// A boxed [`Transport`].
pub type BoxTransport = Box<dyn Transport>;

/// A boxed future returned by [`Connector::connect`].
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<BoxTransport>> + Send + 'a>>;

/// A broker address as metadata advertises it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
}

impl BrokerAddress {
    /// Parse `host:port` (IPv6 as `[::1]:9092`).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (host, port) = s.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return None;
        }
        Some(Self {
            host: host.to_string(),
            port: port.parse().ok()?,
        })
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Opens the raw byte stream to a broker.
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// Connect to `addr`. `timeout` bounds the whole dial.
    fn connect<'a>(&'a self, addr: &'a BrokerAddress, timeout: Duration) -> ConnectFuture<'a>;
}

/// Plain TCP with `TCP_NODELAY`: the default connector.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, addr: &'a BrokerAddress, timeout: Duration) -> ConnectFuture<'a> {
        Box::pin(async move {
            let stream =
                tokio::time::timeout(timeout, TcpStream::connect((addr.host.as_str(), addr.port)))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("connect timed out after {timeout:?}"),
                        )
                    })??;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxTransport)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_forms() {
        assert_eq!(
            BrokerAddress::parse("127.0.0.1:9092"),
            Some(BrokerAddress {
                host: "127.0.0.1".into(),
                port: 9092
            })
        );
        assert_eq!(BrokerAddress::parse("[::1]:9093").unwrap().host, "::1");
        assert_eq!(
            BrokerAddress::parse("[::1]:9093").unwrap().to_string(),
            "[::1]:9093"
        );
        assert_eq!(BrokerAddress::parse("nohost"), None);
        assert_eq!(BrokerAddress::parse(":9092"), None);
        assert_eq!(BrokerAddress::parse("h:99999"), None);
    }
}
