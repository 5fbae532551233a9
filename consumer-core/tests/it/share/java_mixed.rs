//! A share group mixing our member with Java's: the console share consumer
//! (`org.apache.kafka.tools.consumer.ConsoleShareConsumer`) from the jars
//! `cargo xtask broker up` fetched. The broker shares the partitions
//! between both, and every record is handled by one of them, once.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consumer_core::share::AcknowledgeType;

use super::{share_consumer, share_group, subscribe};

const N: usize = 300;

fn java_tools_jars() -> Option<PathBuf> {
    crate::common::harness_jars("kafka-tools")
}

/// Kills the Java member when the test ends, whatever happened.
struct JavaMember(Child);

impl Drop for JavaMember {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn our_member_and_javas_console_share_consumer_handle_every_record_once() {
    let b = testkit::require_broker!();
    let Some(jars) = java_tools_jars() else {
        return;
    };
    let admin = testkit::client(&b).await;
    let topic =
        testkit::numbered_topic(&b, &admin, "share-java", 3, N as u32, |i| format!("k{i}")).await;
    let group = share_group(&admin, "share-java").await;
    // Small acquisitions on both sides, so that neither takes everything
    // in one go (KIP-1206 record_limit).
    let small = [
        ("max.poll.records", "10"),
        ("share.acquire.mode", "record_limit"),
    ];
    let mut ours = share_consumer(
        &b,
        &group,
        &[
            small[0],
            small[1],
            ("share.acknowledgement.mode", "explicit"),
        ],
    )
    .await;
    if subscribe(&mut ours, &[&topic]).await.is_none() {
        return;
    }

    let mut java = Command::new("java");
    java.arg("-cp")
        .arg(format!("{}/*", jars.display()))
        .arg("org.apache.kafka.tools.consumer.ConsoleShareConsumer")
        .args([
            "--bootstrap-server",
            &b.bootstrap,
            "--topic",
            &topic,
            "--group",
            &group,
        ]);
    for (k, v) in small {
        java.args(["--command-property", &format!("{k}={v}")]);
    }
    let mut java = JavaMember(
        java.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("java"),
    );
    let java_seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let reader = {
        let seen = java_seen.clone();
        let out = java.0.stdout.take().expect("piped");
        std::thread::spawn(move || {
            // Record values are the numbers we produced; skip any log line.
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(i) = line.trim().parse::<u32>() {
                    seen.lock().unwrap().push(i);
                }
            }
        })
    };
    // Both in the group before ours reads anything.
    let both = testkit::eventually_async(Duration::from_secs(60), || async {
        admin
            .describe_share_group(&group)
            .await
            .is_ok_and(|d| d.members.len() == 2)
    })
    .await;
    assert!(both, "the Java member did not join");

    let mut ours_seen: Vec<u32> = Vec::new();
    let distinct = |ours: &[u32]| {
        let mut all: BTreeSet<u32> = java_seen.lock().unwrap().iter().copied().collect();
        all.extend(ours.iter().copied());
        all.len()
    };
    let end = Instant::now() + Duration::from_secs(90);
    while distinct(&ours_seen) < N && Instant::now() < end {
        for r in ours.poll(Duration::from_millis(500)).await.unwrap() {
            let v = std::str::from_utf8(r.record.value.as_deref().unwrap()).unwrap();
            ours_seen.push(v.parse().unwrap());
            ours.acknowledge(&r, AcknowledgeType::Accept).unwrap();
        }
        for o in ours.commit_sync(Duration::from_secs(10)).await.unwrap() {
            assert!(o.error.is_none(), "{o:?}");
        }
        // Some work, so the Java member gets its turns.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing comes again: no record handled twice, on either side.
    let java_count = || java_seen.lock().unwrap().len();
    let settled = java_count();
    let quiet = testkit::stays_for(Duration::from_secs(3), || java_count() == settled).await;
    let more = ours.poll(Duration::from_millis(500)).await.unwrap();
    ours.close().await.unwrap();
    drop(java);
    reader.join().expect("the reader thread");

    let java_seen = java_seen.lock().unwrap().clone();
    assert_eq!(distinct(&ours_seen), N, "every record handled");
    assert!(quiet && more.is_empty(), "nothing delivered again");
    assert!(
        !ours_seen.is_empty() && !java_seen.is_empty(),
        "both handled records: ours {}, Java's {}",
        ours_seen.len(),
        java_seen.len()
    );
    let mut all = ours_seen.clone();
    all.extend(&java_seen);
    all.sort_unstable();
    let twice: Vec<u32> = all
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    assert!(
        twice.is_empty(),
        "handled twice: {twice:?} (ours {}, Java's {})",
        ours_seen.len(),
        java_seen.len()
    );
}
