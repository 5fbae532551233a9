//! A broker that answers with a huge `throttle_time_ms` (KIP-219) must not
//! hang the requests queued behind it: a request's deadline starts when it
//! is queued, as Java's `request.timeout.ms` expires a request never sent
//! (DESIGN.md invariants 3 and 53).
//!
//! The broker here is an in-process fake (a `TcpListener` that speaks just
//! enough of the protocol): no real broker answers `i32::MAX`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use kafka_protocol::protocol::HeaderVersion;
use kafka_wire::messages::api_versions_response::ApiVersion;
use kafka_wire::messages::metadata_response::MetadataResponseBroker;
use kafka_wire::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, DescribeClusterRequest, DescribeClusterResponse,
    MetadataRequest, MetadataResponse,
};
use kafka_wire::{Client, ClientConfig, Encodable, Error, Lane, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Encode `body` as the response to `corr` at `version`, framed.
fn frame<R: Encodable + HeaderVersion>(corr: i32, body: &R, version: i16, api: ApiKey) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i32(corr);
    // ApiVersions answers with header v0 whatever its version (KIP-511).
    if api != ApiKey::ApiVersions && R::header_version(version) >= 1 {
        b.put_u8(0); // no tagged fields
    }
    body.encode(&mut b, version).expect("encode");
    let mut out = (b.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&b);
    out
}

/// One connection of the fake broker: ApiVersions and Metadata answered
/// plainly, DescribeCluster answered with `throttle_time_ms = i32::MAX`.
/// Counts the Metadata requests that reach it after that answer.
async fn serve(mut s: TcpStream, port: u16, after_throttle: Arc<AtomicUsize>) {
    let mut throttled = false;
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut req = vec![0u8; i32::from_be_bytes(len) as usize];
        if s.read_exact(&mut req).await.is_err() {
            return;
        }
        let api = ApiKey::try_from(i16::from_be_bytes([req[0], req[1]])).expect("api key");
        let version = i16::from_be_bytes([req[2], req[3]]);
        let corr = i32::from_be_bytes([req[4], req[5], req[6], req[7]]);
        let out = match api {
            ApiKey::ApiVersions => {
                let keys = ApiKey::iter()
                    .map(|k| {
                        let r = k.valid_versions();
                        ApiVersion::default()
                            .with_api_key(k as i16)
                            .with_min_version(r.min)
                            .with_max_version(r.max)
                    })
                    .collect();
                let resp = ApiVersionsResponse::default().with_api_keys(keys);
                frame(corr, &resp, version, api)
            }
            ApiKey::Metadata => {
                if throttled {
                    after_throttle.fetch_add(1, Ordering::SeqCst);
                }
                let broker = MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(port as i32);
                let resp = MetadataResponse::default()
                    .with_brokers(vec![broker])
                    .with_controller_id(BrokerId(1));
                frame(corr, &resp, version, api)
            }
            ApiKey::DescribeCluster => {
                throttled = true;
                let resp = DescribeClusterResponse::default().with_throttle_time_ms(i32::MAX);
                frame(corr, &resp, version, api)
            }
            other => panic!("the fake broker does not serve {other:?}"),
        };
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_huge_throttle_times_the_next_request_out_within_the_request_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let after_throttle = Arc::new(AtomicUsize::new(0));
    let counter = after_throttle.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s, port, counter.clone()));
        }
    });

    let request_timeout = Duration::from_secs(1);
    let config = ClientConfig::builder()
        .set("bootstrap.servers", &format!("127.0.0.1:{port}"))
        .unwrap()
        .request_timeout(request_timeout)
        .build()
        .unwrap();
    let client = Client::connect(config).await.expect("connect to the fake");

    let throttled = client
        .send_to(
            1,
            Lane::Control,
            &DescribeClusterRequest::default(),
            Duration::ZERO,
        )
        .await
        .expect("the throttled answer itself is a success");
    assert_eq!(throttled.throttle_time_ms, i32::MAX);

    // Before the fix this waited ~24 days; the outer bound makes it fail.
    let started = Instant::now();
    let next = tokio::time::timeout(
        Duration::from_secs(20),
        client.send_to(
            1,
            Lane::Control,
            &MetadataRequest::default(),
            Duration::ZERO,
        ),
    )
    .await
    .expect("the request behind a huge throttle must not hang");
    let took = started.elapsed();
    assert!(
        matches!(
            next,
            Err(Error::Timeout {
                api: ApiKey::Metadata,
                ..
            })
        ),
        "{next:?}"
    );
    assert!(
        took < request_timeout + Duration::from_secs(4),
        "timed out after {took:?}, request.timeout.ms is {request_timeout:?}"
    );
    assert_eq!(
        after_throttle.load(Ordering::SeqCst),
        0,
        "nothing is written to a muted connection"
    );
}
