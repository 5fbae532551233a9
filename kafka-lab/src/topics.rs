//! `kafka-lab topics create | list | describe | delete | add-partitions |
//! reassign | reassignments | elect-leaders`.

use clap::Subcommand;
use kafka_wire::{Client, NewTopic, TopicPartition};

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
    /// Move a partition to other brokers, or reorder its replicas (KIP-455).
    ///
    /// The controller accepts the target at once; new replicas then copy
    /// the log and join the ISR, and the ones left out are dropped. The
    /// leader moves only if it left the set: the first replica leads after
    /// `elect-leaders`.
    #[command(after_help = "Examples:\n  \
        kafka-lab topics reassign --topic orders --partition 0 --replicas 2,3,1 --wait\n  \
        kafka-lab topics reassign --topic orders --partition 0 --cancel")]
    Reassign {
        /// The partition's topic.
        #[arg(long)]
        topic: String,
        /// The partition.
        #[arg(long)]
        partition: i32,
        /// Broker ids, comma-separated, the preferred leader first.
        #[arg(
            long,
            value_delimiter = ',',
            value_name = "IDS",
            required_unless_present = "cancel",
            conflicts_with = "cancel"
        )]
        replicas: Vec<i32>,
        /// Cancel the partition's reassignment under way: its replicas go
        /// back to those before it.
        #[arg(long)]
        cancel: bool,
        /// Wait until the move is done: no longer listed, every replica
        /// in sync (up to 5 minutes).
        #[arg(long)]
        wait: bool,
    },
    /// Reassignments under way: replicas, and those being added and removed.
    Reassignments {
        /// Only this topic's partitions (default: the whole cluster).
        #[arg(long)]
        topic: Option<String>,
    },
    /// Elect leaders (KIP-460): each partition's preferred replica (the
    /// first of its replicas) if it is in sync, or with --unclean any live
    /// replica of a partition that has no leader.
    ///
    /// Fails if any partition got no leader it should have; a partition
    /// whose preferred replica already leads is fine.
    #[command(after_help = "Examples:\n  \
        kafka-lab topics elect-leaders --topic orders\n  \
        kafka-lab topics elect-leaders --topic orders --partition 2 --unclean\n  \
        kafka-lab topics elect-leaders --all-topics")]
    ElectLeaders {
        /// The topic (every partition of it, or --partition).
        #[arg(long, required_unless_present = "all_topics")]
        topic: Option<String>,
        /// Only this partition of --topic.
        #[arg(long, requires = "topic")]
        partition: Option<i32>,
        /// Every partition of the cluster.
        #[arg(long, conflicts_with = "topic")]
        all_topics: bool,
        /// Unclean: a replica out of the ISR may lead, and the records
        /// only the old ISR had are lost. Only for a partition that has no
        /// leader, when waiting for an in-sync replica is worse.
        #[arg(long)]
        unclean: bool,
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
        TopicsCommand::Reassign {
            topic,
            partition,
            replicas,
            cancel,
            wait,
        } => {
            let tp = TopicPartition::new(topic, partition);
            crate::replicas::reassign(client, tp, replicas, cancel, wait).await?;
        }
        TopicsCommand::Reassignments { topic } => crate::replicas::list(client, topic).await?,
        TopicsCommand::ElectLeaders {
            topic,
            partition,
            all_topics: _,
            unclean,
        } => crate::replicas::elect(client, topic, partition, unclean).await?,
    }
    Ok(())
}
