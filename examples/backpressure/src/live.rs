//! The live line: the seed's numbers, one line a second, from the
//! runtime's [`Snapshot`]s and [`Stats`].

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Instant;

use resilience::observe::Snapshot;
use resilience::Stats;

/// One second of a running service (or of every member of a group).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Line {
    /// Seconds since the first line.
    pub at_s: f64,
    /// Records polled, not finished (records), summed over members.
    pub in_flight_records: usize,
    /// Their bytes (bytes).
    pub in_flight_bytes: usize,
    /// Partitions whose fetching is paused / assigned, over members.
    pub paused: usize,
    pub assigned: usize,
    /// Log end minus committed (records): the group's, read from outside,
    /// when given; else the members' own commit lag.
    pub lag: i64,
    /// Records handled per second since the previous line (records/s).
    pub per_second: f64,
    /// Members running.
    pub members: usize,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>5.1}s  in flight {:>5} rec {:>7.1} KiB | paused {}/{} | lag {:>6} | {:>6.0} rec/s | members {}",
            self.at_s,
            self.in_flight_records,
            self.in_flight_bytes as f64 / 1024.0,
            self.paused,
            self.assigned,
            self.lag,
            self.per_second,
            self.members,
        )
    }
}

/// Turns snapshots into [`Line`]s (it remembers the previous handled
/// count, for the throughput).
#[derive(Debug, Default)]
pub struct Live {
    started: Option<Instant>,
    last: Option<(Instant, u64)>,
}

impl Live {
    /// The line for a service's own snapshot and counters.
    pub fn line(&mut self, members: &[(&Snapshot, &Stats)], group_lag: Option<i64>) -> Line {
        let snaps: Vec<&Snapshot> = members.iter().map(|(s, _)| *s).collect();
        let handled = members
            .iter()
            .map(|(_, st)| st.handled.load(Ordering::Relaxed))
            .sum();
        self.line_of(&snaps, handled, group_lag)
    }

    /// The line for running members' `snapshots`, `handled` records in all
    /// so far (stopped members included), and the group's lag if read.
    pub fn line_of(
        &mut self,
        snapshots: &[&Snapshot],
        handled: u64,
        group_lag: Option<i64>,
    ) -> Line {
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        let per_second = match self.last.replace((now, handled)) {
            Some((then, before)) if now > then => {
                handled.saturating_sub(before) as f64 / (now - then).as_secs_f64()
            }
            _ => 0.0,
        };
        Line {
            at_s: (now - started).as_secs_f64(),
            in_flight_records: snapshots.iter().map(|s| s.in_flight_records).sum(),
            in_flight_bytes: snapshots.iter().map(|s| s.in_flight_bytes).sum(),
            paused: snapshots.iter().map(|s| s.paused()).sum(),
            assigned: snapshots.iter().map(|s| s.partitions.len()).sum(),
            lag: group_lag.unwrap_or_else(|| snapshots.iter().map(|s| s.commit_lag()).sum()),
            per_second,
            members: snapshots.len(),
        }
    }
}
