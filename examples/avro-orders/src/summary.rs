//! The seed's final statistics, and the demo's table.

use crate::service::Counts;

/// What the consumer did, at the end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub received: u64,
    pub processed: u64,
    /// Acknowledged DLQ writes (the runtime's `dead_lettered`).
    pub dead_lettered: u64,
    /// Dollars.
    pub revenue: f64,
    /// Dollars: the running average at the end.
    pub average: f64,
}

impl Summary {
    pub fn new(counts: Counts, dead_lettered: u64) -> Self {
        Self {
            received: counts.received,
            processed: counts.processed,
            dead_lettered,
            revenue: counts.revenue_cents as f64 / 100.0,
            average: counts.average(),
        }
    }

    /// The seed's block, printed at Ctrl-C.
    pub fn print(&self) {
        let line = "=".repeat(60);
        println!("\n{line}\n📊 FINAL STATISTICS\n{line}");
        println!("Total Messages Received: {}", self.received);
        println!("Successfully Processed: {}", self.processed);
        println!("Sent to DLQ: {}", self.dead_lettered);
        println!("Total Revenue: ${}", money(self.revenue));
        println!("Average Order Value: ${}", money(self.average));
        println!("{line}");
    }
}

/// `42156.78` → `42,156.78`.
pub fn money(dollars: f64) -> String {
    let s = format!("{dollars:.2}");
    let (int, frac) = s.split_once('.').unwrap_or((&s, "00"));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}.{frac}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn money_has_thousands_separators() {
        assert_eq!(super::money(42156.78), "42,156.78");
        assert_eq!(super::money(479.05), "479.05");
        assert_eq!(super::money(1_000_000.0), "1,000,000.00");
    }
}
