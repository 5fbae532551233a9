//! Share groups (KIP-932) in `kafka-lab groups`, like
//! `kafka-share-groups.sh`: describe (members, what the broker assigned
//! them, each share-partition's start offset, end and lag), the start
//! offsets `groups reset-offsets` moves, and `consume --share-group`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use consumer_core::share::{AcknowledgeType, ShareConsumer, ShareConsumerConfig, ShareRecord};
use consumer_core::TopicPartition;
use kafka_wire::{Client, Error, KafkaCode, OffsetSpec, ShareGroupDescription};

use crate::connect::ConnectArgs;

/// `group` described, if it is a share group (`None`: no share group has
/// this id, or the cluster has none).
pub async fn describe(
    client: &Client,
    group: &str,
) -> anyhow::Result<Option<ShareGroupDescription>> {
    match client.describe_share_group(group).await {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.code() == Some(KafkaCode::GroupIdNotFound) => Ok(None),
        Err(Error::UnsupportedVersion { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// An error unless the share group has no members: its start offsets
/// move only then (NON_EMPTY_GROUP otherwise).
pub fn require_empty(d: &ShareGroupDescription, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        d.members.is_empty(),
        "share group {:?} has {} active members (state {}): stop them first; {what}",
        d.group_id,
        d.members.len(),
        d.state
    );
    Ok(())
}

/// The lines of `groups describe` for share group `d`.
pub async fn describe_lines(
    client: &Client,
    d: &ShareGroupDescription,
) -> anyhow::Result<Vec<String>> {
    let mut lines = vec![format!(
        "group {} state {} assignor {} protocol share (KIP-932), group epoch {}",
        d.group_id, d.state, d.assignor, d.group_epoch
    )];
    // A share group's partitions are shared: one may have several members.
    let mut members: BTreeMap<&TopicPartition, Vec<&str>> = BTreeMap::new();
    for m in &d.members {
        lines.push(format!(
            "member {} ({}, {}, epoch {}) subscribed to {}",
            m.member_id,
            m.client_id,
            m.client_host,
            m.member_epoch,
            m.subscribed_topics.join(",")
        ));
        for tp in &m.assigned {
            members.entry(tp).or_default().push(&m.member_id);
        }
    }
    let starts = client.share_group_offsets(&d.group_id, None).await?;
    let mut topics: Vec<&str> = starts.keys().map(|tp| tp.topic.as_str()).collect();
    topics.extend(members.keys().map(|tp| tp.topic.as_str()));
    topics.sort_unstable();
    topics.dedup();
    let mut ends: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    for t in &topics {
        for (p, end) in client.list_offsets(t, OffsetSpec::Latest).await? {
            ends.insert(TopicPartition::new(*t, p), end);
        }
    }
    lines.push(format!(
        "{:<40} {:>14} {:>14} {:>8}  members",
        "topic-partition", "start", "end", "lag"
    ));
    for (tp, end) in &ends {
        let start = starts.get(tp).and_then(|o| o.start_offset);
        let who = members.get(tp).map(|ms| ms.join(","));
        if start.is_none() && who.is_none() {
            continue;
        }
        lines.push(format!(
            "{:<40} {:>14} {:>14} {:>8}  {}",
            tp.to_string(),
            start.map_or_else(|| "-".into(), |s| s.to_string()),
            end,
            start.map_or_else(|| "-".into(), |s| (end - s).to_string()),
            who.as_deref().unwrap_or("-")
        ));
    }
    lines.push(
        "start: every record before it is done (acknowledged, archived or skipped); lag: from \
         the start to the end, records in flight or acknowledged out of order included"
            .into(),
    );
    Ok(lines)
}

/// How `consume --share-group` reads.
pub struct ShareConsume<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    /// `-C key=value`: share consumer properties.
    pub properties: &'a [String],
    pub max: Option<u64>,
    pub idle_exit: Option<Duration>,
    pub quiet: bool,
    /// Print each record's delivery count.
    pub print_delivery: bool,
    /// Prints one record.
    pub print: &'a dyn Fn(&ShareRecord, Option<u16>),
}

/// Read `c.topic` as a member of share group `c.group` until `--max`,
/// `--idle-exit-ms` or Ctrl-C, then close (the last acknowledgements go,
/// the share sessions close, the member leaves). The user acknowledges
/// nothing: each record is accepted once printed, as implicit mode would
/// at the next poll; but the records of the last poll past `--max` are
/// released (delivered again), where implicit mode would accept them
/// unprinted.
pub async fn consume(connect: &ConnectArgs, c: ShareConsume<'_>) -> anyhow::Result<()> {
    let client = connect.client_builder()?;
    let mut b = ShareConsumerConfig::builder()
        .client(|_| client)
        .set("group.id", c.group)?
        .set("share.acknowledgement.mode", "explicit")?;
    for kv in c.properties {
        let (k, v) = crate::connect::key_value("-C", kv)?;
        anyhow::ensure!(
            k != "share.acknowledgement.mode",
            "-C {k}: consume --share-group accepts each record once printed, and releases \
             those past --max"
        );
        b = b.set(k, v)?;
    }
    let mut consumer = ShareConsumer::connect(b.build()?).await?;
    consumer.subscribe(&[c.topic]).await?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let started = Instant::now();
    let mut last_record = Instant::now();
    let mut count: u64 = 0;
    let mut again: u64 = 0;
    'outer: loop {
        // Idle counts from the first assignment: joining the group and
        // initializing its share-partitions take a few seconds.
        if consumer.assignment().is_empty() && count == 0 {
            last_record = Instant::now();
        }
        if c.idle_exit
            .is_some_and(|idle| last_record.elapsed() >= idle)
        {
            break;
        }
        let records = tokio::select! {
            polled = consumer.poll(Duration::from_millis(200)) => polled?,
            _ = &mut interrupted => {
                eprintln!("interrupted: leaving the share group");
                break;
            }
        };
        let mut rest = records.iter();
        for r in rest.by_ref() {
            if !c.quiet {
                (c.print)(r, c.print_delivery.then_some(r.delivery_count));
            }
            consumer.acknowledge(r, AcknowledgeType::Accept)?;
            count += 1;
            again += u64::from(r.delivery_count > 1);
            last_record = Instant::now();
            if c.max.is_some_and(|m| count >= m) {
                break;
            }
        }
        for r in rest {
            consumer.acknowledge(r, AcknowledgeType::Release)?;
        }
        if c.max.is_some_and(|m| count >= m) {
            break 'outer;
        }
    }
    consumer.close().await?;
    eprintln!(
        "consumed {count} records from {} as share group {} in {:.2} s ({again} delivered more \
         than once); each accepted",
        c.topic,
        c.group,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
