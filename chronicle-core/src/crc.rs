//! CRC-32C (Castagnoli), the record checksum.
//!
//! On x86-64 with SSE4.2 (checked once at run time) it uses the `crc32` instruction, 8 bytes per
//! instruction; elsewhere a table-driven byte loop. The state is incremental, so the writer can
//! checksum header fields and payload straight from their sources without staging them.

/// Running CRC state (not yet finalized).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crc32c(u32);

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32c {
    /// A fresh checksum.
    #[inline]
    pub const fn new() -> Self {
        Crc32c(!0)
    }

    /// Feeds `data`.
    #[inline]
    pub fn update(self, data: &[u8]) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("sse4.2") {
                // SAFETY: the CPU supports SSE4.2 (checked just above).
                return Crc32c(unsafe { update_sse42(self.0, data) });
            }
        }
        Crc32c(update_table(self.0, data))
    }

    /// The final checksum.
    #[inline]
    pub const fn finish(self) -> u32 {
        !self.0
    }
}

/// CRC-32C of `head` followed by `tail` (a record's header fields and its payload), in one call.
#[inline(always)]
pub fn crc32c_two(head: &[u8; 24], tail: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE4.2 (checked just above).
            return !unsafe { update_fields_then_sse42(!0, head, tail) };
        }
    }
    Crc32c::new().update(head).update(tail).finish()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn update_fields_then_sse42(crc: u32, head: &[u8; 24], tail: &[u8]) -> u32 {
    use std::arch::x86_64::_mm_crc32_u64;
    let mut c = u64::from(crc);
    for ch in head.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(ch);
        c = _mm_crc32_u64(c, u64::from_le_bytes(w));
    }
    // SAFETY: same target feature as this function.
    unsafe { update_sse42(c as u32, tail) }
}

/// CRC-32C of `data`.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    Crc32c::new().update(data).finish()
}

/// Below `3 * SHORT` bytes the `crc32` instructions run as one dependent chain (3 cycles each);
/// from there on, three independent chains over adjacent blocks run side by side (one
/// instruction per cycle) and are joined with `Shift` tables. A 1 KiB record needs about 40%
/// of the cycles of one chain.
const LONG: usize = 256;
const SHORT: usize = 64;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
#[inline]
unsafe fn update_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::_mm_crc32_u8;
    let mut c = crc;
    let mut rest = data;
    while let Some((block, tail)) = rest.split_at_checked(3 * LONG) {
        // SAFETY: same target feature as this function.
        c = unsafe { three_way::<LONG>(c, block, &SHIFT_LONG) };
        rest = tail;
    }
    if let Some((block, tail)) = rest.split_at_checked(3 * SHORT) {
        // SAFETY: as above.
        c = unsafe { three_way::<SHORT>(c, block, &SHIFT_SHORT) };
        rest = tail;
    }
    // SAFETY: as above.
    let mut c = unsafe { chain(c, rest) };
    for &b in rest.chunks_exact(8).remainder() {
        c = _mm_crc32_u8(c, b);
    }
    c
}

/// One dependent chain over the whole 8-byte words of `data` (a trailing partial word is left to
/// the caller).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
#[inline]
unsafe fn chain(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::_mm_crc32_u64;
    let mut c = u64::from(crc);
    for ch in data.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(ch);
        c = _mm_crc32_u64(c, u64::from_le_bytes(w));
    }
    c as u32
}

/// The CRC state after `block` (exactly `3 * L` bytes), computed as three chains of `L` bytes
/// that run in parallel: `A` from `crc`, `B` and `C` from 0. By linearity the state after
/// `a || b` is `shift_L(A) ^ B`, and after `a || b || c` it is `shift_L(shift_L(A) ^ B) ^ C`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
#[inline]
unsafe fn three_way<const L: usize>(crc: u32, block: &[u8], shift: &Shift) -> u32 {
    use std::arch::x86_64::_mm_crc32_u64;
    let (a, bc) = block.split_at(L.min(block.len()));
    let (b, c) = bc.split_at(L.min(bc.len()));
    let (mut x, mut y, mut z) = (u64::from(crc), 0u64, 0u64);
    let word = |ch: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(ch);
        u64::from_le_bytes(w)
    };
    for ((wa, wb), wc) in a
        .chunks_exact(8)
        .zip(b.chunks_exact(8))
        .zip(c.chunks_exact(8))
    {
        x = _mm_crc32_u64(x, word(wa));
        y = _mm_crc32_u64(y, word(wb));
        z = _mm_crc32_u64(z, word(wc));
    }
    shift.apply(shift.apply(x as u32) ^ y as u32) ^ z as u32
}

/// Advancing a CRC state over `n` zero bytes, as a table per state byte (the operation is
/// linear over GF(2), so the four partial results XOR together).
struct Shift([[u32; 256]; 4]);

impl Shift {
    #[inline]
    fn apply(&self, c: u32) -> u32 {
        let [t0, t1, t2, t3] = &self.0;
        let at = |t: &[u32; 256], byte: u32| t.get(byte as usize & 0xFF).copied().unwrap_or(0);
        at(t0, c) ^ at(t1, c >> 8) ^ at(t2, c >> 16) ^ at(t3, c >> 24)
    }

    /// Built at compile time: the image of each of the 32 state bits after `n` zero bytes,
    /// then every byte value of every state byte as the XOR of its bits' images.
    #[allow(clippy::indexing_slicing)] // const evaluation: an out-of-range index fails the build
    const fn zeros(n: usize) -> Shift {
        let mut basis = [0u32; 32];
        let mut bit = 0;
        while bit < 32 {
            let mut c = 1u32 << bit;
            let mut k = 0;
            while k < n {
                c = (c >> 8) ^ TABLE[(c & 0xFF) as usize];
                k += 1;
            }
            basis[bit] = c;
            bit += 1;
        }
        let mut t = [[0u32; 256]; 4];
        let mut byte = 0;
        while byte < 4 {
            let mut v = 0;
            while v < 256 {
                let mut acc = 0u32;
                let mut b = 0;
                while b < 8 {
                    if v & (1 << b) != 0 {
                        acc ^= basis[byte * 8 + b];
                    }
                    b += 1;
                }
                t[byte][v] = acc;
                v += 1;
            }
            byte += 1;
        }
        Shift(t)
    }
}

static SHIFT_LONG: Shift = Shift::zeros(LONG);
static SHIFT_SHORT: Shift = Shift::zeros(SHORT);

const POLY: u32 = 0x82F6_3B78; // Castagnoli, reflected

#[allow(clippy::indexing_slicing)] // const evaluation: an out-of-range index fails the build
const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[i] = c; // i < 256 by the loop condition
        i += 1;
    }
    t
};

fn update_table(mut c: u32, data: &[u8]) -> u32 {
    for &b in data {
        let idx = ((c ^ u32::from(b)) & 0xFF) as usize;
        c = (c >> 8) ^ TABLE.get(idx).copied().unwrap_or(0);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_tables_advance_over_zeros() {
        for c in [0u32, 1, 0x8000_0000, 0xDEAD_BEEF, !0] {
            assert_eq!(SHIFT_LONG.apply(c), update_table(c, &[0u8; LONG]));
            assert_eq!(SHIFT_SHORT.apply(c), update_table(c, &[0u8; SHORT]));
        }
    }

    #[test]
    fn interleaved_equals_table_at_every_block_boundary() {
        let data: Vec<u8> = (0..4 * 3 * LONG as u32 + 500)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let edges = [3 * SHORT, 3 * LONG, 3 * LONG + 3 * SHORT, 6 * LONG];
        let mut lens: Vec<usize> = (0..200).collect();
        for e in edges {
            lens.extend(e.saturating_sub(9)..e + 9);
        }
        lens.push(data.len());
        for len in lens {
            for init in [!0u32, 0, 0x1234_5678] {
                let d = &data[..len];
                assert_eq!(
                    Crc32c(init).update(d).0,
                    update_table(init, d),
                    "len {len} init {init:#x}"
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_input_matches_the_table(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..4000),
            init: u32,
        ) {
            proptest::prop_assert_eq!(Crc32c(init).update(&data).0, update_table(init, &data));
        }
    }

    #[test]
    fn check_value() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(!update_table(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn incremental_equals_one_shot_and_table_equals_hardware() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for split in [0usize, 1, 7, 8, 9, 24, 500, 999, 1000] {
            let (a, b) = data.split_at(split);
            assert_eq!(Crc32c::new().update(a).update(b).finish(), crc32c(&data));
        }
        for len in 0..64 {
            assert_eq!(!update_table(!0, &data[..len]), crc32c(&data[..len]));
        }
        let head: [u8; 24] = data[..24].try_into().unwrap();
        for len in [0usize, 1, 63, 64, 700] {
            assert_eq!(
                crc32c_two(&head, &data[24..24 + len]),
                crc32c(&data[..24 + len])
            );
        }
    }
}
