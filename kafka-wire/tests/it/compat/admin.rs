//! Admin calls against the real broker.

use std::time::Duration;

use kafka_wire::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_wire::messages::{GroupId, OffsetCommitRequest, TopicName};
use kafka_wire::CoordinatorKind;
use kafka_wire::{
    ConfigResource, KafkaCode, Lane, NewTopic, OffsetSpec, Producer, ProducerRecord, StrBytes,
};

#[tokio::test]
async fn topics_configs_and_offsets() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let topic = testkit::create_topic_with(
        &client,
        NewTopic::new(testkit::unique_name("admin"), 3).config("retention.ms", "3600000"),
    )
    .await;
    assert_eq!(client.metadata().partition_count(&topic), Some(3));

    // Creating it again names the topic and the code.
    let err = client
        .create_topic(NewTopic::new(&topic, 3))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(KafkaCode::TopicAlreadyExists));
    assert!(err.to_string().contains(&topic));

    let res = ConfigResource::Topic(topic.clone());
    let retention = |entries: &[kafka_wire::ConfigEntry]| {
        entries
            .iter()
            .find(|c| c.name == "retention.ms")
            .cloned()
            .unwrap()
    };
    let before = retention(&client.describe_configs(&res).await.unwrap());
    assert_eq!(before.value.as_deref(), Some("3600000"));
    assert!(before.is_override);
    client
        .alter_configs(&res, &[("retention.ms", Some("7200000"))])
        .await
        .unwrap();
    // Config changes propagate through the controller: eventually visible.
    let seen = std::cell::RefCell::new(None);
    let changed = testkit::eventually_async(Duration::from_secs(15), || async {
        let after = retention(&client.describe_configs(&res).await.unwrap());
        let changed = after.value.as_deref() == Some("7200000");
        *seen.borrow_mut() = after.value;
        changed
    })
    .await;
    assert!(changed, "still {:?}", seen.borrow());

    // Offsets: empty, then after 5 records on partition 1.
    assert_eq!(
        client
            .list_offsets(&topic, OffsetSpec::Latest)
            .await
            .unwrap(),
        vec![(0, 0), (1, 0), (2, 0)]
    );
    let producer = Producer::with_client(client.clone(), testkit::producer_config(&broker));
    for i in 0..5 {
        producer
            .send(
                ProducerRecord::new(&topic)
                    .partition(1)
                    .value("x")
                    .timestamp(1_000 + i),
            )
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    let latest = client
        .list_offsets(&topic, OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(latest[1], (1, 5));
    let earliest = client
        .list_offsets(&topic, OffsetSpec::Earliest)
        .await
        .unwrap();
    assert_eq!(earliest[1], (1, 0));
    let by_time = client
        .list_offsets(&topic, OffsetSpec::Timestamp(1_003))
        .await
        .unwrap();
    assert_eq!(by_time[1], (1, 3));

    client.delete_topic(&topic).await.unwrap();
    assert!(!client.metadata().topics.contains_key(&topic));
}

#[tokio::test]
async fn create_partitions_grows_a_topic_and_refusals_carry_the_broker_message() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let topic = testkit::create_topic(&client, "grow", 1).await;

    client.create_partitions(&topic, 3).await.unwrap();
    assert_eq!(
        client.metadata().partition_count(&topic),
        Some(3),
        "metadata shows the new count when the call returns"
    );
    // The new partitions take records at once.
    assert_eq!(
        client
            .list_offsets(&topic, OffsetSpec::Latest)
            .await
            .unwrap(),
        vec![(0, 0), (1, 0), (2, 0)]
    );

    // Shrinking is refused: the broker's code and its own explanation.
    let err = client.create_partitions(&topic, 2).await.unwrap_err();
    assert_eq!(err.code(), Some(KafkaCode::InvalidPartitions));
    let kafka_wire::Error::Refused {
        resource, message, ..
    } = &err
    else {
        panic!("expected Error::Refused, got {err:?}")
    };
    assert_eq!(resource, &topic);
    let message = message.as_deref().unwrap_or_default();
    assert!(message.contains('3'), "broker message: {message:?}");
    assert!(err.to_string().contains(message), "{err}");

    let err = client
        .create_partitions(&testkit::unique_name("missing"), 2)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(KafkaCode::UnknownTopicOrPartition));
    client.delete_topic(&topic).await.unwrap();
}

#[tokio::test]
async fn describe_cluster_names_the_single_broker() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let md = client.describe_cluster().await.unwrap();
    assert_eq!(md.brokers.len(), 1);
    assert!(md.controller_id >= -1);
    assert!(md.cluster_id.is_some());
}

#[tokio::test]
async fn groups_list_describe_delete() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let topic = testkit::create_topic(&client, "admin-groups", 1).await;
    let group = testkit::unique_name("admin-group");
    // A simple (memberless) commit creates an Empty group with offsets.
    let coordinator = client
        .find_coordinator(CoordinatorKind::Group, &group)
        .await
        .unwrap();
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.clone())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.clone())))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(0)])]);
    // On a fresh broker the offsets topic may still be loading: retry those codes.
    let code = std::cell::Cell::new(-1);
    testkit::eventually_async(Duration::from_secs(10), || async {
        let resp = client
            .send_to(coordinator, Lane::Control, &commit, Duration::ZERO)
            .await
            .unwrap();
        code.set(resp.topics[0].partitions[0].error_code);
        !KafkaCode::try_from_code(code.get()).is_some_and(|c| c.is_retriable())
    })
    .await;
    assert_eq!(code.get(), 0);

    let groups = client.list_groups().await.unwrap();
    assert!(groups.iter().any(|g| g.group_id == group), "{groups:?}");
    let d = client.describe_group(&group).await.unwrap();
    assert_eq!(d.state, "Empty");
    assert!(d.members.is_empty());
    client.delete_group(&group).await.unwrap();
    let groups = client.list_groups().await.unwrap();
    assert!(!groups.iter().any(|g| g.group_id == group));
}

/// A consumer group's configs (KIP-848, Kafka 4.0+): the session timeout a
/// KIP-848 member is held to, as the broker sets it (the harness broker's
/// `group.consumer.session.timeout.ms=6000`). Kafka 3.9 refuses the
/// resource type with an error naming it.
#[tokio::test]
async fn a_groups_configs_give_its_session_timeout() {
    let b = testkit::require_broker!();
    let client = testkit::client(&b).await;
    let group = testkit::unique_name("group-configs");
    match client
        .describe_configs(&ConfigResource::Group(group.clone()))
        .await
    {
        Ok(entries) => {
            let session = entries
                .iter()
                .find(|c| c.name == "consumer.session.timeout.ms")
                .and_then(|c| c.value.clone());
            assert_eq!(session.as_deref(), Some("6000"), "{entries:?}");
        }
        Err(e) => assert!(
            e.to_string().contains(&group),
            "a refusal names the group: {e}"
        ),
    }
}
