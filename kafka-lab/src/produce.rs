//! `kafka-lab produce`: a kcat-like producer with progress and a summary.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use kafka_wire::records::Compression;
use kafka_wire::ProducerConfigBuilder;
use kafka_wire::{
    Client, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, Topic, Undelivered,
};
use tokio::io::AsyncBufReadExt;

use crate::connect::ConnectArgs;
use crate::json::json_str;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The topic to write to.
    #[arg(short = 't', long)]
    topic: String,
    /// Split each stdin line at the first DELIM into key and value (kcat's
    /// -K), e.g. -K: for `key:value`. A line without it has no key.
    #[arg(short = 'K', long, value_name = "DELIM", conflicts_with_all = ["key", "key_prefix"])]
    key_delimiter: Option<String>,
    /// Send stdin lines as raw bytes even when they are not UTF-8 (by
    /// default a line that is not UTF-8 is an error naming it).
    #[arg(long)]
    binary: bool,
    /// Generate this many records instead of reading lines from stdin.
    #[arg(long)]
    count: Option<u64>,
    /// Size of each generated value in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// The same key for every record.
    #[arg(long, conflicts_with = "key_prefix")]
    key: Option<String>,
    /// Keys P0, P1, … cycling over --distinct-keys.
    #[arg(long)]
    key_prefix: Option<String>,
    /// How many keys --key-prefix cycles over.
    #[arg(long, default_value_t = 1000, requires = "key_prefix")]
    distinct_keys: u64,
    /// Record header as key=value (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Send everything to this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// all, 1 or 0.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Run the whole produce in one transaction with this transactional.id.
    #[arg(long)]
    transactional_id: Option<String>,
    /// With --transactional-id: abort instead of commit at the end.
    #[arg(long, requires = "transactional_id")]
    abort: bool,
    /// Print one JSON line per delivered record: {"topic","partition","offset","key"}.
    #[arg(long)]
    json: bool,
    /// Producer property as key=value (repeatable), e.g. -P linger.ms=20.
    #[arg(short = 'P', value_name = "KEY=VALUE")]
    producer_properties: Vec<String>,
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// With `--json`: deliveries awaited in order, so output follows send order.
const MAX_OUTSTANDING: usize = 50_000;

/// Failed records reported one by one; the rest are only counted.
const FAILURES_SHOWN: u64 = 10;

/// Records between two looks at the clock for the progress line.
const TICK_EVERY: u64 = 4096;

struct Progress {
    started: Instant,
    last_print: Instant,
    sent: u64,
    /// Records that failed for good (e.g. one larger than the topic accepts).
    /// The others still go out; the run ends with an error naming the count.
    failed: u64,
    first_error: Option<kafka_wire::Error>,
    bytes: u64,
    show: bool,
}

impl Progress {
    fn tick(&mut self) {
        if self.show && self.last_print.elapsed() >= Duration::from_secs(1) {
            self.last_print = Instant::now();
            let secs = self.started.elapsed().as_secs_f64();
            eprintln!(
                "  … {} sent ({:.0} records/s)",
                self.sent,
                self.sent as f64 / secs.max(1e-9)
            );
        }
    }

    /// Count and show one record that was not delivered (`what` names it).
    fn failed(&mut self, what: std::fmt::Arguments<'_>, e: kafka_wire::Error) {
        self.failed += 1;
        if self.failed <= FAILURES_SHOWN {
            eprintln!("error: {what} was not delivered: {e}");
        } else if self.failed == FAILURES_SHOWN + 1 {
            eprintln!("error: more records were not delivered (counted, not shown)");
        }
        self.first_error.get_or_insert(e);
    }

    /// The records `flush` reported as not delivered. This run's producer
    /// queued records in send order from one task, so a record's number is
    /// its place in the input (a stdin line, from 0).
    fn undelivered(&mut self, u: Undelivered) {
        for f in u.records {
            self.failed(format_args!("record #{}", f.number), f.error);
        }
        if let Some((n, e)) = u.not_kept {
            self.failed += n - 1;
            self.failed(format_args!("{n} further record(s)"), e);
        }
    }
}

/// With `--json`: one sent record, its number (from 0, in send order), key
/// and delivery.
type Pending = (u64, Option<String>, DeliveryFuture);

/// Await the oldest delivery (`--json`, which prints each record's offset).
/// A failed record is reported and counted, not fatal: the producer fails
/// only that record (a record too large for the topic fails alone), so the
/// records after it are still delivered.
async fn settle(pending: &mut VecDeque<Pending>, progress: &mut Progress) {
    let (n, key, delivery) = pending.pop_front().expect("caller checks non-empty");
    let md = match delivery.await {
        Ok(md) => md,
        Err(e) => return progress.failed(format_args!("record #{n}"), e),
    };
    println!(
        "{{\"topic\":{},\"partition\":{},\"offset\":{},\"key\":{}}}",
        json_str(&md.topic),
        md.partition,
        md.offset,
        key.as_deref()
            .map(json_str)
            .unwrap_or_else(|| "null".into())
    );
}

fn config(args: &ProduceArgs, connect: &ConnectArgs) -> anyhow::Result<ProducerConfig> {
    let compression = Compression::parse(&args.compression).with_context(|| {
        format!(
            "--compression {:?}: expected none, gzip, snappy, lz4 or zstd",
            args.compression
        )
    })?;
    let client = connect.client_builder()?;
    let mut b: ProducerConfigBuilder = ProducerConfig::builder()
        .client(|_| client)
        .set("acks", &args.acks)?
        .compression(compression);
    if args.acks != "all" && args.acks != "-1" {
        b = b.idempotent(false);
    }
    if let Some(id) = &args.transactional_id {
        b = b.transactional_id(id);
    }
    for kv in &args.producer_properties {
        let (k, v) = crate::connect::key_value("-P", kv)?;
        b = b.set(k, v)?;
    }
    Ok(b.build()?)
}

/// Send every record without awaiting it, then one `flush` reports the
/// records that failed (the library's bulk idiom). `--json` awaits each
/// record's delivery instead, to print its offset.
pub async fn run(connect: &ConnectArgs, client: &Client, args: ProduceArgs) -> anyhow::Result<()> {
    let producer = Producer::with_client(client.clone(), config(&args, connect)?);
    let topic = Topic::new(&args.topic); // once: every record shares the name
    let headers: Vec<(String, Option<Bytes>)> = args
        .headers
        .iter()
        .map(|kv| {
            let (k, v) = crate::connect::key_value("--header", kv)?;
            Ok((k.to_string(), Some(Bytes::from(v.to_string()))))
        })
        .collect::<anyhow::Result<_>>()?;
    if args.transactional_id.is_some() {
        producer.init_transactions().await?;
        producer.begin_transaction().await?;
    }

    let mut progress = Progress {
        started: Instant::now(),
        last_print: Instant::now(),
        sent: 0,
        failed: 0,
        first_error: None,
        bytes: 0,
        show: args.count.is_some_and(|c| c >= 100_000),
    };
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let payload: Bytes = Bytes::from(vec![b'x'; args.size]);
    let fixed_key: Option<Bytes> = args.key.clone().map(Bytes::from);
    let mut stdin = (args.count.is_none()).then(|| tokio::io::BufReader::new(tokio::io::stdin()));
    let mut i: u64 = 0;
    let mut bad_line: Option<String> = None;
    loop {
        let mut line_key: Option<Bytes> = None;
        let value = match (&mut stdin, args.count) {
            (Some(input), _) => {
                let mut line = Vec::new();
                if input.read_until(b'\n', &mut line).await? == 0 {
                    break;
                }
                if line.ends_with(b"\n") {
                    line.pop();
                    if line.ends_with(b"\r") {
                        line.pop();
                    }
                }
                if !args.binary {
                    if let Err(e) = std::str::from_utf8(&line) {
                        bad_line = Some(format!(
                            "stdin line {} is not UTF-8 (invalid byte at column {}); \
                             pass --binary to send lines as raw bytes ({} line(s) before it \
                             were sent)",
                            i + 1,
                            e.valid_up_to() + 1,
                            i
                        ));
                        break;
                    }
                }
                match &args.key_delimiter {
                    Some(d) => match find(&line, d.as_bytes()) {
                        Some(at) => {
                            line_key = Some(Bytes::copy_from_slice(&line[..at]));
                            Bytes::copy_from_slice(&line[at + d.len()..])
                        }
                        None => Bytes::from(line),
                    },
                    None => Bytes::from(line),
                }
            }
            (None, Some(n)) if i < n => payload.clone(),
            _ => break,
        };
        let key: Option<Bytes> = match (&fixed_key, &args.key_prefix) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(p)) => Some(Bytes::from(format!("{p}{}", i % args.distinct_keys.max(1)))),
            _ => line_key,
        };
        progress.bytes += value.len() as u64;
        let mut rec = ProducerRecord::new(&topic).value(value);
        if !headers.is_empty() {
            rec.headers = headers.clone();
        }
        if let Some(k) = &key {
            rec.key = Some(k.clone());
        }
        if let Some(p) = args.partition {
            rec = rec.partition(p);
        }
        let delivery = producer.send(rec).await?;
        if args.json {
            let key = key.map(|k| String::from_utf8_lossy(&k).into_owned());
            pending.push_back((i, key, delivery));
            while pending.len() > MAX_OUTSTANDING {
                settle(&mut pending, &mut progress).await;
            }
        } // else dropped: a failure of this record comes back from `flush`
        progress.sent += 1;
        i += 1;
        if i % TICK_EVERY == 0 {
            progress.tick();
        }
    }
    let flushed = producer.flush().await;
    while !pending.is_empty() {
        settle(&mut pending, &mut progress).await;
    }
    if let Err(undelivered) = flushed {
        progress.undelivered(undelivered);
    }
    if let Some(bad) = bad_line {
        producer.close().await;
        bail!("{bad}");
    }
    if let Some(first) = progress.first_error.take() {
        // A transaction with a failed record cannot commit: abort it.
        let aborted = if args.transactional_id.is_some() {
            producer
                .abort_transaction()
                .await
                .context("aborting the transaction after a failed record")?;
            " (transaction aborted)"
        } else {
            ""
        };
        producer.close().await;
        bail!(
            "{} of {} records not delivered{aborted}; the first: {first}",
            progress.failed,
            progress.sent
        );
    }
    let outcome = match (&args.transactional_id, args.abort) {
        (Some(_), false) => {
            producer.commit_transaction().await?;
            " (transaction committed)"
        }
        (Some(_), true) => {
            producer.abort_transaction().await?;
            " (transaction aborted)"
        }
        _ => "",
    };
    producer.close().await;
    let secs = progress.started.elapsed().as_secs_f64();
    eprintln!(
        "produced {} records ({:.1} MB) to {} in {:.2} s: {:.0} records/s, {:.1} MB/s{outcome}",
        progress.sent,
        progress.bytes as f64 / 1e6,
        args.topic,
        secs,
        progress.sent as f64 / secs.max(1e-9),
        progress.bytes as f64 / 1e6 / secs.max(1e-9),
    );
    Ok(())
}
