//! `kafka-lab groups list | describe G | reset-offsets G | delete G`, like
//! `kafka-consumer-groups` (and `kafka-share-groups` for a share group:
//! `share_groups.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Subcommand;
use consumer_core::{Assignment, Consumer, ConsumerConfig, TopicPartition};
use kafka_wire::{Client, IsolationLevel, OffsetSpec};

use crate::connect::ConnectArgs;
use crate::position::StartAt;

/// Where `reset-offsets` moves each partition.
#[derive(Debug, Clone, Copy)]
enum Target {
    At(StartAt),
    Shift(i64),
}

/// Plan (and with `execute`, commit) new offsets for `group` on `topic`:
/// its committed offsets, or a share group's start offsets.
async fn reset_offsets(
    connect: &ConnectArgs,
    client: &Client,
    group: &str,
    topic: &str,
    partitions: &[i32],
    target: Target,
    execute: bool,
) -> anyhow::Result<()> {
    let n = crate::exists::require_topic(client, topic).await?;
    let tps = crate::position::partitions(topic, partitions, n)?;
    if let Some(d) = crate::share_groups::describe(client, group).await? {
        crate::share_groups::require_empty(
            &d,
            "start offsets can only be reset while it is empty",
        )?;
        let start: BTreeMap<TopicPartition, i64> = client
            .share_group_offsets(group, Some(&[topic]))
            .await?
            .into_iter()
            .filter_map(|(tp, o)| Some((tp, o.start_offset?)))
            .collect();
        let new = plan(client, &tps, &start, target).await?;
        print_plan("start", &start, &new);
        if !execute {
            println!("dry run: nothing changed; add --execute to move these start offsets");
            return Ok(());
        }
        for (tp, answer) in client.alter_share_group_offsets(group, &new).await? {
            answer.map_err(|e| anyhow::anyhow!("{tp}: {e}"))?;
        }
        println!(
            "moved the start offsets of share group {group}: the records from each new start \
             on are delivered (again)"
        );
        return Ok(());
    }
    let d = client.describe_group(group).await?;
    if !d.members.is_empty() {
        anyhow::bail!(
            "group {group:?} has {} active members (state {}): stop them first; offsets \
             can only be reset while the group is empty",
            d.members.len(),
            d.state
        );
    }
    let mut consumer = Consumer::connect(
        ConsumerConfig::builder()
            .client(|_| connect.client_builder().expect("validated already"))
            .group_id(group)
            .build()?,
    )
    .await?;
    let committed = consumer.committed(&tps).await?;
    let new = plan(client, &tps, &committed, target).await?;
    print_plan("committed", &committed, &new);
    if execute {
        let offsets: Vec<(TopicPartition, i64)> = new.into_iter().collect();
        consumer.assign(&tps);
        consumer.commit(&offsets).await?;
        println!("committed the new offsets of group {group}");
    } else {
        println!("dry run: nothing changed; add --execute to commit these offsets");
    }
    consumer.close(Duration::from_secs(5)).await;
    Ok(())
}

/// Where `target` moves each of `tps`, whose offsets are `current` now
/// (committed offsets, or a share group's start offsets).
async fn plan(
    client: &Client,
    tps: &[TopicPartition],
    current: &BTreeMap<TopicPartition, i64>,
    target: Target,
) -> anyhow::Result<BTreeMap<TopicPartition, i64>> {
    let iso = IsolationLevel::ReadUncommitted;
    Ok(match target {
        Target::At(at) => crate::position::resolve(client, tps, at, iso).await?,
        Target::Shift(by) => {
            let lo = client
                .partition_offsets(tps, OffsetSpec::Earliest, iso)
                .await?;
            let hi = client
                .partition_offsets(tps, OffsetSpec::Latest, iso)
                .await?;
            let mut out = BTreeMap::new();
            for tp in tps {
                let (lo, hi) = (
                    lo.get(tp).copied().unwrap_or(0),
                    hi.get(tp).copied().unwrap_or(0),
                );
                // No offset yet: shift from where a new member starts (the start).
                let from = current.get(tp).copied().unwrap_or(lo);
                out.insert(tp.clone(), (from + by).clamp(lo, hi));
            }
            out
        }
    })
}

/// The plan's table: each partition's `current` offset (named `what`) and its new one.
fn print_plan(
    what: &str,
    current: &BTreeMap<TopicPartition, i64>,
    new: &BTreeMap<TopicPartition, i64>,
) {
    println!("{:<40} {:>14} {:>14}", "topic-partition", what, "new");
    for (tp, o) in new {
        println!(
            "{:<40} {:>14} {:>14}",
            tp.to_string(),
            current
                .get(tp)
                .map_or_else(|| "-".to_string(), |c| c.to_string()),
            o
        );
    }
}

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List groups: id, state, protocol type and group type (classic,
    /// consumer, share, streams).
    List,
    /// Members, assignment, committed offset, end offset and lag per
    /// partition; for a share group, each share-partition's start offset
    /// and the members it is shared by.
    Describe {
        /// The group id.
        group: String,
        /// The end lag is measured to: read_uncommitted (the high watermark,
        /// as kafka-consumer-groups) or read_committed (the last stable
        /// offset: what a read_committed group can reach).
        #[arg(long, default_value = "read_uncommitted")]
        isolation: String,
    },
    /// Move a group's committed offsets, as kafka-consumer-groups
    /// --reset-offsets (a share group's start offsets, as
    /// kafka-share-groups --reset-offsets): a dry run (prints the plan)
    /// unless --execute. The group must have no members.
    #[command(group(clap::ArgGroup::new("target").required(true).args(
        ["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"]
    )))]
    ResetOffsets {
        /// The group id.
        group: String,
        /// The topic whose offsets move.
        #[arg(short = 't', long)]
        topic: String,
        /// Only these partitions (comma-separated; default: all).
        #[arg(short = 'p', long, value_delimiter = ',')]
        partitions: Vec<i32>,
        /// To the log start.
        #[arg(long)]
        to_earliest: bool,
        /// To the log end (skip everything there now).
        #[arg(long)]
        to_latest: bool,
        /// To this offset (clamped to the log).
        #[arg(long, value_name = "OFFSET")]
        to_offset: Option<i64>,
        /// To the first record at or after this time: RFC 3339
        /// (2026-11-30T08:00:00Z) or @MS since the epoch.
        #[arg(long, value_name = "TIME")]
        to_datetime: Option<String>,
        /// Move each committed offset by N (negative: back), clamped to the log.
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// Commit the new offsets (without it, only print the plan).
        #[arg(long)]
        execute: bool,
    },
    /// Delete a group that has no members, with its committed offsets (a
    /// share group with its share-partition state).
    Delete {
        /// The group id.
        group: String,
    },
}

pub async fn run(connect: &ConnectArgs, client: &Client, cmd: GroupsCommand) -> anyhow::Result<()> {
    match cmd {
        GroupsCommand::ResetOffsets {
            group,
            topic,
            partitions,
            to_earliest,
            to_latest,
            to_offset,
            to_datetime,
            shift_by,
            execute,
        } => {
            let target = if to_earliest {
                Target::At(StartAt::Earliest)
            } else if to_latest {
                Target::At(StartAt::Latest)
            } else if let Some(o) = to_offset {
                Target::At(StartAt::Offset(o))
            } else if let Some(t) = to_datetime {
                let at: StartAt = t
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("--to-datetime {e}"))?;
                anyhow::ensure!(
                    matches!(at, StartAt::Time(_)),
                    "--to-datetime {t:?}: expected a time like 2026-11-30T08:00:00Z or @MS"
                );
                Target::At(at)
            } else {
                Target::Shift(shift_by.unwrap_or(0))
            };
            reset_offsets(
                connect,
                client,
                &group,
                &topic,
                &partitions,
                target,
                execute,
            )
            .await?;
        }
        GroupsCommand::Delete { group } => {
            if let Some(d) = crate::share_groups::describe(client, &group).await? {
                crate::share_groups::require_empty(&d, "a group with members cannot be deleted")?;
                client.delete_group(&group).await?;
                println!("deleted share group {group}");
                return Ok(());
            }
            let d = client.describe_group(&group).await?;
            if !d.members.is_empty() {
                anyhow::bail!(
                    "group {group:?} has {} members: stop them first (a group with members \
                     cannot be deleted)",
                    d.members.len()
                );
            }
            client.delete_group(&group).await?;
            println!("deleted group {group}");
        }
        GroupsCommand::List => {
            for g in client.list_groups().await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    g.group_id,
                    g.state,
                    g.protocol_type,
                    g.group_type.as_deref().unwrap_or("-")
                );
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
            if let Some(d) = crate::share_groups::describe(client, &group).await? {
                for l in crate::share_groups::describe_lines(client, &d).await? {
                    println!("{l}");
                }
                return Ok(());
            }
            let d = client.describe_group(&group).await?;
            let mut lines: Vec<String> = Vec::new();
            lines.push(format!(
                "group {} state {} assignor {} protocol {}",
                d.group_id,
                d.state,
                if d.protocol.is_empty() {
                    "-"
                } else {
                    &d.protocol
                },
                match d.group_epoch {
                    Some(epoch) => format!("consumer (KIP-848), group epoch {epoch}"),
                    None => "classic".into(),
                }
            ));
            // Who owns what.
            let mut owner: BTreeMap<TopicPartition, String> = BTreeMap::new();
            for m in &d.members {
                // Classic: the assignment bytes; KIP-848: the broker's own list.
                let parts = if m.member_epoch.is_some() {
                    m.assigned.clone()
                } else {
                    Assignment::decode(&m.assignment)
                        .unwrap_or_default()
                        .partitions
                };
                let who = match (m.member_type, m.member_epoch) {
                    (Some(kind), Some(epoch)) => {
                        format!("{} ({}, {kind}, epoch {epoch})", m.member_id, m.client_host)
                    }
                    _ => format!("{} ({})", m.member_id, m.client_host),
                };
                for tp in parts {
                    owner.insert(tp, who.clone());
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
