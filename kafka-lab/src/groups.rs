//! `kafka-lab groups list | describe G`, like `kafka-consumer-groups`.

use std::collections::BTreeMap;

use clap::Subcommand;
use consumer_core::{Assignment, Consumer, ConsumerConfig, TopicPartition};
use kafka_wire::{Client, IsolationLevel, OffsetSpec};

use crate::connect::ConnectArgs;

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List consumer groups with their state.
    List,
    /// Members, assignment, committed offset, end offset and lag per partition.
    Describe {
        group: String,
        /// The end lag is measured to: read_uncommitted (the high watermark,
        /// as kafka-consumer-groups) or read_committed (the last stable
        /// offset: what a read_committed group can reach).
        #[arg(long, default_value = "read_uncommitted")]
        isolation: String,
    },
}

pub async fn run(connect: &ConnectArgs, client: &Client, cmd: GroupsCommand) -> anyhow::Result<()> {
    match cmd {
        GroupsCommand::List => {
            for g in client.list_groups().await? {
                println!("{}\t{}\t{}", g.group_id, g.state, g.protocol_type);
            }
        }
        GroupsCommand::Describe { group, isolation } => {
            let isolation = match isolation.as_str() {
                "read_uncommitted" => IsolationLevel::ReadUncommitted,
                "read_committed" => IsolationLevel::ReadCommitted,
                other => anyhow::bail!(
                    "--isolation {other:?}: expected read_uncommitted or read_committed"
                ),
            };
            let d = client.describe_group(&group).await?;
            let mut lines: Vec<String> = Vec::new();
            lines.push(format!(
                "group {} state {} assignor {}",
                d.group_id,
                d.state,
                if d.protocol.is_empty() {
                    "-"
                } else {
                    &d.protocol
                }
            ));
            // Who owns what.
            let mut owner: BTreeMap<TopicPartition, String> = BTreeMap::new();
            for m in &d.members {
                let a = Assignment::decode(&m.assignment).unwrap_or_default();
                for tp in a.partitions {
                    owner.insert(tp, format!("{} ({})", m.member_id, m.client_host));
                }
            }
            // Committed offsets: read through a consumer of the group that never joins.
            let consumer = Consumer::connect(
                ConsumerConfig::builder()
                    .client(|_| connect.client_builder().expect("validated already"))
                    .group_id(&group)
                    .build()?,
            )
            .await?;
            let md = client.refresh_metadata(None).await?;
            let mut topics: Vec<String> = owner.keys().map(|tp| tp.topic.clone()).collect();
            // Topics with committed offsets but no current owner show too.
            for t in md.topics.keys() {
                if !t.starts_with("__") {
                    topics.push(t.clone());
                }
            }
            topics.sort();
            topics.dedup();
            lines.push(format!(
                "{:<40} {:>14} {:>14} {:>8}  member",
                "topic-partition", "committed", "end", "lag"
            ));
            let mut any_committed = false;
            for topic in topics {
                let Some(n) = md.partition_count(&topic) else {
                    continue;
                };
                let parts: Vec<TopicPartition> = (0..n as i32)
                    .map(|p| TopicPartition::new(&topic, p))
                    .collect();
                let committed = consumer.committed(&parts).await?;
                if committed.is_empty() && !owner.keys().any(|tp| tp.topic == topic) {
                    continue;
                }
                any_committed |= !committed.is_empty();
                let ends: BTreeMap<i32, i64> = client
                    .list_offsets_with(&topic, OffsetSpec::Latest, isolation)
                    .await?
                    .into_iter()
                    .collect();
                for tp in parts {
                    let c = committed.get(&tp).copied();
                    let end = ends.get(&tp.partition).copied().unwrap_or(-1);
                    let lag = c
                        .map(|c| (end - c).to_string())
                        .unwrap_or_else(|| "-".into());
                    lines.push(format!(
                        "{:<40} {:>14} {:>14} {:>8}  {}",
                        tp.to_string(),
                        c.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                        end,
                        lag,
                        owner.get(&tp).map(String::as_str).unwrap_or("-")
                    ));
                }
            }
            crate::exists::require_group(client, &group, any_committed).await?;
            for l in lines {
                println!("{l}");
            }
        }
    }
    Ok(())
}
