//! Admin calls the other crates, the lab and the tests use.
//!
//! Today: create and delete topics. Each waits until metadata agrees, so a
//! caller can produce to a topic as soon as `create_topic` returns.

use std::time::Duration;

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, DeleteTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use crate::client::{Client, Lane};
use crate::error::{Error, KafkaCode, Result};

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    /// -1: the broker's `default.replication.factor`.
    pub replication_factor: i16,
    /// Topic configs, e.g. `("cleanup.policy", "compact")`.
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor: -1,
            configs: Vec::new(),
        }
    }

    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((key.into(), value.into()));
        self
    }
}

/// A topic-scoped error code as an [`Error::Broker`] naming the topic.
fn check_topic_code(api: ApiKey, code: i16, topic: &str) -> Result<()> {
    match KafkaCode::try_from_code(code) {
        None => Ok(()),
        Some(code) => Err(Error::Broker {
            api,
            code,
            topic: Some(topic.to_string()),
            partition: None,
        }),
    }
}

/// How long create/delete wait for metadata to agree.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// Create a topic and wait until every partition has a leader.
    ///
    /// # Errors
    /// [`Error::Broker`] with the broker's code (TOPIC_ALREADY_EXISTS,
    /// INVALID_REPLICATION_FACTOR, …), or a timeout waiting for leaders.
    ///
    /// # Cancel safety
    /// Not cancel safe in effect: the topic may be created even if the
    /// future is dropped.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(PROPAGATION_TIMEOUT.as_millis() as i32)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.name.clone())))
                .with_num_partitions(topic.partitions)
                .with_replication_factor(topic.replication_factor)
                .with_configs(
                    topic
                        .configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.clone()))
                                .with_value(Some(StrBytes::from_string(v.clone())))
                        })
                        .collect(),
                )]);
        let conn = self.any_connection(Lane::Control).await?;
        let resp = conn
            .send(&req, self.config().request_timeout, PROPAGATION_TIMEOUT)
            .await?;
        for t in &resp.topics {
            check_topic_code(ApiKey::CreateTopics, t.error_code, &topic.name)?;
        }
        self.wait_for_topic(&topic.name, topic.partitions as usize)
            .await
    }

    async fn wait_for_topic(&self, name: &str, partitions: usize) -> Result<()> {
        let deadline = Instant::now() + PROPAGATION_TIMEOUT;
        loop {
            let md = self.refresh_metadata(Some(&[name.to_string()])).await?;
            let ready = md.topics.get(name).is_some_and(|t| {
                t.partitions.len() == partitions
                    && t.partitions
                        .iter()
                        .all(|p| p.leader >= 0 && p.error.is_none())
            });
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Metadata(format!(
                    "topic {name} has no leader for every partition after {PROPAGATION_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Delete a topic. Deleting a topic that does not exist is an error
    /// (UNKNOWN_TOPIC_OR_PARTITION).
    ///
    /// # Errors
    /// [`Error::Broker`] with the broker's code.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let conn = self.any_connection(Lane::Control).await?;
        let topic = TopicName(StrBytes::from_string(name.to_string()));
        let req =
            DeleteTopicsRequest::default().with_timeout_ms(PROPAGATION_TIMEOUT.as_millis() as i32);
        // v6 names topics in `topics` (name or id); older versions in `topic_names`.
        let req = if conn.version(ApiKey::DeleteTopics)? >= 6 {
            req.with_topics(vec![DeleteTopicState::default().with_name(Some(topic))])
        } else {
            req.with_topic_names(vec![topic])
        };
        let resp = conn
            .send(&req, self.config().request_timeout, PROPAGATION_TIMEOUT)
            .await?;
        for r in &resp.responses {
            check_topic_code(ApiKey::DeleteTopics, r.error_code, name)?;
        }
        self.refresh_metadata(Some(&[name.to_string()])).await?;
        Ok(())
    }
}
