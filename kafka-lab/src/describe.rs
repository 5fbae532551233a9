//! `kafka-lab topics describe`: partitions, leaders, replicas, ISR and
//! configs, like `kafka-topics --describe`.

use kafka_wire::{Client, ConfigResource, IsolationLevel, OffsetSpec};

use consumer_core::TopicPartition;

/// Print `topic`'s partitions (leader, replicas, ISR, start and end
/// offsets) and its configs: the ones set on the topic, or with `all`
/// every config with its value.
pub async fn topic(client: &Client, topic: &str, all: bool) -> anyhow::Result<()> {
    crate::exists::require_topic(client, topic).await?;
    let md = client.refresh_metadata(None).await?;
    let t = md
        .topics
        .get(topic)
        .ok_or_else(|| anyhow::anyhow!("topic {topic:?} vanished"))?;
    let tps: Vec<TopicPartition> = t
        .partitions
        .iter()
        .map(|p| TopicPartition::new(topic, p.partition))
        .collect();
    let iso = IsolationLevel::ReadUncommitted;
    let starts = client
        .partition_offsets(&tps, OffsetSpec::Earliest, iso)
        .await?;
    let ends = client
        .partition_offsets(&tps, OffsetSpec::Latest, iso)
        .await?;
    println!(
        "topic {topic}  partitions {}  replication factor {}{}",
        t.partitions.len(),
        t.partitions.first().map_or(0, |p| p.replicas.len()),
        if t.is_internal { "  (internal)" } else { "" }
    );
    let ids = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    println!(
        "{:>9} {:>7} {:>10} {:>10} {:>12} {:>12}",
        "partition", "leader", "replicas", "isr", "start", "end"
    );
    for p in &t.partitions {
        let tp = TopicPartition::new(topic, p.partition);
        let offset = |m: &std::collections::BTreeMap<TopicPartition, i64>| {
            m.get(&tp).map_or_else(|| "-".into(), i64::to_string)
        };
        println!(
            "{:>9} {:>7} {:>10} {:>10} {:>12} {:>12}{}",
            p.partition,
            if p.leader >= 0 {
                p.leader.to_string()
            } else {
                "none".into()
            },
            ids(&p.replicas),
            ids(&p.isr),
            offset(&starts),
            offset(&ends),
            p.error.map(|e| format!("  {e}")).unwrap_or_default()
        );
    }
    let mut configs = client
        .describe_configs(&ConfigResource::Topic(topic.to_string()))
        .await?;
    configs.retain(|c| all || c.is_override);
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    println!(
        "configs{}:",
        if all {
            ""
        } else {
            " set on the topic (--all-configs for every one)"
        }
    );
    if configs.is_empty() {
        println!("  (none: every config is the broker's default)");
    }
    for c in configs {
        println!(
            "  {}={}",
            c.name,
            c.value.as_deref().unwrap_or("(sensitive or unset)")
        );
    }
    Ok(())
}
