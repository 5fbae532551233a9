//! `ShareConsumer::assign`: the seam a share group member feeds.

use std::time::Duration;

use consumer_core::TopicPartition;

use super::{poll_until, share_consumer, share_group, subscribe};

/// The broker answers ShareFetch for a share-partition only once the
/// group coordinator has assigned it to some member (that initializes
/// its state; before, Kafka 4.4 answers UNKNOWN_SERVER_ERROR): the reason
/// the share member heartbeats. ShareFetch itself checks no membership.
#[tokio::test]
async fn assign_alone_fetches_once_a_member_has_initialized_the_partition() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::numbered_topic(&b, &admin, "share-seam", 1, 5, |i| format!("k{i}")).await;
    let group = share_group(&admin, "share-seam").await;
    let mut fetcher = share_consumer(&b, &group, &[]).await;
    fetcher
        .assign(&[TopicPartition::new(&topic, 0)])
        .await
        .unwrap();
    assert_eq!(fetcher.assignment(), [TopicPartition::new(&topic, 0)]);
    let early = poll_until(&mut fetcher, Duration::from_secs(3), |_, r| !r.is_empty()).await;
    assert!(
        !early,
        "no member yet: the share-partition is not initialized"
    );

    let mut member = share_consumer(&b, &group, &[]).await;
    if subscribe(&mut member, &[&topic]).await.is_none() {
        return;
    }
    let mut got = 0;
    let all = poll_until(&mut fetcher, Duration::from_secs(60), |_, r| {
        got += r.len();
        got == 5
    })
    .await;
    assert!(all, "{got} of 5");
    fetcher.close().await.unwrap();
    member.close().await.unwrap();
}
