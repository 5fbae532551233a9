//! Start positions, as `consume --from` and `groups reset-offsets` take
//! them: earliest, latest, an offset, N before the end, or a time.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use consumer_core::TopicPartition;
use kafka_wire::{Client, IsolationLevel, OffsetSpec};

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    /// This offset (clamped to the log: below the start is the start,
    /// past the end is the end).
    Offset(i64),
    /// This many records before the end (`-N`).
    FromEnd(i64),
    /// The first record at or after this time (ms since the epoch); the
    /// end if there is none.
    Time(i64),
}

impl std::str::FromStr for StartAt {
    type Err = String;

    /// `earliest`|`beginning`, `latest`|`end`, `N`, `-N`, `@MS` (ms since
    /// the epoch) or an RFC 3339 time (`2026-11-30T08:00:00Z`, offsets like
    /// `+01:00` too).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Ok(match s {
            "earliest" | "beginning" | "smallest" => StartAt::Earliest,
            "latest" | "end" | "largest" => StartAt::Latest,
            _ if s.starts_with('-') => StartAt::FromEnd(
                s[1..]
                    .parse()
                    .map_err(|_| format!("{s:?}: -N wants a number of records"))?,
            ),
            _ if s.starts_with('@') || s.starts_with("s@") => {
                let ms = s.trim_start_matches("s@").trim_start_matches('@');
                StartAt::Time(
                    ms.parse()
                        .map_err(|_| format!("{s:?}: @MS wants milliseconds since the epoch"))?,
                )
            }
            _ if s.contains('T') => StartAt::Time(parse_rfc3339_ms(s)?),
            _ => StartAt::Offset(s.parse().map_err(|_| {
                format!(
                    "{s:?}: expected earliest, latest, an offset, -N (N before the end), \
                     @MS or a time like 2026-11-30T08:00:00Z"
                )
            })?),
        })
    }
}

/// The offset each of `tps` starts at.
pub async fn resolve(
    client: &Client,
    tps: &[TopicPartition],
    at: StartAt,
    isolation: IsolationLevel,
) -> anyhow::Result<BTreeMap<TopicPartition, i64>> {
    let earliest = client
        .partition_offsets(tps, OffsetSpec::Earliest, isolation)
        .await?;
    let latest = client
        .partition_offsets(tps, OffsetSpec::Latest, isolation)
        .await?;
    let by_time = match at {
        StartAt::Time(ms) => Some(
            client
                .partition_offsets(tps, OffsetSpec::Timestamp(ms), isolation)
                .await?,
        ),
        _ => None,
    };
    let mut out = BTreeMap::new();
    for tp in tps {
        let (lo, hi) = (
            earliest.get(tp).copied().context("no earliest offset")?,
            latest.get(tp).copied().context("no latest offset")?,
        );
        let o = match at {
            StartAt::Earliest => lo,
            StartAt::Latest => hi,
            StartAt::Offset(o) => o.clamp(lo, hi),
            StartAt::FromEnd(n) => (hi - n).max(lo),
            StartAt::Time(_) => match by_time.as_ref().and_then(|m| m.get(tp)).copied() {
                Some(o) if o >= 0 => o,
                _ => hi, // no record that late
            },
        };
        out.insert(tp.clone(), o);
    }
    Ok(out)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` → ms since the epoch.
fn parse_rfc3339_ms(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?}: expected a time like 2026-11-30T08:00:00Z");
    let (date, rest) = s.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [y, mo, day] = d[..] else {
        return Err(bad());
    };
    let (time, offset_min) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':').ok_or_else(bad)?;
        let oh: i64 = oh.parse().map_err(|_| bad())?;
        let om: i64 = om.parse().map_err(|_| bad())?;
        (t, sign * (oh * 60 + om))
    } else {
        bail_str(bad())?
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [h, mi, sec] = t[..] else {
        return Err(bad());
    };
    let ms_frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{:0<3}", &frac[..frac.len().min(3)])
            .parse()
            .map_err(|_| bad())?
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Ok(secs * 1000 + ms_frac)
}

fn bail_str<T>(e: String) -> Result<T, String> {
    Err(e)
}

/// `tps` of `topic`: the given partitions, or all `n`.
pub fn partitions(topic: &str, given: &[i32], n: usize) -> anyhow::Result<Vec<TopicPartition>> {
    if let Some(p) = given.iter().find(|p| **p < 0 || **p as usize >= n) {
        bail!(
            "{topic} has partitions 0..{}; there is no partition {p}",
            n.saturating_sub(1)
        );
    }
    Ok(if given.is_empty() {
        (0..n as i32)
            .map(|p| TopicPartition::new(topic, p))
            .collect()
    } else {
        given
            .iter()
            .map(|p| TopicPartition::new(topic, *p))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!("earliest".parse(), Ok(StartAt::Earliest));
        assert_eq!("end".parse(), Ok(StartAt::Latest));
        assert_eq!("42".parse(), Ok(StartAt::Offset(42)));
        assert_eq!("-10".parse(), Ok(StartAt::FromEnd(10)));
        assert_eq!(
            "@1700000000000".parse(),
            Ok(StartAt::Time(1_700_000_000_000))
        );
        assert_eq!(
            "2023-11-14T22:13:20Z".parse(),
            Ok(StartAt::Time(1_700_000_000_000))
        );
        assert_eq!(
            "2023-11-14T23:13:20.5+01:00".parse(),
            Ok(StartAt::Time(1_700_000_000_500))
        );
        assert!("yesterday".parse::<StartAt>().is_err());
    }
}
