//! `kafka-lab dlt tail|replay`: the dead-letter topic's monitor, and
//! sending dead records back once their cause is fixed (exactly once,
//! `resilience::dlt::replay`).

use std::time::Duration;

use clap::{Args, Subcommand};
use consumer_core::{Consumer, ConsumerConfig, TopicPartition};
use resilience::dlt::replay::{self, ReplayOptions};
use resilience::dlt::{DeadRecord, Filter};

use crate::connect::ConnectArgs;

#[derive(Debug, Subcommand)]
pub enum DltCommand {
    /// Print each dead record with its provenance (original topic,
    /// partition, offset, group), attempts and error, then follow new ones.
    Tail(TailArgs),
    /// Send dead records back (to their original topic, or --to), exactly
    /// once: a record a replay already sent is skipped, also by later runs.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The dead-letter topic (e.g. orders.DLT).
    topic: String,
    /// Start at the end: only records dead-lettered from now on.
    #[arg(long)]
    from_end: bool,
    /// Print what is there and exit, instead of following.
    #[arg(long)]
    no_follow: bool,
    /// Only records these conditions take (as `replay --where`).
    #[arg(long = "where", value_name = "CONDITION")]
    conditions: Vec<String>,
    /// One JSON object per record (the `consume --json` shape).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The dead-letter topic to replay.
    dlt: String,
    /// Send every record to this topic instead of its original one.
    #[arg(long)]
    to: Option<String>,
    /// Without --to, the topics records may go back to: those this DLT
    /// takes dead letters of (default: X for a DLT named X.DLT). A record
    /// whose kafka_dlt-original-topic names another topic is refused and
    /// counted: anyone who can write that header could otherwise send it
    /// anywhere the replay may write.
    #[arg(long = "source", value_name = "TOPIC", conflicts_with = "to")]
    sources: Vec<String>,
    /// Only records matching every condition: field=value, field~text,
    /// offset>=N, offset<N; fields: topic, partition, offset (the original
    /// record's), group, class, error, key, attempts, header.<name>.
    /// Example: --where error~timeout --where topic=orders
    #[arg(long = "where", value_name = "CONDITION")]
    conditions: Vec<String>,
    /// Replay at most this many records (the rest stay for a later run).
    #[arg(long)]
    limit: Option<u64>,
    /// Count what would be replayed; send nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(connect: &ConnectArgs, command: DltCommand) -> anyhow::Result<()> {
    match command {
        DltCommand::Tail(args) => tail(connect, args).await,
        DltCommand::Replay(args) => replay_cmd(connect, args).await,
    }
}

/// Header text as one safe line (see [`crate::output::one_line`]): what
/// the record's writer put there reaches the terminal with its control
/// characters (escape sequences) as base64 and its line breaks escaped.
fn safe(text: &str) -> String {
    crate::output::one_line(text.as_bytes())
}

/// One line for a dead record: where it sits, where it came from, why it
/// died. Every field taken from the record is sanitised ([`safe`]).
pub fn describe(dlt: &str, dead: &DeadRecord, replayed_to: Option<&str>) -> String {
    let r = &dead.record;
    let origin = match &dead.origin {
        Some(o) => format!("from {} {}@{}", safe(&o.topic), o.partition, o.offset),
        None => "from ? (no kafka_dlt-original-* headers)".to_string(),
    };
    let group = dead
        .group
        .as_deref()
        .map(|g| format!(" group {}", safe(g)))
        .unwrap_or_default();
    let attempts = dead
        .attempts
        .map(|a| format!(" after {a} attempt{}", if a == 1 { "" } else { "s" }))
        .unwrap_or_default();
    let error = match (&dead.error_class, &dead.error_message) {
        (Some(c), Some(m)) => format!("{}: {}", safe(c), safe(m)),
        (None, Some(m)) => safe(m),
        (Some(c), None) => safe(c),
        (None, None) => "no error recorded".into(),
    };
    let key = r
        .key
        .as_deref()
        .map(|k| format!(" key={}", crate::output::one_line(k)))
        .unwrap_or_default();
    let replayed = replayed_to
        .map(|t| format!("  [replayed to {}]", safe(t)))
        .unwrap_or_default();
    format!(
        "{dlt} {}@{}  {origin}{group}{attempts}  {error}{key}{replayed}",
        dead.partition, r.offset
    )
}

async fn tail(connect: &ConnectArgs, args: TailArgs) -> anyhow::Result<()> {
    let filter = Filter::parse(&args.conditions).map_err(anyhow::Error::msg)?;
    let admin = kafka_wire::Client::connect(connect.client_config()?).await?;
    let n = crate::exists::require_topic(&admin, &args.topic).await?;
    let replayed = replay::replayed_markers(connect.client_builder()?, &admin, &args.topic).await?;
    let client = connect.client_builder()?;
    let mut consumer = Consumer::connect(
        ConsumerConfig::builder()
            .client(|_| client)
            .set("isolation.level", "read_committed")?
            .set(
                "auto.offset.reset",
                if args.from_end { "latest" } else { "earliest" },
            )?
            .build()?,
    )
    .await?;
    let parts: Vec<TopicPartition> = (0..n as i32)
        .map(|p| TopicPartition::new(&args.topic, p))
        .collect();
    consumer.assign(&parts);
    let ends = admin
        .list_offsets(&args.topic, kafka_wire::OffsetSpec::Latest)
        .await?;
    eprintln!(
        "dead records in {} ({} partition{}){}; Ctrl-C stops",
        args.topic,
        n,
        if n == 1 { "" } else { "s" },
        if args.no_follow { "" } else { ", following" }
    );
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut shown = 0u64;
    loop {
        if args.no_follow
            && ends.iter().all(|(p, end)| {
                consumer
                    .position(&TopicPartition::new(&args.topic, *p))
                    .is_some_and(|pos| pos >= *end)
                    || *end == 0
            })
        {
            break;
        }
        let batches = tokio::select! {
            polled = consumer.poll(Duration::from_millis(500)) => polled?,
            _ = &mut interrupted => break,
        };
        for batch in batches {
            for r in batch.records {
                let dead = DeadRecord::parse(batch.tp.partition, r);
                if !filter.matches(&dead) {
                    continue;
                }
                shown += 1;
                if args.json {
                    println!("{}", crate::output::json(&batch.tp, &dead.record));
                } else {
                    let key = (dead.partition, dead.record.offset);
                    let to = replayed.get(&key).map(String::as_str);
                    println!("{}", describe(&args.topic, &dead, to));
                }
            }
        }
    }
    consumer.close(Duration::from_secs(5)).await;
    eprintln!("{shown} dead record{}", if shown == 1 { "" } else { "s" });
    Ok(())
}

async fn replay_cmd(connect: &ConnectArgs, args: ReplayArgs) -> anyhow::Result<()> {
    let options = ReplayOptions {
        dlt: args.dlt.clone(),
        to: args.to,
        sources: args.sources,
        filter: Filter::parse(&args.conditions).map_err(anyhow::Error::msg)?,
        limit: args.limit,
        dry_run: args.dry_run,
    };
    let report = replay::replay(connect.client_builder()?, &options).await?;
    let verb = if args.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    println!(
        "{verb} {} record{} from {}",
        report.replayed,
        if report.replayed == 1 { "" } else { "s" },
        args.dlt
    );
    for (topic, n) in &report.by_target {
        println!("  → {topic}: {n}");
    }
    println!(
        "skipped: {} already replayed, {} not matching --where, {} with no original topic (give --to)",
        report.already_replayed, report.filtered_out, report.no_target
    );
    if report.refused > 0 {
        let sources = if options.sources.is_empty() {
            replay::default_sources(&args.dlt)
        } else {
            options.sources.clone()
        };
        println!(
            "refused {} record{} whose provenance names another topic than {} \
             (kafka_dlt-original-topic is only as trustworthy as whoever can write it; \
             give --to TOPIC, or --source TOPIC if this DLT takes that topic's dead letters)",
            report.refused,
            if report.refused == 1 { "" } else { "s" },
            if sources.is_empty() {
                "this DLT's source (none: its name does not end in .DLT)".to_string()
            } else {
                sources.join(", ")
            }
        );
    }
    if !args.dry_run && report.replayed > 0 {
        println!(
            "markers in {} (read_committed consumers see each replayed record once)",
            replay::marker_topic(&args.dlt)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_wire::records::{Header, Record};

    #[test]
    fn a_dead_record_line_names_origin_attempts_error_and_replay() {
        let header = |k: &str, v: &[u8]| Header {
            key: Bytes::from(k.to_string()),
            value: Some(Bytes::copy_from_slice(v)),
        };
        let r = Record {
            offset: 5,
            timestamp: 0,
            key: Some(Bytes::from_static(b"order-1")),
            value: None,
            headers: vec![
                header("kafka_dlt-original-topic", b"orders"),
                header("kafka_dlt-original-partition", &2i32.to_be_bytes()),
                header("kafka_dlt-original-offset", &42i64.to_be_bytes()),
                header("kafka_dlt-original-consumer-group", b"billing"),
                header("kafka_dlt-exception-fqcn", b"Retryable"),
                header("kafka_dlt-exception-message", b"bank timeout"),
                header("retry_topic-attempts", &4i32.to_be_bytes()),
            ],
        };
        let line = describe("orders.DLT", &DeadRecord::parse(1, r), Some("orders"));
        assert_eq!(
            line,
            "orders.DLT 1@5  from orders 2@42 group billing after 4 attempts  \
             Retryable: bank timeout key=order-1  [replayed to orders]"
        );
        let bare = Record {
            offset: 0,
            timestamp: 0,
            key: None,
            value: None,
            headers: vec![],
        };
        assert_eq!(
            describe("x", &DeadRecord::parse(0, bare), None),
            "x 0@0  from ? (no kafka_dlt-original-* headers)  no error recorded"
        );
    }

    #[test]
    fn a_dead_record_line_carries_no_terminal_escapes_or_line_breaks() {
        let header = |k: &str, v: &[u8]| Header {
            key: Bytes::from(k.to_string()),
            value: Some(Bytes::copy_from_slice(v)),
        };
        let r = Record {
            offset: 5,
            timestamp: 0,
            key: Some(Bytes::from_static(b"\x1b[2Jk")),
            value: None,
            headers: vec![
                header("kafka_dlt-original-topic", b"orders\x1b]0;pwned\x07"),
                header("kafka_dlt-original-partition", &2i32.to_be_bytes()),
                header("kafka_dlt-original-offset", &42i64.to_be_bytes()),
                header("kafka_dlt-original-consumer-group", b"g\x1b[31m"),
                header("kafka_dlt-exception-fqcn", b"\x9bclass"),
                header(
                    "kafka_dlt-exception-message",
                    b"bad\norders.DLT 0@0  from payments 0@0",
                ),
            ],
        };
        let line = describe("orders.DLT", &DeadRecord::parse(1, r), Some("x\x1b[0m"));
        assert!(
            !line.chars().any(char::is_control),
            "control characters reach the terminal: {line:?}"
        );
        assert!(line.contains("key=base64:"), "{line}");
        assert!(
            line.contains("bad\\norders.DLT"),
            "a forged second line: {line}"
        );
    }
}
