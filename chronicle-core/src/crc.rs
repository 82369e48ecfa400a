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
#[inline]
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
#[inline]
unsafe fn update_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut c = u64::from(crc);
    let mut chunks = data.chunks_exact(8);
    for ch in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(ch);
        c = _mm_crc32_u64(c, u64::from_le_bytes(w));
    }
    let mut c = c as u32;
    for &b in chunks.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    c
}

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
