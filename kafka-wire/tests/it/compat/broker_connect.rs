//! Against the real broker from `cargo xtask broker up`: connect, negotiate
//! versions, read metadata; TLS and every SASL mechanism on the harness's
//! listeners; a producer's large batches over SASL_SSL.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_wire::messages::ApiKey;
use kafka_wire::{BoxTransport, ConnectFuture};
use kafka_wire::{
    BrokerAddress, Client, ClientConfig, Connector, Error, Lane, Producer, ProducerRecord,
    SaslConfig, SecurityProtocol, TcpConnector, TlsConfig, UnsecuredJwt,
};

fn tls(b: &testkit::BrokerEnv) -> TlsConfig {
    TlsConfig {
        ca_pem: b.ca_pem.clone(),
        ..TlsConfig::default()
    }
}

#[tokio::test]
async fn api_versions_and_metadata_against_real_broker() {
    let broker = testkit::require_broker!();
    let config = ClientConfig::builder()
        .set("bootstrap.servers", &broker.bootstrap)
        .unwrap()
        .build()
        .unwrap();
    let client = Client::connect(config).await.expect("connect");
    let md = client.metadata();
    assert_eq!(md.brokers.len(), 1, "single-node harness: {:?}", md.brokers);
    let b = md.brokers.values().next().unwrap();
    assert_eq!(b.id, 1, "the harness runs node.id=1");
    let port: u16 = broker
        .bootstrap
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(b.address.port, port, "advertised PLAINTEXT port");
    assert!(md.cluster_id.is_some());

    let conn = client.connection(1, Lane::Control).await.unwrap();
    for api in [
        ApiKey::Fetch,
        ApiKey::Produce,
        ApiKey::JoinGroup,
        ApiKey::OffsetCommit,
    ] {
        let v = conn.version(api).unwrap_or_else(|e| panic!("{api:?}: {e}"));
        assert!(v >= 0);
    }
    // Kafka 3.1+ serves Fetch v17 (our ceiling: topic ids, KIP-516, and
    // leader hints, KIP-951) and more.
    assert_eq!(conn.version(ApiKey::Fetch).unwrap(), 17);
}

#[tokio::test]
async fn lanes_are_separate_connections() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let a = client.connection(1, Lane::Fetch).await.unwrap();
    let b = client.connection(1, Lane::Group).await.unwrap();
    let a2 = client.connection(1, Lane::Fetch).await.unwrap();
    assert!(!a.is_closed() && !b.is_closed() && !a2.is_closed());
    assert_eq!(format!("{a:?}"), format!("{a2:?}"));
}

#[tokio::test]
async fn ssl_listener_with_ca_verification() {
    let broker = testkit::require_broker!();
    let Some(ssl) = broker.bootstrap_ssl.clone() else {
        return assert!(!testkit::broker_required(), "harness has no SSL listener");
    };
    let config = ClientConfig::builder()
        .bootstrap(&ssl)
        .unwrap()
        .security_protocol(SecurityProtocol::Ssl)
        .tls(tls(&broker))
        .build()
        .unwrap();
    let client = Client::connect(config).await.expect("TLS connect");
    assert!(!client.metadata().brokers.is_empty());
}

#[tokio::test]
async fn mtls_client_certificate_is_accepted() {
    let broker = testkit::require_broker!();
    let Some(ssl) = broker.bootstrap_ssl.clone() else {
        return;
    };
    let config = ClientConfig::builder()
        .bootstrap(&ssl)
        .unwrap()
        .security_protocol(SecurityProtocol::Ssl)
        .tls(TlsConfig {
            ca_pem: broker.ca_pem.clone(),
            client_cert_pem: broker.client_cert_pem.clone(),
            client_key_pem: broker.client_key_pem.clone(),
        })
        .build()
        .unwrap();
    Client::connect(config).await.expect("mTLS connect");
}

/// Dials the real broker whatever host name the client asks for, so TLS
/// verification sees a name the certificate does not carry.
#[derive(Debug)]
struct RedirectTo(BrokerAddress);

impl Connector for RedirectTo {
    fn connect<'a>(&'a self, _addr: &'a BrokerAddress, timeout: Duration) -> ConnectFuture<'a> {
        Box::pin(async move {
            let s: BoxTransport = TcpConnector.connect(&self.0, timeout).await?;
            Ok(s)
        })
    }
}

#[tokio::test]
async fn hostname_mismatch_fails_before_sasl() {
    let broker = testkit::require_broker!();
    let Some(sasl_ssl) = broker.bootstrap_sasl_ssl.clone() else {
        return;
    };
    let real = BrokerAddress::parse(&sasl_ssl).unwrap();
    let config = ClientConfig::builder()
        .bootstrap(&format!("wrong-host.invalid:{}", real.port))
        .unwrap()
        .security_protocol(SecurityProtocol::SaslSsl)
        .tls(tls(&broker))
        .sasl(SaslConfig::ScramSha256 {
            username: broker.sasl_user.clone().unwrap(),
            password: broker.sasl_password.clone().unwrap(),
        })
        .connector(Arc::new(RedirectTo(real)))
        .build()
        .unwrap();
    let err = Client::connect(config).await.unwrap_err();
    // A TLS error, not an auth error: the handshake failed before SASL began.
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

async fn sasl_connect(broker: &testkit::BrokerEnv, sasl: SaslConfig) -> Result<Client, Error> {
    let config = ClientConfig::builder()
        .bootstrap(broker.bootstrap_sasl_ssl.as_deref().unwrap())
        .unwrap()
        .security_protocol(SecurityProtocol::SaslSsl)
        .tls(tls(broker))
        .sasl(sasl)
        .build()
        .unwrap();
    Client::connect(config).await
}

#[tokio::test]
async fn sasl_ssl_every_mechanism_authenticates() {
    let broker = testkit::require_broker!();
    if broker.bootstrap_sasl_ssl.is_none() {
        return;
    }
    let (u, p) = (
        broker.sasl_user.clone().unwrap(),
        broker.sasl_password.clone().unwrap(),
    );
    let mechanisms = [
        SaslConfig::Plain {
            username: u.clone(),
            password: p.clone(),
        },
        SaslConfig::ScramSha256 {
            username: u.clone(),
            password: p.clone(),
        },
        SaslConfig::ScramSha512 {
            username: u.clone(),
            password: p.clone(),
        },
        SaslConfig::OAuthBearer {
            provider: Arc::new(UnsecuredJwt {
                principal: u.clone(),
                lifetime: Duration::from_secs(3600),
            }),
        },
    ];
    for sasl in mechanisms {
        let name = sasl.mechanism_name();
        let client = sasl_connect(&broker, sasl)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!client.metadata().brokers.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn wrong_password_fails_fast_with_auth_error() {
    let broker = testkit::require_broker!();
    if broker.bootstrap_sasl_ssl.is_none() {
        return;
    }
    for sasl in [
        SaslConfig::ScramSha256 {
            username: broker.sasl_user.clone().unwrap(),
            password: "wrong".into(),
        },
        SaslConfig::ScramSha512 {
            username: broker.sasl_user.clone().unwrap(),
            password: "wrong".into(),
        },
    ] {
        let name = sasl.mechanism_name();
        let started = Instant::now();
        let err = sasl_connect(&broker, sasl).await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, Error::Auth { .. }), "{name}: {err:?}");
        assert!(!err.is_retriable(), "auth failures are fatal");
        let text = err.to_string();
        assert!(text.contains(name), "names the mechanism: {text}");
        assert!(text.contains("bootstrap"), "names the broker: {text}");
        assert!(took < Duration::from_secs(5), "{name} took {took:?}");
    }
}

fn plaintext_to(bootstrap: &str) -> ClientConfig {
    ClientConfig::builder()
        .set("bootstrap.servers", bootstrap)
        .unwrap()
        .set("socket.connection.setup.timeout.ms", "3000")
        .unwrap()
        .set("request.timeout.ms", "3000")
        .unwrap()
        .build()
        .unwrap()
}

#[tokio::test]
async fn plaintext_against_the_tls_port_says_the_server_speaks_tls() {
    let broker = testkit::require_broker!();
    let Some(ssl) = broker.bootstrap_ssl.clone() else {
        return assert!(!testkit::broker_required(), "harness has no SSL listener");
    };
    let started = Instant::now();
    let err = Client::connect(plaintext_to(&ssl))
        .await
        .expect_err("plaintext against a TLS listener must fail");
    let text = err.to_string();
    assert!(text.contains("speaking TLS"), "{text}");
    assert!(text.contains("security.protocol=SSL"), "{text}");
    assert!(text.contains(&ssl), "names the server: {text}");
    assert!(!text.contains("frame length"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_http_server_is_named_as_not_a_kafka_broker() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A tiny HTTP server: reads the request, answers 400, closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            // A short read is fine: any bytes of the request will do.
            let mut buf = Vec::with_capacity(1024);
            let _ = s.read_buf(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let err = Client::connect(plaintext_to(&addr))
        .await
        .expect_err("an HTTP server is not a broker");
    let text = err.to_string();
    assert!(text.contains("not a Kafka broker"), "{text}");
    assert!(text.contains("HTTP/1.1 400 Bad Request"), "{text}");
    assert!(text.contains(&addr), "names the server: {text}");
    assert!(!text.contains("frame length"), "{text}");
}

/// A Produce request's batches are written as segments of the frame with
/// vectored writes (`segments.rs`); over TLS they go through rustls's
/// writer. Batches over 1 KiB to several partitions in one request, then
/// every record read back whole over the same connection.
#[tokio::test]
async fn a_producer_over_sasl_ssl_writes_large_batches_that_read_back_whole() {
    let broker = testkit::require_broker!();
    if broker.bootstrap_sasl_ssl.is_none() {
        return assert!(
            !testkit::broker_required(),
            "harness has no SASL_SSL listener"
        );
    }
    let sasl = SaslConfig::Plain {
        username: broker.sasl_user.clone().unwrap(),
        password: broker.sasl_password.clone().unwrap(),
    };
    let client = sasl_connect(&broker, sasl).await.expect("SASL_SSL connect");
    let t = testkit::create_topic(&client, "tls-produce", 3).await;
    let producer = Producer::with_client(
        client.clone(),
        testkit::producer_builder(&broker)
            .linger(Duration::from_millis(20))
            .build()
            .unwrap(),
    );
    let value = |i: u32| format!("{i:08}").repeat(128).into_bytes(); // 1 KiB
    let mut deliveries = Vec::new();
    for i in 0..3_000u32 {
        let rec = ProducerRecord::new(&t)
            .partition((i % 3) as i32)
            .value(value(i));
        deliveries.push(producer.send(rec).await.unwrap());
    }
    producer.flush().await.unwrap();
    for d in deliveries {
        d.await.expect("delivered over SASL_SSL");
    }
    for p in 0..3 {
        let got = common::fetch_all(&client, &t, p, 1_000).await;
        assert_eq!(got.len(), 1_000, "partition {p}");
        for (n, r) in got.iter().enumerate() {
            let i = n as u32 * 3 + p as u32;
            assert_eq!(r.value.as_deref(), Some(&value(i)[..]), "p{p} offset {n}");
        }
    }
    producer.close().await;
}
