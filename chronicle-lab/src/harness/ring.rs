//! The floor: a bare single-producer / single-consumer ring in shared memory.
//!
//! One file in the run directory is mapped `MAP_SHARED` by both processes:
//!
//! ```text
//! offset    0  Meta         magic, version, slot size, capacity (written once by the creator)
//! offset  128  write cursor AtomicU64: messages published (writer stores, reader loads)
//! offset  256  read cursor  AtomicU64: messages consumed (reader stores, writer loads)
//! offset  384  wake line    futex sequence word + waiter flag (ring-futex only)
//! offset  512  slots        capacity x slot_size bytes
//! ```
//!
//! Two slot layouts share the code:
//!
//! * **Fixed** (`ring`, `ring-futex`, the floor every ratio is taken against): every message
//!   is exactly `payload_max` bytes, so a slot is the payload rounded up to 64 bytes with no
//!   header (a 64-byte message fills one cache line), and the reader publishes its read
//!   cursor once per batch (when it has consumed every message it saw published), not per
//!   message. This is the simplest thing that could possibly hand a fixed-size message to
//!   another process.
//! * **Length-prefixed** (`ring-len`): `[len: u32][pad: u32][payload]`, so a 64-byte message
//!   spans two cache lines, and the read cursor is stored after every message. It measures
//!   what variable-length framing and per-message release cost on top of the floor.
//!
//! Each cursor sits alone on a 128-byte line (two 64-byte lines, so the adjacent-line
//! prefetcher does not couple them). The writer reads the read cursor only when its
//! cached copy says it might lap the reader, so in a paced run the reader's line never
//! travels to the writer's core. There is no persistence and no checksum: this is the
//! cheapest correct cross-process hand-off, the yardstick for everything else.
//!
//! Three registrations share the code: [`Ring`] (`ring`, fixed slots, spin only, no wake-up
//! cost on the writer), [`RingFutex`] (`ring-futex`, fixed slots, spin or block) and
//! [`RingLen`] (`ring-len`, length-prefixed slots, spin only). Blocking readers sleep on a
//! shared (non-private) futex; the writer pays a `SeqCst` fence per message to check for
//! sleepers, which is exactly the cost a futex-waking queue must pay.

use std::fs::{File, OpenOptions};
use std::hint::spin_loop;
use std::io;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use memmap2::{MmapMut, MmapOptions};

use super::transport::{ChannelConfig, Receiver, Sender, Transport, WaitMode};
use chronicle_core::os::{self, monotonic_ns};

const MAGIC: u64 = u64::from_le_bytes(*b"CHRNRING");
const VERSION: u32 = 2;
const LINE: usize = 128;
/// The length word in front of a length-prefixed slot's payload (`u32` plus padding).
const LEN_HEADER: usize = 8;
const SLOT_ALIGN: usize = 64;
const FILE_NAME: &str = "ring";

/// Written once by the creator before the reader exists; read-only afterwards.
#[repr(C, align(128))]
struct Meta {
    magic: u64,
    version: u32,
    slot_size: u32,
    capacity: u64,
    payload_max: u64,
    futex: u32,
    /// 1 for fixed slots, 0 for length-prefixed ones.
    fixed: u32,
}

#[repr(C, align(128))]
struct CursorLine {
    value: AtomicU64,
}

#[repr(C, align(128))]
struct WakeLine {
    /// Futex word: bumped by the writer each time it wakes sleepers.
    seq: AtomicU32,
    /// Non-zero while a reader is (about to be) asleep on `seq`.
    waiters: AtomicU32,
}

#[repr(C)]
struct RingHeader {
    meta: Meta,
    write: CursorLine,
    read: CursorLine,
    wake: WakeLine,
}

const HEADER_LEN: usize = size_of::<RingHeader>();
const _: () = assert!(HEADER_LEN == 4 * LINE);
const _: () = assert!(offset_of!(RingHeader, meta) == 0);
const _: () = assert!(offset_of!(RingHeader, write) == LINE);
const _: () = assert!(offset_of!(RingHeader, read) == 2 * LINE);
const _: () = assert!(offset_of!(RingHeader, wake) == 3 * LINE);
const _: () = assert!(size_of::<Meta>() == LINE);
const _: () = assert!(size_of::<CursorLine>() == LINE);
const _: () = assert!(size_of::<WakeLine>() == LINE);
const _: () = assert!(HEADER_LEN % SLOT_ALIGN == 0);

/// Bytes in front of the payload in a slot: none for fixed slots.
const fn slot_header(fixed: bool) -> usize {
    if fixed { 0 } else { LEN_HEADER }
}

/// Slot size and total file length for a config, or `InvalidInput` on overflow.
fn layout(cfg: &ChannelConfig, fixed: bool) -> io::Result<(usize, usize)> {
    let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_owned());
    if !cfg.capacity.is_power_of_two() {
        return Err(invalid("ring capacity must be a power of two"));
    }
    let slot = cfg
        .payload_max
        .checked_add(slot_header(fixed) + SLOT_ALIGN - 1)
        .map(|s| s & !(SLOT_ALIGN - 1))
        .filter(|&s| u32::try_from(s).is_ok())
        .ok_or_else(|| invalid("ring slot size overflows"))?;
    let total = slot
        .checked_mul(cfg.capacity)
        .and_then(|s| s.checked_add(HEADER_LEN))
        .ok_or_else(|| invalid("ring size overflows"))?;
    Ok((slot, total))
}

/// A mapped ring file plus typed views of its header and slot area.
struct Mapping {
    /// Keeps the mapping alive; never dereferenced as a slice after construction.
    _map: MmapMut,
    header: NonNull<RingHeader>,
    slots: NonNull<u8>,
    slot_size: usize,
    mask: u64,
    capacity: u64,
    payload_max: usize,
}

impl Mapping {
    fn map(file: &File, total: usize) -> io::Result<MmapMut> {
        // SAFETY: the file lives in the run's private directory and is only ever touched
        // by this run's writer and reader, which access it exclusively through the
        // header atomics and the slot-ownership protocol below (never through Rust
        // references spanning memory the other process writes concurrently). Its length
        // was fixed before mapping and nobody truncates it while mapped.
        unsafe { MmapOptions::new().len(total).populate().map_mut(file) }
    }

    fn new(mut map: MmapMut, cfg: &ChannelConfig, slot_size: usize) -> io::Result<Self> {
        if map.len() < HEADER_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ring file shorter than its header",
            ));
        }
        let base = map.as_mut_ptr();
        let header = NonNull::new(base.cast::<RingHeader>())
            .ok_or_else(|| io::Error::other("mmap returned a null pointer"))?;
        // SAFETY: `map.len() >= HEADER_LEN` (checked above), so the offset stays inside
        // the mapping.
        let slots = NonNull::new(unsafe { base.add(HEADER_LEN) })
            .ok_or_else(|| io::Error::other("mmap returned a null pointer"))?;
        Ok(Self {
            _map: map,
            header,
            slots,
            slot_size,
            // usize -> u64 never truncates on supported (64-bit) targets.
            mask: (cfg.capacity as u64).wrapping_sub(1),
            capacity: cfg.capacity as u64,
            payload_max: cfg.payload_max,
        })
    }

    #[inline(always)]
    fn header(&self) -> &RingHeader {
        // SAFETY: the mapping is page-aligned (so 128-aligned) and at least HEADER_LEN
        // long; it stays mapped as long as `self`. `Meta` is initialised by the creator
        // before any `Mapping` exists and never written again, and every other header
        // field is an atomic, so a shared reference is sound while the peer process
        // updates the cursors.
        unsafe { self.header.as_ref() }
    }

    /// Pointer to slot `pos & mask`.
    #[inline(always)]
    fn slot(&self, pos: u64) -> *mut u8 {
        // `pos & mask < capacity`, so the product is below `capacity * slot_size`, which
        // `layout` proved fits the mapping; the cast cannot truncate for the same reason.
        let offset = ((pos & self.mask) as usize).wrapping_mul(self.slot_size);
        // SAFETY: see above: `offset + slot_size` lies inside the slot area of the mapping.
        unsafe { self.slots.as_ptr().add(offset) }
    }
}

/// Writing end of the ring.
pub struct RingTx<const FUTEX: bool, const FIXED: bool> {
    m: Mapping,
    /// Next sequence to publish; only this process writes the write cursor.
    write_pos: u64,
    /// Last read-cursor value seen; refreshed only when the writer might lap.
    read_cache: u64,
    stall_timeout_ns: u64,
}

/// Reading end of the ring.
pub struct RingRx<const FUTEX: bool, const FIXED: bool> {
    m: Mapping,
    /// Next sequence to read; local to the reader, published to the read cursor.
    read_pos: u64,
    /// Last write-cursor value seen; the writer's line is re-read only when exhausted.
    write_cache: u64,
}

// SAFETY: a `RingTx` owns its mapping (the raw pointers point into `_map`, which moves
// with it) and nothing in it is tied to the creating thread, so moving it to another
// thread is sound. It is not `Sync`: `send_with` needs `&mut self`.
unsafe impl<const FUTEX: bool, const FIXED: bool> Send for RingTx<FUTEX, FIXED> {}

// SAFETY: as for `RingTx`: the pointers target the owned mapping, no thread affinity.
unsafe impl<const FUTEX: bool, const FIXED: bool> Send for RingRx<FUTEX, FIXED> {}

impl<const FUTEX: bool, const FIXED: bool> std::fmt::Debug for RingTx<FUTEX, FIXED> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingTx")
            .field("write_pos", &self.write_pos)
            .field("read_cache", &self.read_cache)
            .finish_non_exhaustive()
    }
}

impl<const FUTEX: bool, const FIXED: bool> std::fmt::Debug for RingRx<FUTEX, FIXED> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingRx")
            .field("read_pos", &self.read_pos)
            .finish_non_exhaustive()
    }
}

impl<const FUTEX: bool, const FIXED: bool> RingTx<FUTEX, FIXED> {
    #[cold]
    fn wait_for_space(&mut self) -> io::Result<()> {
        let started = monotonic_ns();
        let mut spins: u32 = 0;
        loop {
            // SYNC POINT: Acquire pairs with the reader's Release store of the read
            // cursor in `recv_with`; once we see `read > pos - capacity`, the reader has
            // finished with the slot we are about to overwrite.
            self.read_cache = self.m.header().read.value.load(Ordering::Acquire);
            if self.write_pos.wrapping_sub(self.read_cache) < self.m.capacity {
                return Ok(());
            }
            spin_loop();
            spins = spins.wrapping_add(1);
            if spins % 1024 == 0 && monotonic_ns().saturating_sub(started) > self.stall_timeout_ns {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "ring full: reader made no progress within the stall timeout",
                ));
            }
        }
    }
}

impl<const FUTEX: bool, const FIXED: bool> RingTx<FUTEX, FIXED> {
    #[inline]
    fn check_len(&self, len: usize) -> io::Result<()> {
        if FIXED && len != self.m.payload_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a fixed-slot ring carries messages of exactly payload_max bytes",
            ));
        }
        if len > self.m.payload_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "message larger than the ring's payload_max",
            ));
        }
        Ok(())
    }

    /// Writes the next slot (waiting for space first, publishing what is written but not
    /// yet published before it waits) without publishing it.
    #[inline]
    fn write_slot<F: FnOnce(&mut [u8])>(&mut self, len: usize, fill: F) -> io::Result<()> {
        if self.write_pos.wrapping_sub(self.read_cache) >= self.m.capacity {
            // The reader can only free slots it can see: publish before waiting.
            self.publish();
            self.wait_for_space()?;
        }
        let pos = self.write_pos;
        let slot = self.m.slot(pos);
        // SAFETY: `slot` points at a whole slot inside the mapping (see `Mapping::slot`),
        // aligned to 64 bytes. The back-pressure check above guarantees the reader has
        // released this slot (read cursor > pos - capacity) and will not look at it again
        // until we publish `pos + 1`, so this process has exclusive access to it;
        // `slot_header(FIXED) + len <= slot_size` because `len <= payload_max`.
        let payload = unsafe {
            if !FIXED {
                slot.cast::<u32>().write(len as u32);
            }
            std::slice::from_raw_parts_mut(slot.add(slot_header(FIXED)), len)
        };
        fill(payload);
        self.write_pos = pos.wrapping_add(1);
        Ok(())
    }

    /// Publishes every slot written so far and wakes a sleeping reader.
    #[inline]
    fn publish(&mut self) {
        let header = self.m.header();
        // SYNC POINT: Release publishes the slots' lengths and payloads written before; it
        // pairs with the reader's Acquire load of the write cursor in `recv_with`.
        header.write.value.store(self.write_pos, Ordering::Release);
        if FUTEX {
            // SYNC POINT: SeqCst fence orders the cursor store before the `waiters` load
            // (store->load); it pairs with the reader's SeqCst fence between setting
            // `waiters` and re-checking the cursor, so either we see the sleeper or the
            // sleeper sees the new cursor.
            fence(Ordering::SeqCst);
            if header.wake.waiters.load(Ordering::Relaxed) != 0 {
                header.wake.waiters.store(0, Ordering::Relaxed);
                // SYNC POINT: Release pairs with the reader's Acquire load of `seq`
                // before it sets `waiters`: a reader that observes this bump also
                // observes the `waiters = 0` store above, so its own `waiters = 1` wins.
                header.wake.seq.fetch_add(1, Ordering::Release);
                os::futex_wake(&header.wake.seq, i32::MAX);
            }
        }
    }
}

impl<const FUTEX: bool, const FIXED: bool> Sender for RingTx<FUTEX, FIXED> {
    #[inline]
    fn send_with<F: FnOnce(&mut [u8])>(&mut self, len: usize, fill: F) -> io::Result<()> {
        self.check_len(len)?;
        self.write_slot(len, fill)?;
        self.publish();
        Ok(())
    }

    /// Writes `n` slots and publishes the write cursor once.
    #[inline]
    fn send_batch_with<F: FnMut(usize, &mut [u8])>(
        &mut self,
        n: usize,
        len: usize,
        mut fill: F,
    ) -> io::Result<()> {
        self.check_len(len)?;
        for i in 0..n {
            if let Err(e) = self.write_slot(len, |buf| fill(i, buf)) {
                self.publish();
                return Err(e);
            }
        }
        self.publish();
        Ok(())
    }
}

impl<const FUTEX: bool, const FIXED: bool> Receiver for RingRx<FUTEX, FIXED> {
    #[inline]
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, wait: WaitMode, f: F) -> io::Result<R> {
        let pos = self.read_pos;
        if self.write_cache == pos {
            self.wait_for_data(wait);
        }
        let slot = self.m.slot(pos);
        let len = if FIXED {
            self.m.payload_max
        } else {
            // SAFETY: the writer published `write_cache > pos` with Release and we loaded
            // it with Acquire (in `wait_for_data`), so the slot's contents are visible, and
            // the writer will not overwrite it until our read cursor passes `pos`, which
            // happens only after `f` returns. The slot lies inside the mapping (see
            // `Mapping::slot`).
            let len = unsafe { slot.cast::<u32>().read() } as usize;
            if len > self.m.payload_max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("ring slot {pos} has corrupt length {len}"),
                ));
            }
            len
        };
        // SAFETY: as above (the slot is published, ours until the read cursor passes it);
        // `slot_header(FIXED) + len <= slot_size` because `len <= payload_max`.
        let payload = unsafe { std::slice::from_raw_parts(slot.add(slot_header(FIXED)), len) };
        let out = f(payload);
        let next = pos.wrapping_add(1);
        self.read_pos = next;
        // A fixed-slot ring releases a whole batch at once: it stores its cursor only
        // when it has consumed every message it saw published (so a writer waiting for
        // space is always released before the reader waits again).
        if !FIXED || next == self.write_cache {
            // SYNC POINT: Release hands every slot below `next` back to the writer (our
            // reads of them are done); pairs with the writer's Acquire load in
            // `wait_for_space`.
            self.m.header().read.value.store(next, Ordering::Release);
        }
        Ok(out)
    }
}

impl<const FUTEX: bool, const FIXED: bool> RingRx<FUTEX, FIXED> {
    #[inline]
    fn wait_for_data(&mut self, wait: WaitMode) {
        let pos = self.read_pos;
        let header = self.m.header();
        loop {
            // SYNC POINT: Acquire pairs with the writer's Release store of the write
            // cursor in `send_with`, making every slot below it visible.
            let published = header.write.value.load(Ordering::Acquire);
            if published != pos {
                self.write_cache = published;
                return;
            }
            if !FUTEX || wait == WaitMode::Spin {
                spin_loop();
                continue;
            }
            // SYNC POINT: Acquire pairs with the writer's Release `seq` bump (see
            // `send_with`).
            let seq = header.wake.seq.load(Ordering::Acquire);
            header.wake.waiters.store(1, Ordering::Relaxed);
            // SYNC POINT: pairs with the writer's SeqCst fence after its cursor store:
            // after this fence either our re-check sees the new cursor or the writer
            // sees `waiters != 0` and wakes us (or bumps `seq`, failing our FUTEX_WAIT).
            fence(Ordering::SeqCst);
            // SYNC POINT: Acquire, same pairing as the load at the top of the loop.
            let published = header.write.value.load(Ordering::Acquire);
            if published != pos {
                // Not going to sleep after all: withdraw the flag so the writer does not
                // pay for a futex wake nobody needs. We are the only possible sleeper.
                header.wake.waiters.store(0, Ordering::Relaxed);
                self.write_cache = published;
                return;
            }
            // Any outcome (woken, value changed, interrupted) re-checks the ring.
            let _ = os::futex_wait(&header.wake.seq, seq, None);
        }
    }
}

/// The ring file in `dir` laid out for `cfg`, mapped: the writer (`create`) makes it, which
/// it must not find there, and sizes it; the reader opens the existing one and checks its size.
fn map_ring_file(
    dir: &Path,
    cfg: &ChannelConfig,
    fixed: bool,
    create: bool,
) -> io::Result<Mapping> {
    let (slot_size, total) = layout(cfg, fixed)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .open(dir.join(FILE_NAME))?;
    if create {
        file.set_len(total as u64)?;
    } else {
        let len = file.metadata()?.len();
        if len != total as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("ring file is {len} bytes, expected {total}"),
            ));
        }
    }
    let map = Mapping::map(&file, total)?;
    Mapping::new(map, cfg, slot_size)
}

fn create<const FUTEX: bool, const FIXED: bool>(
    dir: &Path,
    cfg: &ChannelConfig,
) -> io::Result<RingTx<FUTEX, FIXED>> {
    let m = map_ring_file(dir, cfg, FIXED, true)?;
    // SAFETY: the mapping is fresh, zero-filled, at least HEADER_LEN long and
    // page-aligned; no reader exists yet (the child is spawned after `create` returns),
    // so this process has exclusive access while it initialises the metadata. All-zero
    // is a valid initial state for the atomics that follow `meta`.
    unsafe {
        m.header.cast::<Meta>().as_ptr().write(Meta {
            magic: MAGIC,
            version: VERSION,
            slot_size: m.slot_size as u32,
            capacity: cfg.capacity as u64,
            payload_max: cfg.payload_max as u64,
            futex: u32::from(FUTEX),
            fixed: u32::from(FIXED),
        });
    }
    Ok(RingTx {
        m,
        write_pos: 0,
        read_cache: 0,
        stall_timeout_ns: u64::try_from(cfg.stall_timeout.as_nanos()).unwrap_or(u64::MAX),
    })
}

fn open<const FUTEX: bool, const FIXED: bool>(
    dir: &Path,
    cfg: &ChannelConfig,
) -> io::Result<RingRx<FUTEX, FIXED>> {
    let m = map_ring_file(dir, cfg, FIXED, false)?;
    let meta = &m.header().meta;
    if meta.magic != MAGIC
        || meta.version != VERSION
        || meta.slot_size as usize != m.slot_size
        || meta.capacity != cfg.capacity as u64
        || meta.payload_max != cfg.payload_max as u64
        || meta.futex != u32::from(FUTEX)
        || meta.fixed != u32::from(FIXED)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "ring header does not match this reader's configuration",
        ));
    }
    // SYNC POINT: Acquire pairs with the writer's Release cursor store; the reader
    // starts wherever the writer is (0 in a harness run, which opens before any send).
    let start = m.header().write.value.load(Ordering::Acquire);
    Ok(RingRx {
        m,
        read_pos: start,
        write_cache: start,
    })
}

/// Declares a ring transport: a unit struct whose ends are `RingTx`/`RingRx` with the given
/// futex and fixed-slot flags. A ring without the futex supports only [`WaitMode::Spin`].
macro_rules! ring_transport {
    ($(#[$doc:meta])* $ty:ident, $name:literal, futex = $futex:literal, fixed = $fixed:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;

        impl Transport for $ty {
            const NAME: &'static str = $name;
            type Tx = RingTx<$futex, $fixed>;
            type Rx = RingRx<$futex, $fixed>;

            fn supports(wait: WaitMode) -> bool {
                $futex || wait == WaitMode::Spin
            }

            fn create(dir: &Path, cfg: &ChannelConfig) -> io::Result<Self::Tx> {
                create(dir, cfg)
            }

            fn open(dir: &Path, cfg: &ChannelConfig) -> io::Result<Self::Rx> {
                open(dir, cfg)
            }
        }
    };
}

ring_transport!(
    /// `ring`: the floor, a bare SPSC ring of fixed one-line slots with a spinning reader only.
    Ring,
    "ring",
    futex = false,
    fixed = true
);
ring_transport!(
    /// `ring-futex`: the same fixed-slot ring whose reader can also sleep on a shared futex.
    RingFutex,
    "ring-futex",
    futex = true,
    fixed = true
);
ring_transport!(
    /// `ring-len`: a ring of length-prefixed slots, read cursor stored per message, spin only.
    RingLen,
    "ring-len",
    futex = false,
    fixed = false
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::transport::testing::channel;
    use std::time::Duration;

    fn cfg(cap: usize) -> ChannelConfig {
        ChannelConfig::new(64, cap, Duration::from_millis(200))
    }

    #[test]
    fn layout_fits_a_64_byte_message_in_one_line_unless_length_prefixed() {
        let (slot, total) = layout(&cfg(8), true).unwrap();
        assert_eq!(slot, 64);
        assert_eq!(total, HEADER_LEN + 8 * 64);
        let (slot, total) = layout(&cfg(8), false).unwrap();
        assert_eq!(slot, 128);
        assert_eq!(total, HEADER_LEN + 8 * 128);
        let (slot, _) = layout(&ChannelConfig::new(1024, 8, Duration::ZERO), true).unwrap();
        assert_eq!(slot, 1024);
        assert!(layout(&ChannelConfig::new(64, 6, Duration::ZERO), true).is_err());
    }

    #[test]
    fn fixed_ring_round_trip_and_back_pressure_released_per_batch() {
        let (_dir, mut tx, mut rx) = channel::<RingFutex>(&cfg(4));
        for i in 0..4u8 {
            tx.send_with(64, |b| b.fill(i)).unwrap();
        }
        // Full: the fifth send must time out rather than overwrite an unread slot.
        let err = tx.send_with(64, |_| {}).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // One message read of a batch of four releases nothing yet.
        assert_eq!(
            rx.recv_with(WaitMode::Spin, <[u8]>::to_vec).unwrap(),
            vec![0; 64]
        );
        let err = tx.send_with(64, |_| {}).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        for i in 1..4u8 {
            let got = rx.recv_with(WaitMode::Spin, <[u8]>::to_vec).unwrap();
            assert_eq!(got, vec![i; 64]);
        }
        // The batch is drained: all four slots are free again.
        for i in 4..8u8 {
            tx.send_with(64, |b| b.fill(i)).unwrap();
        }
        assert_eq!(rx.recv_with(WaitMode::Block, |b| b[63]).unwrap(), 4);
        // Only messages of exactly payload_max bytes fit a fixed slot.
        assert_eq!(
            tx.send_with(63, |_| {}).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn length_prefixed_ring_carries_any_length_up_to_payload_max() {
        let (_dir, mut tx, mut rx) = channel::<RingLen>(&cfg(4));
        for i in 0..4u8 {
            tx.send_with(usize::from(i), |b| b.fill(i)).unwrap();
        }
        assert_eq!(
            tx.send_with(1, |_| {}).unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        assert_eq!(
            rx.recv_with(WaitMode::Spin, <[u8]>::to_vec).unwrap(),
            Vec::<u8>::new()
        );
        // Released per message: one read makes room for one send.
        tx.send_with(64, |b| b.fill(9)).unwrap();
        for i in 1..4u8 {
            let got = rx.recv_with(WaitMode::Spin, <[u8]>::to_vec).unwrap();
            assert_eq!(got, vec![i; usize::from(i)]);
        }
        assert_eq!(
            rx.recv_with(WaitMode::Spin, <[u8]>::to_vec).unwrap(),
            vec![9; 64]
        );
        assert!(tx.send_with(65, |_| {}).is_err());
    }

    #[test]
    fn a_batch_larger_than_the_ring_publishes_before_it_waits() {
        let (_dir, mut tx, mut rx) = channel::<RingFutex>(&cfg(4));
        let reader = std::thread::spawn(move || {
            (0..10)
                .map(|_| rx.recv_with(WaitMode::Block, |b| b[0]).unwrap())
                .collect::<Vec<u8>>()
        });
        // Ten messages through four slots in one batch: without a publication before each
        // wait for space, the reader would never see the first four and the writer would
        // time out.
        tx.send_batch_with(10, 64, |i, b| b.fill(i as u8)).unwrap();
        assert_eq!(reader.join().unwrap(), (0..10).collect::<Vec<u8>>());
        assert_eq!(
            tx.send_batch_with(2, 63, |_, _| {}).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn reader_rejects_mismatched_config() {
        let dir = tempfile::tempdir().unwrap();
        let _tx = <Ring as Transport>::create(dir.path(), &cfg(4)).unwrap();
        assert!(<Ring as Transport>::open(dir.path(), &cfg(8)).is_err());
        assert!(<RingFutex as Transport>::open(dir.path(), &cfg(4)).is_err());
        assert!(<RingLen as Transport>::open(dir.path(), &cfg(4)).is_err());
    }

    #[test]
    fn blocked_reader_is_woken_across_threads() {
        let (_dir, mut tx, mut rx) = channel::<RingFutex>(&cfg(64));
        let reader = std::thread::spawn(move || {
            let mut sum = 0u64;
            for _ in 0..1000 {
                sum += rx.recv_with(WaitMode::Block, |b| u64::from(b[0])).unwrap();
            }
            sum
        });
        // Let the reader reach the futex before the first message.
        std::thread::sleep(Duration::from_millis(20));
        for i in 0..1000u64 {
            tx.send_with(64, |b| b[0] = (i % 7) as u8).unwrap();
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let expected: u64 = (0..1000u64).map(|i| i % 7).sum();
        assert_eq!(reader.join().unwrap(), expected);
    }
}
