//! The market-data feed's process loop: paced top-of-book ticks into one feed queue,
//! heartbeating while idle so a merging reader never waits on it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chronicle_bus::BusLayout;
use chronicle_core::QueueWriter;
use chronicle_core::os::realtime_ns;

use super::{Error, Market, TICK};

/// The time to the next tick below which the feed takes no pretouch step.
const PRETOUCH_SLACK: Duration = Duration::from_micros(50);

/// What the feed does.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Bus directory (created if missing).
    pub bus: PathBuf,
    /// Feed name (queue `feeds/<name>`).
    pub name: String,
    /// Ticks per second.
    pub rate: u64,
    /// Number of symbols.
    pub symbols: u32,
    /// How long before a tick is due the feed stops sleeping and spins (it sleeps until then,
    /// so the OS timer's slack does not delay the tick); 0 sleeps all the way, leaving the CPU to
    /// others on a machine with fewer cores than processes.
    pub spin_before: Duration,
}

/// Where the feed is.
#[derive(Debug, Clone, Copy, Default)]
pub struct FeedStatus {
    /// Ticks sent by this process.
    pub ticks: u64,
    /// The feed queue's next seq.
    pub next_seq: u64,
}

/// Runs the feed until `stop()` turns true; `report` gets the status about once a second and
/// once more, `true`, at the end.
pub fn run(
    cfg: &FeedConfig,
    stop: impl Fn() -> bool,
    mut report: impl FnMut(&FeedStatus, bool),
) -> Result<FeedStatus, Error> {
    let rate = cfg.rate.max(1);
    let layout = BusLayout::create(&cfg.bus)?;
    // The feed waits for every tick: it prepares the next segment in that wait
    // (`QueueWriter::pretouch`), on its own core, instead of a maintenance thread taking the
    // time from another process at a moment nobody chose.
    let wcfg = chronicle_core::WriterConfig {
        preallocate: chronicle_core::Preallocate::Pretouch,
        ..crate::capped_writer_config(16 << 20, 256 << 20)
    };
    let mut w = QueueWriter::open(layout.feed(&cfg.name)?, wcfg)?;
    let mut market = Market::new(cfg.symbols.max(1));
    let gap = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let (mut next_send, mut last_report, mut last_heartbeat) = (start, start, start);
    let mut st = FeedStatus {
        ticks: 0,
        next_seq: w.next_seq(),
    };
    while !stop() {
        let now = Instant::now();
        if now >= next_send {
            let ts = realtime_ns();
            w.append_at(TICK, ts, &market.tick(ts).encode())?;
            st.ticks += 1;
            next_send += gap;
            // After a stall, fall behind by at most 10 ms rather than bursting to catch up.
            if now.duration_since(next_send) > Duration::from_millis(10) {
                next_send = now;
            }
            continue;
        }
        if now.duration_since(last_heartbeat) >= Duration::from_millis(1) {
            w.heartbeat();
            last_heartbeat = now;
        }
        if now.duration_since(last_report) >= Duration::from_secs(1) {
            st.next_seq = w.next_seq();
            report(&st, false);
            last_report = now;
        }
        let left = next_send.saturating_duration_since(Instant::now());
        // One pretouch step takes about 10 µs: take one only when the tick is further away.
        if left > PRETOUCH_SLACK && w.pretouch()? {
            continue;
        }
        if left > cfg.spin_before + Duration::from_micros(10) {
            std::thread::sleep(left - cfg.spin_before);
        } else {
            std::hint::spin_loop();
        }
    }
    st.next_seq = w.next_seq();
    w.close()?;
    report(&st, true);
    Ok(st)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::cell::Cell;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    const SEGMENT: u64 = 16 << 20;

    /// Bytes allocated to each of the feed queue's segment files.
    fn allocated(bus: &std::path::Path) -> Vec<u64> {
        let dir = BusLayout::create(bus).unwrap().feed("md").unwrap();
        let Ok(entries) = std::fs::read_dir(dir.join("segments")) else {
            return Vec::new();
        };
        entries
            .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
            .collect()
    }

    #[test]
    fn the_feed_prepares_its_next_segment_while_it_waits_for_ticks() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = FeedConfig {
            bus: dir.path().to_path_buf(),
            name: "md".into(),
            rate: 1_000,
            symbols: 4,
            spin_before: Duration::ZERO,
        };
        // Runs until two segment files are wholly allocated (the feed writes far less than one
        // segment in that time), or gives up after 20 s.
        let (polls, prepared) = (Cell::new(0u32), Cell::new(false));
        let give_up = Instant::now() + Duration::from_secs(20);
        let st = run(
            &cfg,
            || {
                polls.set(polls.get() + 1);
                if polls.get() % 64 != 0 {
                    return false;
                }
                let a = allocated(dir.path());
                prepared.set(a.len() == 2 && a.iter().all(|&b| b >= SEGMENT));
                prepared.get() || Instant::now() > give_up
            },
            |_, _| {},
        )
        .unwrap();
        assert!(prepared.get(), "the next segment was never prepared");
        assert!(st.ticks > 0);
        assert!(st.ticks * 128 < SEGMENT, "still in the first segment");
    }
}
