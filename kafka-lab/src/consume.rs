//! `kafka-lab consume`: read a topic as a group member or from given partitions.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use consumer_core::share::ShareRecord;
use consumer_core::{Consumer, ConsumerConfig, TopicPartition};
use kafka_wire::IsolationLevel;

use crate::connect::ConnectArgs;
use crate::position::StartAt;

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The topic to read (alone: every partition, without a group, like kcat).
    #[arg(short = 't', long, required_unless_present = "topic_pattern")]
    topic: Option<String>,
    /// Consume every topic whose whole name matches this regex, including
    /// topics created later (needs --group).
    #[arg(long, conflicts_with = "topic", requires = "group")]
    topic_pattern: Option<String>,
    /// Consume as a member of this group (partitions assigned by the group;
    /// starts at the committed offsets).
    #[arg(short = 'G', long, conflicts_with = "partitions")]
    group: Option<String>,
    /// Consume as a member of this share group (KIP-932, Kafka 4.1+): the
    /// group's members share the partitions, each record goes to one of
    /// them. Nothing to acknowledge: each record is accepted once printed
    /// (the records of the last poll past --max are released, delivered
    /// again). A new share group starts where its group config
    /// share.auto.offset.reset says (default latest).
    #[arg(
        long,
        requires = "topic",
        conflicts_with_all = ["group", "partitions", "commit", "assignor", "instance_id", "topic_pattern"]
    )]
    share_group: Option<String>,
    /// With --share-group: print each record's delivery count before it
    /// (1 the first time; more after a release, a lock that ran out, or a
    /// member that left holding it). JSON: a "delivery_count" field.
    #[arg(long, requires = "share_group")]
    print_delivery: bool,
    /// Read only these partitions (comma-separated), without a group.
    #[arg(short = 'p', long, value_delimiter = ',')]
    partitions: Vec<i32>,
    /// Where to start: earliest, latest, an offset, -N (N records before the
    /// end), @MS or a time like 2026-11-30T08:00:00Z (the first record at or
    /// after it). With --group only earliest or latest, used where the group
    /// has no committed offset.
    #[arg(
        short = 'o',
        long,
        default_value = "earliest",
        allow_hyphen_values = true
    )]
    from: StartAt,
    /// kcat-style output format: %t topic, %p partition, %o offset, %T
    /// timestamp, %k key, %s value, %S value size, %h headers, \n \t.
    #[arg(short = 'f', long, conflicts_with_all = ["json", "print_key", "print_headers"])]
    format: Option<String>,
    /// Print each record's key before its value (plain output).
    #[arg(long)]
    print_key: bool,
    /// Print each record's headers (k=v,…) before its value (plain output).
    #[arg(long)]
    print_headers: bool,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Exit after this many milliseconds without a new record (with
    /// --share-group, counted from the first assignment).
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
    /// One JSON object per record. Keys, values and headers are strings
    /// when they are text, {"base64": "…"} when binary; `kafka_dlt-*`
    /// numbers are numbers.
    #[arg(long)]
    json: bool,
    /// Print nothing per record (for throughput runs); the summary still prints.
    #[arg(long, conflicts_with = "json")]
    quiet: bool,
    /// Consumer property as key=value (repeatable).
    #[arg(short = 'C', value_name = "KEY=VALUE")]
    consumer_properties: Vec<String>,
}

fn print(tp: &TopicPartition, r: &kafka_wire::records::Record, json: bool, format: &str) {
    if json {
        println!("{}", crate::output::json(tp, r));
    } else {
        print!("{}", crate::output::format(format, tp, r));
    }
}

/// One share record: `delivery=N<TAB>` before it, or a `delivery_count`
/// field in JSON, when `delivery` is given.
fn print_share(r: &ShareRecord, delivery: Option<u16>, json: bool, format: &str) {
    match (delivery, json) {
        (Some(n), true) => {
            let line = crate::output::json(&r.tp, &r.record);
            println!("{{\"delivery_count\":{n},{}", &line[1..]);
        }
        (Some(n), false) => {
            print!("delivery={n}\t");
            print(&r.tp, &r.record, false, format);
        }
        (None, _) => print(&r.tp, &r.record, json, format),
    }
}

pub async fn run(connect: &ConnectArgs, args: ConsumeArgs) -> anyhow::Result<()> {
    let admin = kafka_wire::Client::connect(connect.client_config()?).await?;
    if let Some(group) = &args.share_group {
        let topic = args.topic.as_deref().expect("clap requires --topic");
        crate::exists::require_topic(&admin, topic).await?;
        if args.from != StartAt::Earliest || args.isolation != "read_uncommitted" {
            bail!(
                "--from and --isolation do not apply to a share group: it starts where its group \
                 config share.auto.offset.reset says and reads as share.isolation.level says; set \
                 them with kafka-configs.sh --entity-type groups --entity-name {group}"
            );
        }
        let format = args
            .format
            .clone()
            .unwrap_or_else(|| crate::output::plain_format(args.print_key, args.print_headers));
        let json = args.json;
        let print =
            |r: &ShareRecord, delivery: Option<u16>| print_share(r, delivery, json, &format);
        return crate::share_groups::consume(
            connect,
            crate::share_groups::ShareConsume {
                group,
                topic,
                properties: &args.consumer_properties,
                max: args.max,
                idle_exit: args.idle_exit_ms.map(Duration::from_millis),
                quiet: args.quiet,
                print_delivery: args.print_delivery,
                print: &print,
            },
        )
        .await;
    }
    // A group member may subscribe before its topic exists (the group picks
    // it up once created, like Java's); reading partitions directly may not.
    // Still missing at the end with nothing read: the error, non-zero exit.
    let mut missing = None;
    let n = match &args.topic {
        Some(topic) if args.group.is_some() => {
            match crate::exists::require_topic(&admin, topic).await {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("warning: {e:#}\nsubscribed anyway: waiting for it to be created");
                    missing = Some(topic.clone());
                    0
                }
            }
        }
        Some(topic) => crate::exists::require_topic(&admin, topic).await?,
        None => 0, // a pattern: topics may appear later
    };
    let reset = match (args.from, &args.group) {
        (StartAt::Earliest, _) => "earliest",
        (StartAt::Latest, _) => "latest",
        (_, Some(_)) => bail!(
            "--from with an offset, -N or a time reads partitions directly: drop --group, \
             or move the group with `kafka-lab groups reset-offsets`"
        ),
        (_, None) => "earliest",
    };
    let format = args
        .format
        .clone()
        .unwrap_or_else(|| crate::output::plain_format(args.print_key, args.print_headers));
    let client = connect.client_builder()?;
    let mut b = ConsumerConfig::builder()
        .client(|_| client)
        .set("auto.offset.reset", reset)?
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
    let source = match (&args.topic, &args.topic_pattern) {
        (_, Some(pattern)) => {
            consumer.subscribe_pattern(pattern)?;
            format!("topics matching {pattern:?}")
        }
        (Some(topic), None) if args.group.is_some() => {
            consumer.subscribe(&[topic])?;
            topic.clone()
        }
        (Some(topic), None) => {
            let parts = crate::position::partitions(topic, &args.partitions, n)?;
            let isolation = if args.isolation == "read_committed" {
                IsolationLevel::ReadCommitted
            } else {
                IsolationLevel::ReadUncommitted
            };
            let starts = crate::position::resolve(&admin, &parts, args.from, isolation).await?;
            consumer.assign(&parts);
            for (tp, offset) in &starts {
                consumer.seek(tp, *offset);
            }
            topic.clone()
        }
        (None, None) => bail!("give --topic T or --topic-pattern REGEX"),
    };
    // Ctrl-C ends the loop like --max does: commit (with --commit), leave
    // the group at once (no session timeout for the next member), summary.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut stopped_by_user = false;
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
        let batches = tokio::select! {
            polled = consumer.poll(Duration::from_millis(200)) => polled?,
            _ = &mut interrupted => {
                stopped_by_user = true;
                break;
            }
        };
        for (i, batch) in batches.iter().enumerate() {
            for (j, r) in batch.records.iter().enumerate() {
                if !args.quiet {
                    print(&batch.tp, r, args.json, &format);
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
    if let (Some(topic), 0) = (&missing, count) {
        crate::exists::require_topic(&admin, topic).await?;
    }
    // Exclude the trailing idle wait from the rate.
    let busy = last_record.duration_since(started).as_secs_f64().max(1e-9);
    if stopped_by_user {
        eprintln!("interrupted: left the group");
    }
    eprintln!(
        "consumed {count} records from {} in {:.2} s ({:.0} records/s while records flowed){}",
        source,
        started.elapsed().as_secs_f64(),
        count as f64 / busy,
        if args.commit { " (committed)" } else { "" }
    );
    Ok(())
}
