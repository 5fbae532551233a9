//! `kafka-lab consume`: read a topic as a group member or from given partitions.

use std::time::{Duration, Instant};

use anyhow::bail;
use base64::Engine;
use clap::Args;
use consumer_core::{Consumer, ConsumerConfig, TopicPartition};
use kafka_wire::records::Record;

use crate::connect::ConnectArgs;
use crate::json::json_str;

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[arg(long)]
    topic: String,
    /// Consume as a member of this group.
    #[arg(long, conflicts_with = "partitions")]
    group: Option<String>,
    /// Consume these partitions (comma-separated) without a group.
    #[arg(long, value_delimiter = ',')]
    partitions: Vec<i32>,
    /// Where to start without a committed offset: earliest or latest.
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Exit after this many milliseconds without a new record.
    #[arg(long)]
    idle_exit_ms: Option<u64>,
    /// read_uncommitted or read_committed.
    #[arg(long, default_value = "read_uncommitted")]
    isolation: String,
    /// range, roundrobin, sticky or cooperative-sticky.
    #[arg(long)]
    assignor: Option<String>,
    /// group.instance.id (static membership).
    #[arg(long, requires = "group")]
    instance_id: Option<String>,
    /// Commit what was printed, then leave the group.
    #[arg(long, requires = "group")]
    commit: bool,
    /// One JSON object per record.
    #[arg(long)]
    json: bool,
    /// Print nothing per record (for throughput runs); the summary still prints.
    #[arg(long, conflicts_with = "json")]
    quiet: bool,
    /// Consumer property as key=value (repeatable).
    #[arg(short = 'C', value_name = "KEY=VALUE")]
    consumer_properties: Vec<String>,
}

fn bytes_json(b: &Option<bytes::Bytes>) -> String {
    match b {
        None => "null".into(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => json_str(s),
            Err(_) => format!(
                "{{\"base64\":\"{}\"}}",
                base64::engine::general_purpose::STANDARD.encode(b)
            ),
        },
    }
}

fn print(tp: &TopicPartition, r: &Record, json: bool) {
    if json {
        let headers: Vec<String> = r
            .headers
            .iter()
            .map(|h| format!("{}:{}", json_str(&h.key_str()), bytes_json(&h.value)))
            .collect();
        println!(
            "{{\"topic\":{},\"partition\":{},\"offset\":{},\"timestamp\":{},\"key\":{},\"value\":{},\"headers\":{{{}}}}}",
            json_str(&tp.topic),
            tp.partition,
            r.offset,
            r.timestamp,
            bytes_json(&r.key),
            bytes_json(&r.value),
            headers.join(",")
        );
    } else {
        let value = r
            .value
            .as_ref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        println!("{}\t{}\t{}", tp, r.offset, value);
    }
}

pub async fn run(connect: &ConnectArgs, args: ConsumeArgs) -> anyhow::Result<()> {
    if args.group.is_none() && args.partitions.is_empty() {
        bail!("give --group G to consume as a group member, or --partitions 0,1,… to read partitions directly");
    }
    let admin = kafka_wire::Client::connect(connect.client_config()?).await?;
    crate::exists::require_topic(&admin, &args.topic).await?;
    let client = connect.client_builder()?;
    let mut b = ConsumerConfig::builder()
        .client(|_| client)
        .set("auto.offset.reset", &args.from)?
        .set("isolation.level", &args.isolation)?;
    if let Some(g) = &args.group {
        b = b.group_id(g);
    }
    if let Some(a) = &args.assignor {
        b = b.set("partition.assignment.strategy", a)?;
    }
    if let Some(i) = &args.instance_id {
        b = b.set("group.instance.id", i)?;
    }
    for kv in &args.consumer_properties {
        let (k, v) = crate::connect::key_value("-C", kv)?;
        b = b.set(k, v)?;
    }
    let mut consumer = Consumer::connect(b.build()?).await?;
    if args.group.is_some() {
        consumer.subscribe(&[&args.topic])?;
    } else {
        let parts: Vec<TopicPartition> = args
            .partitions
            .iter()
            .map(|p| TopicPartition::new(&args.topic, *p))
            .collect();
        consumer.assign(&parts);
    }
    let started = Instant::now();
    let mut last_record = Instant::now();
    let mut count: u64 = 0;
    // With --max, the first offset not printed of each partition of the
    // last poll: the commit stops there, not at the consumer's position.
    let mut unprinted: Vec<(TopicPartition, i64)> = Vec::new();
    'outer: loop {
        if let Some(ms) = args.idle_exit_ms {
            if last_record.elapsed() >= Duration::from_millis(ms) {
                break;
            }
        }
        let batches = consumer.poll(Duration::from_millis(200)).await?;
        for (i, batch) in batches.iter().enumerate() {
            for (j, r) in batch.records.iter().enumerate() {
                if !args.quiet {
                    print(&batch.tp, r, args.json);
                }
                count += 1;
                last_record = Instant::now();
                if args.max.is_some_and(|m| count >= m) {
                    let rest = batch
                        .records
                        .get(j + 1)
                        .map(|r| (batch.tp.clone(), r.offset));
                    unprinted.extend(rest);
                    for later in &batches[i + 1..] {
                        if let Some(first) = later.records.first() {
                            unprinted.push((later.tp.clone(), first.offset));
                        }
                    }
                    break 'outer;
                }
            }
        }
    }
    if args.commit {
        // The positions, which move past transaction markers and aborted
        // data too: committing the last record + 1 left lag behind them.
        let mut offsets: Vec<(TopicPartition, i64)> = consumer
            .positions()
            .into_iter()
            .map(|p| (p.tp, p.position))
            .collect();
        for (tp, first) in &unprinted {
            for o in offsets.iter_mut().filter(|(t, _)| t == tp) {
                o.1 = o.1.min(*first);
            }
        }
        consumer.commit(&offsets).await?;
    }
    consumer.close(Duration::from_secs(10)).await;
    // Exclude the trailing idle wait from the rate.
    let busy = last_record.duration_since(started).as_secs_f64().max(1e-9);
    eprintln!(
        "consumed {count} records from {} in {:.2} s ({:.0} records/s while records flowed){}",
        args.topic,
        started.elapsed().as_secs_f64(),
        count as f64 / busy,
        if args.commit { " (committed)" } else { "" }
    );
    Ok(())
}
