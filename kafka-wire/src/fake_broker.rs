//! Test-only scripted brokers, in process: a [`Connector`] whose every
//! dial is a duplex pipe served by a closure that sees each request
//! ([`Request`]: the port dialed, its api key, version and correlation id)
//! and returns the framed answer ([`answer`], [`api_versions`]) or `None`
//! to close the connection (a dead node). The unit tests of the client,
//! the sender and transactions script their brokers with it; one framing,
//! written once.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Encodable, HeaderVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connector::{BoxTransport, BrokerAddress, ConnectFuture, Connector};

/// One request as it arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    /// The port the client dialed (which fake broker).
    pub(crate) port: u16,
    /// `Err(raw key)` for a key the codec does not know.
    pub(crate) api: Result<ApiKey, i16>,
    pub(crate) version: i16,
    pub(crate) correlation: i32,
}

/// `body` framed as the answer to `req` (size, header, body).
pub(crate) fn answer<R: Encodable + HeaderVersion>(req: &Request, body: R) -> Vec<u8> {
    let mut buf = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(req.correlation)
        .encode(&mut buf, R::header_version(req.version))
        .expect("response header");
    body.encode(&mut buf, req.version).expect("response body");
    let mut out = BytesMut::with_capacity(4 + buf.len());
    out.put_i32(buf.len() as i32);
    out.extend_from_slice(&buf);
    out.to_vec()
}

/// The ApiVersions answer to `req`, advertising `keys` as (api, min, max).
pub(crate) fn api_versions(req: &Request, keys: &[(ApiKey, i16, i16)]) -> Vec<u8> {
    let keys = keys
        .iter()
        .map(|&(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(k as i16)
                .with_min_version(lo)
                .with_max_version(hi)
        })
        .collect();
    answer(req, ApiVersionsResponse::default().with_api_keys(keys))
}

/// What a fake broker does with a request: its framed answer, or `None`
/// to close the connection.
pub(crate) type Script = Arc<dyn Fn(&Request) -> Option<Vec<u8>> + Send + Sync>;

/// Dials `127.0.0.1:<port>` to the fake broker `script` plays; a port
/// `refused` says is refused at once (a node that is down).
#[derive(Clone)]
pub(crate) struct FakeBrokers {
    pub(crate) script: Script,
    pub(crate) refused: Arc<dyn Fn(u16) -> bool + Send + Sync>,
}

impl std::fmt::Debug for FakeBrokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeBrokers")
    }
}

impl FakeBrokers {
    /// Every port served by `script`.
    pub(crate) fn new(
        script: impl Fn(&Request) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        FakeBrokers {
            script: Arc::new(script),
            refused: Arc::new(|_| false),
        }
    }
}

impl Connector for FakeBrokers {
    fn connect<'a>(&'a self, addr: &'a BrokerAddress, _timeout: Duration) -> ConnectFuture<'a> {
        Box::pin(async move {
            if (self.refused)(addr.port) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "scripted down",
                ));
            }
            let (client, server) = tokio::io::duplex(1 << 16);
            tokio::spawn(serve(self.script.clone(), addr.port, server));
            Ok(Box::new(client) as BoxTransport)
        })
    }
}

/// Read framed requests off `io` and write `script`'s answers until it
/// says close or the client hangs up.
async fn serve(script: Script, port: u16, mut io: tokio::io::DuplexStream) {
    loop {
        let mut len = [0u8; 4];
        if io.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        if io.read_exact(&mut body).await.is_err() {
            return;
        }
        let raw = i16::from_be_bytes([body[0], body[1]]);
        let req = Request {
            port,
            api: ApiKey::try_from(raw).map_err(|_| raw),
            version: i16::from_be_bytes([body[2], body[3]]),
            correlation: i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        };
        let Some(reply) = script(&req) else {
            return;
        };
        if io.write_all(&reply).await.is_err() {
            return;
        }
    }
}
