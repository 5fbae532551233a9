//! `kafka-lab topics create | list | delete | add-partitions`.

use clap::Subcommand;
use kafka_wire::{Client, NewTopic};

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create a topic.
    Create {
        /// The topic's name.
        topic: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// -1: the broker's default.
        #[arg(long, default_value_t = -1)]
        replication_factor: i16,
        /// Topic config as key=value (repeatable), e.g. --config cleanup.policy=compact.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topics with their partition counts.
    List {
        /// Include internal topics (__consumer_offsets, …).
        #[arg(long)]
        all: bool,
    },
    /// Delete a topic.
    Delete {
        /// The topic to delete.
        topic: String,
    },
    /// Grow a topic to this many partitions (never fewer); waits until
    /// metadata shows them. Subscribed groups rebalance within their
    /// metadata.max.age.ms.
    AddPartitions {
        /// The topic to grow.
        #[arg(long)]
        topic: String,
        /// The new total partition count.
        #[arg(long)]
        partitions: i32,
    },
    /// Partitions (leader, replicas, ISR, start and end offsets) and configs.
    Describe {
        /// The topic to describe.
        topic: String,
        /// Every config with its value, not only those set on the topic.
        #[arg(long)]
        all_configs: bool,
    },
}

pub async fn run(client: &Client, cmd: TopicsCommand) -> anyhow::Result<()> {
    match cmd {
        TopicsCommand::Create {
            topic,
            partitions,
            replication_factor,
            configs,
        } => {
            let mut t = NewTopic::new(&topic, partitions);
            t.replication_factor = replication_factor;
            for kv in &configs {
                let (k, v) = crate::connect::key_value("--config", kv)?;
                t = t.config(k, v);
            }
            client.create_topic(t).await?;
            println!("created {topic} ({partitions} partitions)");
        }
        TopicsCommand::List { all } => {
            let md = client.refresh_metadata(None).await?;
            let mut topics: Vec<_> = md
                .topics
                .values()
                .filter(|t| all || !t.is_internal)
                .collect();
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            for t in topics {
                println!("{}\t{}", t.name, t.partitions.len());
            }
        }
        TopicsCommand::Describe { topic, all_configs } => {
            crate::describe::topic(client, &topic, all_configs).await?;
        }
        TopicsCommand::Delete { topic } => {
            client.delete_topic(&topic).await?;
            println!("deleted {topic}");
        }
        TopicsCommand::AddPartitions { topic, partitions } => {
            client.create_partitions(&topic, partitions).await?;
            println!("{topic} now has {partitions} partitions");
        }
    }
    Ok(())
}
