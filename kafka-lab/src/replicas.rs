//! `kafka-lab topics reassign | reassignments | elect-leaders`: where a
//! partition's replicas live and which one leads (KIP-455, KIP-460), like
//! `kafka-reassign-partitions` and `kafka-leader-election`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kafka_wire::{
    Client, ElectionType, Error, KafkaCode, LeaderElection, OngoingReassignment, PartitionInfo,
    PartitionReassignment, TopicPartition,
};

/// How long `--wait` waits for a reassignment to finish, and how often it looks.
const WAIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(250);

/// A comma-separated list as ids.
fn ids(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// `tp`'s leader, replicas and ISR, by fresh metadata.
async fn placement(client: &Client, tp: &TopicPartition) -> anyhow::Result<PartitionInfo> {
    let md = client
        .refresh_metadata(Some(std::slice::from_ref(&tp.topic)))
        .await?;
    let p = md.partition(&tp.topic, tp.partition).with_context(|| {
        format!(
            "{tp} does not exist; `kafka-lab topics describe {}` lists its partitions",
            tp.topic
        )
    })?;
    Ok(p.clone())
}

/// `topics reassign`: move `tp` to `replicas` (or cancel its move), and
/// with `wait`, wait until the data moved.
pub async fn reassign(
    client: &Client,
    tp: TopicPartition,
    replicas: Vec<i32>,
    cancel: bool,
    wait: bool,
) -> anyhow::Result<()> {
    crate::exists::require_topic(client, &tp.topic).await?;
    let PartitionInfo {
        leader,
        replicas: before,
        ..
    } = placement(client, &tp).await?;
    if !cancel {
        let md = client.metadata();
        if let Some(unknown) = replicas.iter().find(|id| !md.brokers.contains_key(id)) {
            let mut known: Vec<i32> = md.brokers.keys().copied().collect();
            known.sort_unstable();
            bail!(
                "broker {unknown} is not in the cluster (its brokers: {}); `kafka-lab check` lists them",
                ids(&known)
            );
        }
    }
    let change = if cancel {
        PartitionReassignment::cancel(tp.clone())
    } else {
        PartitionReassignment::to(tp.clone(), replicas.clone())
    };
    let answers = client.alter_partition_reassignments(&[change]).await?;
    if let Some(Err(e)) = answers.get(&tp) {
        if let Error::Broker {
            code: KafkaCode::NoReassignmentInProgress,
            ..
        } = e
        {
            bail!(
                "{tp} has no reassignment under way: nothing to cancel \
                 (`kafka-lab topics reassignments` lists the moves under way)"
            );
        }
        if cancel {
            bail!("cancelling the reassignment of {tp} failed: {e}");
        }
        bail!("reassigning {tp} to {} failed: {e}", ids(&replicas));
    }
    if cancel {
        println!(
            "cancelled the reassignment of {tp} (replicas {}, leader {leader}); \
             its replicas go back to those before it",
            ids(&before)
        );
    } else {
        println!(
            "reassigning {tp}: replicas {} -> {} (leader {leader}); \
             `kafka-lab topics reassignments --topic {}` shows the move under way",
            ids(&before),
            ids(&replicas),
            tp.topic
        );
    }
    if !wait {
        return Ok(());
    }
    let started = Instant::now();
    loop {
        let ongoing = client
            .list_partition_reassignments(Some(std::slice::from_ref(&tp)))
            .await?;
        let PartitionInfo {
            leader,
            replicas: now,
            isr,
            ..
        } = placement(client, &tp).await?;
        let settled = !ongoing.contains_key(&tp)
            && (cancel || now == replicas)
            && now.iter().all(|r| isr.contains(r));
        if settled {
            println!(
                "{tp} done in {:.1} s: replicas {}, in sync {}, leader {leader}",
                started.elapsed().as_secs_f64(),
                ids(&now),
                ids(&isr)
            );
            if now.first().is_some_and(|&preferred| preferred != leader) {
                println!(
                    "  its preferred leader, {}, leads after `kafka-lab topics elect-leaders --topic {} --partition {}`",
                    now[0], tp.topic, tp.partition
                );
            }
            return Ok(());
        }
        if started.elapsed() > WAIT {
            bail!(
                "{tp} has not finished moving after {WAIT:?}: replicas {}, in sync {}{}; \
                 a large partition copies for a while (and a replication throttle slows it): \
                 look again with `kafka-lab topics reassignments --topic {}`",
                ids(&now),
                ids(&isr),
                ongoing.get(&tp).map(progress).unwrap_or_default(),
                tp.topic
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn progress(r: &OngoingReassignment) -> String {
    format!(
        ", adding {}, removing {}",
        if r.adding.is_empty() {
            "-".into()
        } else {
            ids(&r.adding)
        },
        if r.removing.is_empty() {
            "-".into()
        } else {
            ids(&r.removing)
        }
    )
}

/// `topics reassignments`: the moves under way, of `topic` or all.
pub async fn list(client: &Client, topic: Option<String>) -> anyhow::Result<()> {
    let tps: Option<Vec<TopicPartition>> = match &topic {
        None => None,
        Some(t) => {
            let n = crate::exists::require_topic(client, t).await?;
            Some((0..n as i32).map(|p| TopicPartition::new(t, p)).collect())
        }
    };
    let ongoing = client.list_partition_reassignments(tps.as_deref()).await?;
    if ongoing.is_empty() {
        println!(
            "no reassignment under way{}",
            topic.map(|t| format!(" for {t}")).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{:>24} {:>12} {:>10} {:>10}",
        "partition", "replicas", "adding", "removing"
    );
    let or_dash = |v: &[i32]| if v.is_empty() { "-".into() } else { ids(v) };
    for (tp, r) in ongoing {
        println!(
            "{:>24} {:>12} {:>10} {:>10}",
            tp.to_string(),
            ids(&r.replicas),
            or_dash(&r.adding),
            or_dash(&r.removing)
        );
    }
    Ok(())
}

/// `topics elect-leaders`: elect `topic`'s (or `partition`'s) leaders, or
/// every partition's with `topic` `None`; fails if any partition refused.
pub async fn elect(
    client: &Client,
    topic: Option<String>,
    partition: Option<i32>,
    unclean: bool,
) -> anyhow::Result<()> {
    let tps: Option<Vec<TopicPartition>> = match (&topic, partition) {
        (None, _) => None,
        (Some(t), Some(p)) => {
            crate::exists::require_topic(client, t).await?;
            Some(vec![TopicPartition::new(t, p)])
        }
        (Some(t), None) => {
            let n = crate::exists::require_topic(client, t).await?;
            Some((0..n as i32).map(|p| TopicPartition::new(t, p)).collect())
        }
    };
    let election = if unclean {
        ElectionType::Unclean
    } else {
        ElectionType::Preferred
    };
    let results = client.elect_leaders(election, tps.as_deref()).await?;
    if results.is_empty() {
        println!("no partition needed an election");
        return Ok(());
    }
    // The controller decided; the brokers' metadata follows a moment later.
    let topics: Vec<String> = {
        let mut t: Vec<String> = results.keys().map(|tp| tp.topic.clone()).collect();
        t.dedup();
        t
    };
    let elected: Vec<&TopicPartition> = results
        .iter()
        .filter(|(_, r)| matches!(r, LeaderElection::Elected))
        .map(|(tp, _)| tp)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let md = loop {
        let md = client.refresh_metadata(Some(&topics)).await?;
        let shown = elected.iter().all(|tp| {
            md.partition(&tp.topic, tp.partition)
                .is_some_and(|p| unclean || p.replicas.first() == Some(&p.leader))
        });
        if shown || Instant::now() > deadline {
            break md;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut failed = 0;
    for (tp, r) in &results {
        let leader = md
            .partition(&tp.topic, tp.partition)
            .map_or_else(|| "?".to_string(), |p| p.leader.to_string());
        match r {
            LeaderElection::Elected => println!("{tp}: elected, leader now {leader}"),
            LeaderElection::NotNeeded if unclean => {
                println!("{tp}: has a leader ({leader}), nothing to do")
            }
            LeaderElection::NotNeeded => {
                println!("{tp}: its preferred replica already leads ({leader}), nothing to do")
            }
            LeaderElection::Failed(e) => {
                failed += 1;
                println!("{tp}: refused: {e}");
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} partitions got no new leader (see above); a preferred replica \
             out of the ISR leads once it caught up: elect again then",
            results.len()
        );
    }
    Ok(())
}
