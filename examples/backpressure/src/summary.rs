//! The summary table: one row per situation, then one line each saying in
//! words what held.

use crate::demo::Row;

/// The table of `rows` (markdown, under 120 columns) and the notes.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "#",
        "situation",
        "produced",
        "handled",
        "dups",
        "lost",
        "lag max",
        "lag end",
        "rebal./exp.",
        "regress",
        "max rec",
        "max KiB",
    ];
    let kib = |b: usize| format!("{:.0}", b as f64 / 1024.0);
    let body: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let rebalances: usize = r.assignments.iter().sum();
            let expected: usize = r.expected_assignments.iter().sum();
            vec![
                (i + 1).to_string(),
                r.report.scenario.to_string(),
                r.report.produced.to_string(),
                r.report.handled.to_string(),
                r.report.duplicates.to_string(),
                r.report.lost.to_string(),
                r.peak_lag.to_string(),
                r.end_lag.to_string(),
                format!("{rebalances}/{expected}"),
                r.commit_regressions.to_string(),
                r.peak_in_flight.0.to_string(),
                kib(r.peak_in_flight.1),
            ]
        })
        .collect();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &body {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            let pad = " ".repeat(w - c.chars().count());
            s += &if i == 1 {
                format!(" {c}{pad} |")
            } else {
                format!(" {pad}{c} |")
            };
        }
        s
    };
    let mut t = line(&header.map(String::from));
    t += "\n|";
    for (i, w) in width.iter().enumerate() {
        t += &if i == 1 {
            format!(":{}-|", "-".repeat(*w))
        } else {
            format!("-{}:|", "-".repeat(*w))
        };
    }
    for row in &body {
        t += "\n";
        t += &line(row);
    }
    if let Some(r) = rows.first() {
        t += &format!(
            "\n\nlag: log end minus the group's committed offsets (records), read every second\n\
             from outside the group. rebal./exp.: assignments the members saw / one per membership\n\
             change each member lived through. regress: committed offsets that went backwards\n\
             (each member's commits, and group-wide across members). max rec / KiB: the most any\n\
             member held polled and unfinished; bound {} records / {} KiB, which the runtime may\n\
             pass by one poll ({} records / {} KiB).\n",
            r.bound.0,
            kib(r.bound.1),
            r.one_poll.0,
            kib(r.one_poll.1)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        t += &wrap(
            &format!("\n{}. {}: {}", i + 1, r.report.scenario, verdict(r)),
            100,
        );
    }
    t
}

/// What held, in words.
fn verdict(r: &Row) -> String {
    let mut parts = vec![format!(
        "lag peaked at {} and drained to {} {:.1} s after the load stopped",
        r.peak_lag,
        r.end_lag,
        r.drained_after.as_secs_f64()
    )];
    parts.push(format!(
        "fetching paused {} times, at most {} partitions at once",
        r.pauses, r.peak_paused
    ));
    parts.push(format!(
        "in flight at most {} records / {} bytes for a bound of {} / {} (+ one poll: {} / {}): {}",
        r.peak_in_flight.0,
        r.peak_in_flight.1,
        r.bound.0,
        r.bound.1,
        r.one_poll.0,
        r.one_poll.1,
        if r.within_bound() { "within" } else { "BEYOND" }
    ));
    parts.push(format!(
        "assignments per member {:?} (expected {:?}), {} commits after a revoke",
        r.assignments, r.expected_assignments, r.commits_after_revoke
    ));
    parts.push(match (r.report.duplicates, r.unexplained_duplicates) {
        (0, _) => "no duplicates".to_string(),
        (d, Some(0)) => format!(
            "{d} duplicates, every one from the killed instance's uncommitted window \
             (at-least-once: handled, not yet committed when it died)"
        ),
        (d, Some(u)) => format!("{d} duplicates, {u} NOT explained by the killed instance"),
        (d, None) => format!("{d} duplicates where none were expected"),
    });
    parts.join("; ")
}

/// `text` wrapped at `width` columns, continuation lines indented.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.trim().is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out += &line;
            out.push('\n');
            line = "   ".to_string();
        }
        if !line.trim().is_empty() {
            line.push(' ');
        }
        line += word;
    }
    out + &line
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_column_has_a_header() {
        let t = super::table(&[]);
        assert!(t.starts_with("| # | situation |"), "{t}");
        assert_eq!(t.lines().next().unwrap().matches('|').count(), 13, "{t}");
    }
}
