//! Fail early, with the reason, when a topic or group a command reads does
//! not exist: a consumer would otherwise wait quietly for a topic that never
//! comes and report "consumed 0 records".

use anyhow::bail;
use kafka_wire::{Client, ConfigResource};

/// `Ok(n)` partitions if `topic` exists; otherwise an error saying so, and
/// whether the broker would create it (`auto.create.topics.enable`).
pub async fn require_topic(client: &Client, topic: &str) -> anyhow::Result<usize> {
    let md = client.refresh_metadata(None).await?;
    if let Some(t) = md.topics.get(topic) {
        return Ok(t.partitions.len());
    }
    let auto_create = match md.brokers.keys().min() {
        Some(id) => client
            .describe_configs(&ConfigResource::Broker(*id))
            .await
            .ok()
            .and_then(|cs| {
                cs.into_iter()
                    .find(|c| c.name == "auto.create.topics.enable")
                    .and_then(|c| c.value)
            }),
        None => None,
    };
    let why = match auto_create.as_deref() {
        Some("false") => " (and auto-creation is off: auto.create.topics.enable=false)",
        Some("true") => {
            " (auto.create.topics.enable=true: the broker creates it when a producer first \
             writes to it, with its default partitions and configs)"
        }
        _ => "",
    };
    bail!(
        "topic {topic:?} does not exist{why}; create it with `kafka-lab topics create {topic}`, \
         or check the name with `kafka-lab topics list`"
    )
}

/// An error unless `group` exists: it has members or committed offsets
/// (`has_offsets`). The broker reports an unknown group as `Dead`.
pub async fn require_group(client: &Client, group: &str, has_offsets: bool) -> anyhow::Result<()> {
    let d = client.describe_group(group).await?;
    if d.members.is_empty() && !has_offsets && (d.state == "Dead" || d.state.is_empty()) {
        bail!(
            "consumer group {group:?} does not exist (no members and no committed offsets); \
             `kafka-lab groups list` shows the groups there are"
        );
    }
    Ok(())
}
