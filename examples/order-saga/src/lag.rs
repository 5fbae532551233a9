//! A group's consumer lag on one topic, measured from outside the group the
//! way `kafka-consumer-groups --describe` does: each partition's log end
//! offset minus the group's committed offset, summed. It joins nothing,
//! so it never triggers a rebalance of the group it watches.

use anyhow::Context;
use kafka_wire::{Client, ClientConfig, OffsetSpec};
use resilience::consumer_core::{Consumer, TopicPartition};

/// Watches `group` on `topic`.
pub struct LagMonitor {
    admin: Client,
    /// Connected with the watched group's id, never subscribed: it only
    /// fetches that group's committed offsets.
    offsets: Consumer,
    topic: String,
}

impl std::fmt::Debug for LagMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagMonitor")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl LagMonitor {
    /// # Errors
    /// Kafka unreachable.
    pub async fn connect(bootstrap: &str, group: &str, topic: &str) -> anyhow::Result<LagMonitor> {
        let admin = Client::connect(
            ClientConfig::builder()
                .set("bootstrap.servers", bootstrap)?
                .build()?,
        )
        .await
        .with_context(|| format!("connecting to Kafka at {bootstrap}"))?;
        let offsets = Consumer::connect(crate::consumer_config(bootstrap, group, &[])?)
            .await
            .with_context(|| format!("connecting to Kafka at {bootstrap}"))?;
        Ok(LagMonitor {
            admin,
            offsets,
            topic: topic.to_string(),
        })
    }

    /// The summed lag now (a partition without a committed offset counts
    /// from its log start).
    ///
    /// # Errors
    /// Kafka's.
    pub async fn lag(&self) -> anyhow::Result<i64> {
        let ends = self
            .admin
            .list_offsets(&self.topic, OffsetSpec::Latest)
            .await?;
        let starts = self
            .admin
            .list_offsets(&self.topic, OffsetSpec::Earliest)
            .await?;
        let tps: Vec<TopicPartition> = ends
            .iter()
            .map(|(p, _)| TopicPartition::new(self.topic.clone(), *p))
            .collect();
        let committed = self.offsets.committed(&tps).await?;
        Ok(ends
            .iter()
            .zip(&starts)
            .map(|((p, end), (_, start))| {
                let at = committed
                    .get(&TopicPartition::new(self.topic.clone(), *p))
                    .copied()
                    .filter(|c| *c >= 0)
                    .unwrap_or(*start);
                (end - at).max(0)
            })
            .sum())
    }
}
