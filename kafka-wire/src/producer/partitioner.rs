//! Choosing a partition: murmur2 for keyed records (same key → same
//! partition as the Java client and librdkafka's `murmur2_random`), sticky
//! for records without a key.

use std::sync::atomic::{AtomicI32, Ordering};

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils#murmur2`), the
/// 32-bit MurmurHash2 with seed `0x9747b28c`, bytes read little-endian.
pub(crate) fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The Java client's partition for a key: `toPositive(murmur2(key)) % n`.
pub fn partition_for_key(key: &[u8], partitions: usize) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as u32 % partitions as u32) as i32
}

/// Keyless records of one topic stick to one partition until the batch
/// there is taken for sending, then move on (KIP-480), so batches fill up
/// instead of spreading one record per partition. An atomic, so choosing
/// a partition takes no lock; a race between two senders at the moment of
/// a move at worst puts a record in the batch it would have joined anyway.
#[derive(Debug)]
pub(crate) struct StickyPartition {
    /// The current partition; -1 before the first record.
    current: AtomicI32,
}

impl Default for StickyPartition {
    fn default() -> Self {
        Self {
            current: AtomicI32::new(-1),
        }
    }
}

impl StickyPartition {
    /// The sticky partition of a topic with `partitions` partitions,
    /// choosing one at random if none yet (or the topic shrank under it).
    pub(crate) fn partition(&self, partitions: usize) -> i32 {
        let p = self.current.load(Ordering::Relaxed);
        if p >= 0 && (p as usize) < partitions {
            return p;
        }
        let next = rand::random_range(0..partitions.max(1)) as i32;
        match self
            .current
            .compare_exchange(p, next, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => next,
            Err(now) if now >= 0 && (now as usize) < partitions => now,
            Err(_) => next,
        }
    }

    /// The batch on `partition` was taken for sending: pick another next
    /// time (unless another move happened already).
    pub(crate) fn batch_sealed(&self, partition: i32, partitions: usize) {
        if partitions > 1 {
            let mut next = rand::random_range(0..partitions - 1) as i32;
            if next >= partition {
                next += 1;
            }
            let _ = self.current.compare_exchange(
                partition,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(key, murmur2, partition of 3, of 12, of 100)`.
    ///
    /// Computed with the Java client itself: `Utils.murmur2(key.getBytes(UTF_8))`
    /// and `Utils.toPositive(murmur2) % n` from kafka-clients 4.3.1
    /// (org.apache.kafka.common.utils.Utils, the built-in partitioner's
    /// `partitionForKey`). The first rows also appear as published vectors
    /// in Kafka's own `UtilsTest#testMurmur2`.
    const JAVA_PARITY: &[(&str, i32, i32, i32, i32)] = &[
        ("21", -973932308, 0, 0, 40),
        ("foobar", -790332482, 0, 6, 66),
        ("a-little-bit-long-string", -985981536, 2, 8, 12),
        ("a-little-bit-longer-string", -1486304829, 2, 11, 19),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58897971,
            2,
            5,
            77,
        ),
        ("abc", 479470107, 0, 3, 7),
        ("", 275646681, 0, 9, 81),
        ("a", -1563381124, 1, 4, 24),
        ("key-0", 29210041, 1, 1, 41),
        ("key-1", 193331640, 0, 0, 40),
        ("key-42", -187086521, 0, 3, 27),
        ("order-1001", 297523878, 0, 6, 78),
        ("user:7f3a", -742483909, 1, 7, 39),
        ("été", -2101193575, 1, 1, 73),
        ("0123456789abcdef", 1438427052, 0, 0, 52),
    ];

    #[test]
    fn murmur2_and_partitions_match_the_java_client() {
        for &(key, hash, p3, p12, p100) in JAVA_PARITY {
            let k = key.as_bytes();
            assert_eq!(murmur2(k), hash, "murmur2({key:?})");
            assert_eq!(partition_for_key(k, 3), p3, "{key:?} of 3");
            assert_eq!(partition_for_key(k, 12), p12, "{key:?} of 12");
            assert_eq!(partition_for_key(k, 100), p100, "{key:?} of 100");
        }
    }

    #[test]
    fn sticky_partition_moves_after_a_batch_is_sealed() {
        let s = StickyPartition::default();
        let first = s.partition(6);
        assert_eq!(s.partition(6), first);
        s.batch_sealed(first, 6);
        let second = s.partition(6);
        assert_ne!(second, first);
        assert!((0..6).contains(&second));
        s.batch_sealed(first, 6);
        assert_eq!(
            s.partition(6),
            second,
            "an old batch does not move it again"
        );
        assert!(s.partition(2) < 2, "a shrunk count picks again");
    }
}
