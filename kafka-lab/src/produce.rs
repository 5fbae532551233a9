//! `kafka-lab produce`: a kcat-like producer with progress and a summary.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use kafka_wire::records::Compression;
use kafka_wire::ProducerConfigBuilder;
use kafka_wire::{Client, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
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

/// Deliveries awaited in order, so output and errors follow send order.
const MAX_OUTSTANDING: usize = 50_000;

/// Failed records reported one by one; the rest are only counted.
const FAILURES_SHOWN: u64 = 10;

struct Progress {
    started: Instant,
    last_print: Instant,
    sent: u64,
    delivered: u64,
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
                "  … {} sent, {} delivered ({:.0} records/s)",
                self.sent,
                self.delivered,
                self.delivered as f64 / secs.max(1e-9)
            );
        }
    }
}

/// One sent record: its number (from 0, in send order), key and delivery.
type Pending = (u64, Option<String>, DeliveryFuture);

/// Await the oldest delivery. A failed record is reported and counted, not
/// fatal: the producer fails only that record (a record too large for the
/// topic fails alone), so the records after it are still delivered.
async fn settle(pending: &mut VecDeque<Pending>, json: bool, progress: &mut Progress) {
    let (n, key, delivery) = pending.pop_front().expect("caller checks non-empty");
    let md = match delivery.await {
        Ok(md) => md,
        Err(e) => {
            progress.failed += 1;
            if progress.failed <= FAILURES_SHOWN {
                eprintln!("error: record #{n} was not delivered: {e}");
            } else if progress.failed == FAILURES_SHOWN + 1 {
                eprintln!("error: more records were not delivered (counted, not shown)");
            }
            progress.first_error.get_or_insert(e);
            return;
        }
    };
    progress.delivered += 1;
    if json {
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

pub async fn run(connect: &ConnectArgs, client: &Client, args: ProduceArgs) -> anyhow::Result<()> {
    let producer = Producer::with_client(client.clone(), config(&args, connect)?);
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
        delivered: 0,
        failed: 0,
        first_error: None,
        bytes: 0,
        show: args.count.is_some_and(|c| c >= 100_000),
    };
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let payload: Bytes = Bytes::from(vec![b'x'; args.size]);
    let mut stdin = (args.count.is_none()).then(|| tokio::io::BufReader::new(tokio::io::stdin()));
    let mut i: u64 = 0;
    let mut bad_line: Option<String> = None;
    loop {
        let mut line_key: Option<String> = None;
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
                            line_key = Some(String::from_utf8_lossy(&line[..at]).into_owned());
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
        let key = match (&args.key, &args.key_prefix) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(p)) => Some(format!("{p}{}", i % args.distinct_keys.max(1))),
            _ => line_key,
        };
        let mut rec = ProducerRecord::new(&args.topic).value(value.clone());
        rec.headers = headers.clone();
        if let Some(k) = &key {
            rec = rec.key(k.clone());
        }
        if let Some(p) = args.partition {
            rec = rec.partition(p);
        }
        progress.bytes += value.len() as u64;
        pending.push_back((i, key, producer.send(rec).await?));
        progress.sent += 1;
        i += 1;
        while pending.len() > MAX_OUTSTANDING {
            settle(&mut pending, args.json, &mut progress).await;
        }
        progress.tick();
    }
    producer.flush().await;
    while !pending.is_empty() {
        settle(&mut pending, args.json, &mut progress).await;
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
    if progress.delivered != progress.sent {
        bail!(
            "{} sent but {} delivered",
            progress.sent,
            progress.delivered
        );
    }
    eprintln!(
        "produced {} records ({:.1} MB) to {} in {:.2} s: {:.0} records/s, {:.1} MB/s{outcome}",
        progress.delivered,
        progress.bytes as f64 / 1e6,
        args.topic,
        secs,
        progress.delivered as f64 / secs.max(1e-9),
        progress.bytes as f64 / 1e6 / secs.max(1e-9),
    );
    Ok(())
}
