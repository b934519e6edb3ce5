//! SQLite's WAL checksum, computed in four runs side by side and joined in
//! order (the replicator's hottest loop).

use super::{be32, le32};

/// SQLite's WAL checksum: over 32-bit words in the WAL's byte order,
/// `s0 += x[i] + s1; s1 += x[i+1] + s0`, continuing from `seed`.
///
/// Every frame's page goes through this (a third of the replicator's CPU
/// under a busy app), and one chain of dependent additions leaves most of
/// the processor idle. The step is linear: a pair `(x0, x1)` maps the sums
/// `v` to `M·v + (x0, x0 + x1)` with `M = [[1, 1], [1, 2]]`, so `n` pairs
/// map `v` to `Mⁿ·v + c`, where `c` is their checksum from zero. Long
/// inputs are therefore cut into four equal runs summed side by side from
/// zero, then joined in order by `Mⁿ`.
pub fn checksum(big_endian: bool, seed: (u32, u32), data: &[u8]) -> (u32, u32) {
    const LANES: usize = 4;
    let lane_bytes = data.len() / 8 / LANES * 8;
    if lane_bytes < 64 {
        return checksum_in_order(big_endian, seed, data);
    }
    let (runs, rest) = data.split_at(lane_bytes * LANES);
    // Plain loops over the four runs, not iterator adaptors: the tests run
    // the replicator unoptimised, where adaptors cost ten times as much.
    let run: [&[u8]; LANES] = std::array::from_fn(|lane| &runs[lane * lane_bytes..(lane + 1) * lane_bytes]);
    let mut lanes = [(0u32, 0u32); LANES];
    let mut at = 0;
    while at + 8 <= lane_bytes {
        for lane in 0..LANES {
            let pair = &run[lane][at..at + 8];
            let (x0, x1) = if big_endian {
                (be32(&pair[0..4]), be32(&pair[4..8]))
            } else {
                (le32(&pair[0..4]), le32(&pair[4..8]))
            };
            let sums = &mut lanes[lane];
            sums.0 = sums.0.wrapping_add(x0).wrapping_add(sums.1);
            sums.1 = sums.1.wrapping_add(x1).wrapping_add(sums.0);
        }
        at += 8;
    }
    let jump = Jump::over(lane_bytes as u64 / 8);
    let sums = lanes.into_iter().fold(seed, |sums, lane| jump.apply(sums, lane));
    checksum_in_order(big_endian, sums, rest)
}

/// [`checksum`] one pair after the other.
fn checksum_in_order(big_endian: bool, seed: (u32, u32), data: &[u8]) -> (u32, u32) {
    let (mut s0, mut s1) = seed;
    for pair in data.chunks_exact(8) {
        let (x0, x1) =
            if big_endian { (be32(&pair[0..4]), be32(&pair[4..8])) } else { (le32(&pair[0..4]), le32(&pair[4..8])) };
        s0 = s0.wrapping_add(x0).wrapping_add(s1);
        s1 = s1.wrapping_add(x1).wrapping_add(s0);
    }
    (s0, s1)
}

/// `Mⁿ` of [`checksum`]: what `n` pairs do to the sums they start from.
struct Jump([[u32; 2]; 2]);

impl Jump {
    fn over(mut n: u64) -> Jump {
        let mul = |a: [[u32; 2]; 2], b: [[u32; 2]; 2]| {
            let cell = |i: usize, j: usize| a[i][0].wrapping_mul(b[0][j]).wrapping_add(a[i][1].wrapping_mul(b[1][j]));
            [[cell(0, 0), cell(0, 1)], [cell(1, 0), cell(1, 1)]]
        };
        let (mut power, mut result) = ([[1, 1], [1, 2]], [[1, 0], [0, 1]]);
        while n > 0 {
            if n & 1 == 1 {
                result = mul(result, power);
            }
            power = mul(power, power);
            n >>= 1;
        }
        Jump(result)
    }

    /// The sums after the pairs, given the sums before them and the
    /// pairs' checksum from zero.
    fn apply(&self, (s0, s1): (u32, u32), (c0, c1): (u32, u32)) -> (u32, u32) {
        let [[a, b], [c, d]] = self.0;
        (
            a.wrapping_mul(s0).wrapping_add(b.wrapping_mul(s1)).wrapping_add(c0),
            c.wrapping_mul(s0).wrapping_add(d.wrapping_mul(s1)).wrapping_add(c1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_in_four_runs_equals_the_checksum_in_order() {
        let mut random = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            random
        };
        let data: Vec<u8> = (0..70_000).map(|_| next() as u8).collect();
        for len in [0, 8, 24, 256, 504, 512, 520, 1024, 4096, 4100, 8192, 65_536, 65_543, 70_000] {
            for big_endian in [false, true] {
                let seed = (next() as u32, next() as u32);
                assert_eq!(
                    checksum(big_endian, seed, &data[..len]),
                    checksum_in_order(big_endian, seed, &data[..len]),
                    "{len} bytes, big-endian {big_endian}"
                );
            }
        }
    }
}
