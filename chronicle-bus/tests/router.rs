//! The order router, one rule at a time: every fate (routed, rejected, expired, evicted,
//! cancelled, malformed) as the strategy reads it, cancels that withdraw their queued order,
//! cancels that are never crowded out and go first, a restart that answers nothing twice, and
//! the audit's verdicts. The router runs in this process, stepped by the test; the
//! multi-process crash behaviour is `router_crash.rs`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use chronicle_bus::orders::record::{ORDER, ROUTED};
use chronicle_bus::orders::{
    Fate, FateCode, FateReader, Kind, Order, Problem, ROUTER_READER, RejectCode, Routed, Router,
    RouterConfig, audit,
};
use chronicle_bus::sched::Backpressure;
use chronicle_bus::{BusLayout, SourceId, StrategyConfig, StrategyEndpoints};
use chronicle_core::os::realtime_ns;
use chronicle_core::{QueueReader, QueueWriter, ReaderConfig, StartAt, WriterConfig};

/// Watchdog for waiting on the router (a hang is a failure; no timing is asserted).
const T: Duration = Duration::from_secs(60);

fn bus() -> (tempfile::TempDir, BusLayout) {
    let dir = tempfile::tempdir().unwrap();
    let layout = BusLayout::create(dir.path().join("bus")).unwrap();
    (dir, layout)
}

fn strategy(layout: &BusLayout, id: &str) -> StrategyEndpoints {
    let mut ep = StrategyEndpoints::open(
        layout,
        id,
        StrategyConfig {
            lease_ttl: Duration::from_secs(600),
            ..StrategyConfig::default()
        },
    )
    .unwrap();
    ep.mark_ready().unwrap();
    ep
}

fn cfg(rate_limit: u64, max_per_tenant: usize) -> RouterConfig {
    let small = WriterConfig {
        segment_size: 1 << 20,
        ..WriterConfig::default()
    };
    let mut c = RouterConfig::default();
    c.rate_limit = rate_limit;
    c.max_per_tenant = max_per_tenant;
    c.max_hold = Duration::from_micros(100);
    c.poll_every = Duration::from_millis(1);
    c.out = small.clone();
    c.fates = small;
    c
}

fn order(id: u64, kind: Kind, deadline_ns: u64) -> Order {
    Order {
        order_id: id,
        origin_ns: realtime_ns(),
        deadline_ns,
        price: 10,
        symbol: 1,
        qty: 5,
        buy: true,
        kind,
    }
}

fn far() -> u64 {
    realtime_ns() + 600_000_000_000
}

fn send(ep: &mut StrategyEndpoints, o: &Order) -> u64 {
    ep.writer().append(ORDER, &o.encode()).unwrap()
}

/// Steps the router until strategy `id` has `n` fates (in total); returns them all.
fn fates_until(
    router: &mut Router,
    layout: &BusLayout,
    id: &str,
    seen: &mut Vec<Fate>,
    n: usize,
) -> Vec<Fate> {
    let end = Instant::now() + T;
    loop {
        // The router creates the fates queue on a helper thread: it can exist half made.
        if let Ok(r) = FateReader::open(layout, id, None) {
            *seen = read_all(r);
        }
        if seen.len() >= n {
            return seen.clone();
        }
        assert!(
            Instant::now() < end,
            "only {} of {n} fates: {seen:?}",
            seen.len()
        );
        if !router.step().unwrap() {
            router.wait(Duration::from_micros(200)).unwrap();
        }
    }
}

/// Reads all fates of `id` from the start.
fn all_fates(layout: &BusLayout, id: &str) -> Vec<Fate> {
    read_all(FateReader::open(layout, id, None).unwrap())
}

fn read_all(mut r: FateReader) -> Vec<Fate> {
    let mut v = Vec::new();
    while let Some(f) = r.next().unwrap() {
        v.push(f);
    }
    v
}

fn routed_records(layout: &BusLayout) -> Vec<(u64, Routed)> {
    let mut r = QueueReader::open(
        layout.router_out(),
        ReaderConfig::default().start(StartAt::Earliest),
    )
    .unwrap();
    let mut v = Vec::new();
    while let Some(m) = r.next().unwrap() {
        assert_eq!(m.type_id(), ROUTED);
        v.push((m.seq(), Routed::decode(m.payload()).unwrap()));
    }
    v
}

#[test]
fn routed_orders_are_in_router_out_and_their_fates_say_where() {
    let (_d, layout) = bus();
    let mut ep = strategy(&layout, "s1");
    let mut router = Router::open(&layout, cfg(0, 64)).unwrap();
    let orders: Vec<Order> = (1..=3).map(|i| order(i, Kind::New, far())).collect();
    for o in &orders {
        send(&mut ep, o);
    }
    let mut seen = Vec::new();
    let fates = fates_until(&mut router, &layout, "s1", &mut seen, 3);
    let out = routed_records(&layout);
    assert_eq!(out.len(), 3);
    for (i, f) in fates.iter().enumerate() {
        assert_eq!(f.code, FateCode::Routed);
        assert_eq!(f.order_id, orders[i].order_id);
        assert_eq!(f.order_kind(), Some(Kind::New));
        assert_eq!(f.order_seq, i as u64);
        let (out_seq, rec) = out[i];
        assert_eq!(f.out_seq, Some(out_seq));
        assert_eq!(rec.order, orders[i]);
        assert_eq!(rec.source_id, SourceId::of("s1").0);
        assert_eq!(rec.order_seq, i as u64);
    }
    let stats = router.strategies();
    assert_eq!(stats[0].fates.get(FateCode::Routed), 3);
    router.close().unwrap();
    assert!(audit(&layout).unwrap().is_clean());
}

#[test]
fn a_strategy_sees_when_a_router_holds_its_queue() {
    let (_d, layout) = bus();
    let mut ep = strategy(&layout, "s1");
    assert!(!ep.router_attached(ROUTER_READER).unwrap());
    // Discovery is polled once, at the first step: the fates queue is opened on a helper thread
    // and the strategy is attached by a later step, with no second poll.
    let mut c = cfg(0, 16);
    c.poll_every = Duration::from_secs(3600);
    let mut router = Router::open(&layout, c).unwrap();
    let end = Instant::now() + T;
    while !ep.router_attached(ROUTER_READER).unwrap() {
        assert!(Instant::now() < end, "never attached");
        if !router.step().unwrap() {
            router.wait(Duration::from_micros(200)).unwrap();
        }
    }
    assert_eq!(router.strategies()[0].attached, 1);
    send(&mut ep, &order(1, Kind::New, far()));
    let fates = fates_until(&mut router, &layout, "s1", &mut Vec::new(), 1);
    assert_eq!(fates[0].code, FateCode::Routed);
    // Another reader name is not the router.
    assert!(!ep.router_attached("someone-else").unwrap());
    router.close().unwrap();
    assert!(!ep.router_attached(ROUTER_READER).unwrap());
}

#[test]
fn a_full_strategy_is_refused_with_a_reason_and_malformed_records_are_answered() {
    let (_d, layout) = bus();
    let mut ep = strategy(&layout, "s1");
    // One order per second: nothing leaves while the test looks.
    let mut router = Router::open(&layout, cfg(1, 2)).unwrap();
    for i in 1..=5 {
        send(&mut ep, &order(i, Kind::New, far()));
    }
    ep.writer()
        .append(ORDER, &[7, 0, 0, 0, 0, 0, 0, 0, 1])
        .unwrap();
    let mut bad = order(9, Kind::New, far()).encode();
    bad[41] = 3;
    ep.writer().append(ORDER, &bad).unwrap();
    ep.writer()
        .append(99, &order(10, Kind::New, far()).encode())
        .unwrap();
    let mut seen = Vec::new();
    let fates = fates_until(&mut router, &layout, "s1", &mut seen, 6);
    let rejected: Vec<&Fate> = fates
        .iter()
        .filter(|f| f.code == FateCode::Rejected)
        .collect();
    assert_eq!(rejected.len(), 3, "{fates:?}");
    assert!(
        rejected
            .iter()
            .all(|f| f.reason == Some(RejectCode::StrategyFull) && f.order_id >= 3)
    );
    let malformed: Vec<(u64, u8, u64)> = fates
        .iter()
        .filter(|f| f.code == FateCode::Malformed)
        .map(|f| (f.order_id, f.kind, f.order_seq))
        .collect();
    // Too short (id from its first 8 bytes, no kind byte), unknown kind byte, wrong type id.
    assert_eq!(malformed, vec![(7, 0xFF, 5), (9, 3, 6), (10, 0, 7)]);
    router.close().unwrap();
}

#[test]
fn a_cancel_withdraws_its_queued_order_and_both_are_answered_cancelled() {
    let (_d, layout) = bus();
    let mut ep = strategy(&layout, "s1");
    let mut router = Router::open(&layout, cfg(1, 64)).unwrap();
    send(&mut ep, &order(41, Kind::New, far()));
    send(&mut ep, &order(42, Kind::New, far()));
    send(&mut ep, &order(41, Kind::Cancel, far()));
    let mut seen = Vec::new();
    let fates = fates_until(&mut router, &layout, "s1", &mut seen, 2);
    assert_eq!(
        fates
            .iter()
            .map(|f| (f.order_id, f.order_kind(), f.code, f.order_seq))
            .collect::<Vec<_>>(),
        vec![
            (41, Some(Kind::New), FateCode::Cancelled, 0),
            (41, Some(Kind::Cancel), FateCode::Cancelled, 2)
        ]
    );
    // 42 is still queued and is sent when a token comes; nothing else is.
    let fates = fates_until(&mut router, &layout, "s1", &mut seen, 3);
    assert_eq!((fates[2].order_id, fates[2].code), (42, FateCode::Routed));
    let out = routed_records(&layout);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.order.order_id, 42);
    router.close().unwrap();
    assert!(audit(&layout).unwrap().is_clean());
}

#[test]
fn cancels_are_never_crowded_out_and_go_ahead_of_their_strategys_orders() {
    let (_d, layout) = bus();
    let mut ep = strategy(&layout, "s1");
    let mut router = Router::open(&layout, cfg(1, 2)).unwrap();
    // Fill the strategy (2 queued, the third refused), then cancel an order the router no longer
    // holds (as if it had been sent earlier): the cancel must get in and be sent first.
    for i in 1..=3 {
        send(&mut ep, &order(i, Kind::New, far()));
    }
    send(&mut ep, &order(77, Kind::Cancel, far()));
    let mut seen = Vec::new();
    let fates = fates_until(&mut router, &layout, "s1", &mut seen, 2);
    assert_eq!((fates[0].order_id, fates[0].code), (3, FateCode::Rejected));
    assert_eq!(
        (fates[1].order_id, fates[1].order_kind(), fates[1].code),
        (77, Some(Kind::Cancel), FateCode::Routed),
        "the cancel is admitted into a full strategy and sent before its new orders"
    );
    let out = routed_records(&layout);
    assert_eq!(out[0].1.order.kind, Kind::Cancel);
    router.close().unwrap();
}

#[test]
fn orders_past_their_deadline_are_answered_expired_and_never_sent() {
    let (_d, layout) = bus();
    let mut ep = strategy(&layout, "s1");
    // Already past its deadline when written.
    send(&mut ep, &order(1, Kind::New, realtime_ns() - 1));
    let mut router = Router::open(&layout, cfg(1, 64)).unwrap();
    let mut seen = Vec::new();
    let fates = fates_until(&mut router, &layout, "s1", &mut seen, 1);
    assert_eq!((fates[0].order_id, fates[0].code), (1, FateCode::Expired));
    // One token per second, the first for order 3: order 2, queued behind it with a 20 ms
    // deadline, can only expire.
    send(&mut ep, &order(3, Kind::New, far()));
    send(&mut ep, &order(2, Kind::New, realtime_ns() + 20_000_000));
    let fates = fates_until(&mut router, &layout, "s1", &mut seen, 3);
    let got: Vec<(u64, FateCode)> = fates[1..].iter().map(|f| (f.order_id, f.code)).collect();
    assert!(got.contains(&(3, FateCode::Routed)), "{got:?}");
    assert!(got.contains(&(2, FateCode::Expired)), "{got:?}");
    router.close().unwrap();
    // Deadlines that pass while no router runs: answered expired by the next one, never sent.
    send(&mut ep, &order(4, Kind::New, realtime_ns() + 1_000_000));
    send(&mut ep, &order(5, Kind::Cancel, realtime_ns() + 1_000_000));
    std::thread::sleep(Duration::from_millis(5));
    let mut router = Router::open(&layout, cfg(0, 64)).unwrap();
    let fates = fates_until(&mut router, &layout, "s1", &mut seen, 5);
    let mut got: Vec<(u64, FateCode)> = fates[3..].iter().map(|f| (f.order_id, f.code)).collect();
    got.sort_unstable();
    assert_eq!(got, vec![(4, FateCode::Expired), (5, FateCode::Expired)]);
    assert_eq!(routed_records(&layout).len(), 1);
    router.close().unwrap();
    assert!(audit(&layout).unwrap().is_clean());
}

#[test]
fn evict_oldest_answers_the_evicted_order() {
    let (_d, layout) = bus();
    let mut ep = strategy(&layout, "s1");
    let mut c = cfg(1, 2);
    c.backpressure = Backpressure::EvictOldest;
    let mut router = Router::open(&layout, c).unwrap();
    for i in 1..=3 {
        send(&mut ep, &order(i, Kind::New, far()));
    }
    let mut seen = Vec::new();
    let fates = fates_until(&mut router, &layout, "s1", &mut seen, 1);
    assert_eq!((fates[0].order_id, fates[0].code), (1, FateCode::Evicted));
    router.close().unwrap();
}

#[test]
fn a_restarted_router_answers_nothing_twice_and_finishes_what_was_queued() {
    let (_d, layout) = bus();
    let mut ep = strategy(&layout, "s1");
    let mut router = Router::open(&layout, cfg(1, 4)).unwrap();
    for i in 1..=6 {
        send(&mut ep, &order(i, Kind::New, far()));
    }
    // 4 queued (not sent: one token per second), 2 refused.
    let mut seen = Vec::new();
    fates_until(&mut router, &layout, "s1", &mut seen, 2);
    router.close().unwrap();
    // The position is held at the first queued order; nothing was lost.
    let mut router = Router::open(&layout, cfg(0, 4)).unwrap();
    let mut seen = Vec::new();
    let fates = fates_until(&mut router, &layout, "s1", &mut seen, 6);
    // It read all six again and took only the four without a fate (the journal).
    let st = &router.strategies()[0];
    assert_eq!((st.merged, st.skipped), (4, 2));
    let mut ids: Vec<(u64, FateCode)> = fates.iter().map(|f| (f.order_id, f.code)).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        vec![
            (1, FateCode::Routed),
            (2, FateCode::Routed),
            (3, FateCode::Routed),
            (4, FateCode::Routed),
            (5, FateCode::Rejected),
            (6, FateCode::Rejected)
        ]
    );
    // A third router finds everything answered and adds nothing.
    router.close().unwrap();
    let mut router = Router::open(&layout, cfg(0, 4)).unwrap();
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end {
        router.step().unwrap();
    }
    assert_eq!(all_fates(&layout, "s1").len(), 6);
    let st = &router.strategies()[0];
    assert_eq!(
        (st.merged, st.skipped),
        (0, 0),
        "committed past everything answered"
    );
    router.close().unwrap();
    assert!(audit(&layout).unwrap().is_clean());
}

#[test]
fn a_router_that_died_after_sending_answers_that_order_on_start() {
    let (_d, layout) = bus();
    let mut ep = strategy(&layout, "s1");
    let o = order(5, Kind::New, far());
    let seq = send(&mut ep, &o);
    // What a router leaves behind when it dies between `router/out` and the fate: the order in
    // router/out, no fate, no committed position.
    let mut out = QueueWriter::open(layout.router_out(), WriterConfig::default()).unwrap();
    let rec = Routed {
        order: o,
        source_id: SourceId::of("s1").0,
        order_seq: seq,
    };
    out.append(ROUTED, &rec.encode()).unwrap();
    out.close().unwrap();
    let report = audit(&layout).unwrap();
    assert!(report.problems.contains(&Problem::SentWithoutFate {
        strategy: "s1".into(),
        order_id: 5,
        order_seq: seq,
        out_seq: 0
    }));
    let mut router = Router::open(&layout, cfg(0, 4)).unwrap();
    assert!(router.take_events().iter().any(|e| matches!(
        e,
        chronicle_bus::orders::RouterEvent::Recovered { out_seq: 0, .. }
    )));
    // Merging the order again sends nothing new.
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end {
        router.step().unwrap();
    }
    let fates = all_fates(&layout, "s1");
    assert_eq!(fates.len(), 1);
    assert_eq!(
        (fates[0].code, fates[0].out_seq),
        (FateCode::Routed, Some(0))
    );
    assert_eq!(routed_records(&layout).len(), 1);
    router.close().unwrap();
    assert!(audit(&layout).unwrap().is_clean());
}

#[test]
fn audit_names_each_kind_of_problem() {
    let (_d, layout) = bus();
    let mut ep = strategy(&layout, "s1");
    let o1 = order(1, Kind::New, far());
    let o2 = order(2, Kind::New, realtime_ns() - 1_000);
    send(&mut ep, &o1);
    send(&mut ep, &o2);
    send(&mut ep, &order(3, Kind::New, far()));
    // A hand-made, wrong history: o1 sent twice, o2 sent after its deadline with two fates,
    // order 3 never answered.
    let mut out = QueueWriter::open(layout.router_out(), WriterConfig::default()).unwrap();
    let sid = SourceId::of("s1").0;
    for (o, seq) in [(o1, 0), (o1, 0), (o2, 1)] {
        let r = Routed {
            order: o,
            source_id: sid,
            order_seq: seq,
        };
        out.append(ROUTED, &r.encode()).unwrap();
    }
    out.close().unwrap();
    let mut fates = QueueWriter::open(
        layout.strategy_fates("s1").unwrap(),
        WriterConfig::default(),
    )
    .unwrap();
    for (id, seq, out_seq) in [(1, 0, 0), (2, 1, 2), (2, 1, 2)] {
        let f = Fate {
            order_id: id,
            kind: 0,
            code: FateCode::Routed,
            reason: None,
            order_seq: seq,
            out_seq: Some(out_seq),
            frontier: 0,
            scan_from: 0,
            order_epoch: 0,
        };
        fates
            .append(chronicle_bus::orders::record::FATE, &f.encode())
            .unwrap();
    }
    fates.close().unwrap();
    let report = audit(&layout).unwrap();
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(has("order 1 (seq 0) was sent 2 times"), "{text:#?}");
    assert!(has("order 2 (seq 1) has 2 fates"), "{text:#?}");
    assert!(has("order 3 (seq 2) has no fate"), "{text:#?}");
    assert!(
        has("order 2 was written to router/out (seq 2)"),
        "{text:#?}"
    );
    assert!(!report.is_clean());
    let s1 = &report.strategies[0];
    assert_eq!(
        (
            s1.orders,
            s1.answered,
            s1.unanswered,
            s1.answered_twice,
            s1.sent_twice
        ),
        (3, 2, 1, 1, 1)
    );
}

/// Copies every file of directory `from` into `to` (created), one level deep.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A power cut took orders 10-19 from the strategy's order queue while the fates queue kept
/// their fates, and the router's position there was the older one (seq 10). The strategy's
/// recovery records a rewrite of the history from 10 and writes ten new orders at seqs 10-19:
/// the router answers and routes each of them exactly once (its journal's old answers at or
/// past 10 are void, it says so in an event), and the audit closes with the ten old fates
/// counted as voided. Without the epoch in the fate the router skipped the new orders as
/// answered.
#[test]
fn orders_at_seqs_a_power_cut_took_are_answered_as_new() {
    use chronicle_bus::orders::RouterEvent;
    use std::os::unix::fs::FileExt;
    let (d, layout) = bus();
    let orders_q = layout.strategy_orders("s1").unwrap();
    let mut ep = strategy(&layout, "s1");
    let mut router = Router::open(&layout, cfg(0, 64)).unwrap();
    for i in 1..=10 {
        send(&mut ep, &order(i, Kind::New, far()));
    }
    let mut seen = Vec::new();
    fates_until(&mut router, &layout, "s1", &mut seen, 10);
    router.close().unwrap();
    // The router's reader meta as it was with its position at seq 10.
    let saved_readers = d.path().join("readers-at-10");
    copy_dir(&orders_q.join("readers"), &saved_readers);
    let mut router = Router::open(&layout, cfg(0, 64)).unwrap();
    for i in 11..=20 {
        send(&mut ep, &order(i, Kind::New, far()));
    }
    let mut seen = Vec::new();
    fates_until(&mut router, &layout, "s1", &mut seen, 20);
    router.close().unwrap();
    ep.close().unwrap();
    // The cut: the pages of orders 10-19 never reached the disk, nor the router's last
    // position; queue.meta (published next seq 20) and the fates queue did.
    let at = QueueReader::open(&orders_q, ReaderConfig::default().start(StartAt::Seq(10)))
        .unwrap()
        .position();
    let seg = orders_q
        .join("segments")
        .join(chronicle_core::testing::layout::segment_file_name(
            at.segment,
        ));
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[0u8; 8192], at.offset).unwrap();
    drop(f);
    copy_dir(&saved_readers, &orders_q.join("readers"));

    let mut ep = strategy(&layout, "s1");
    let h = ep.writer().history();
    assert_eq!((h.epoch, h.rewritten_from), (1, 10), "{h:?}");
    assert_eq!(ep.writer().next_seq(), 10);
    let new: Vec<Order> = (101..=110).map(|i| order(i, Kind::New, far())).collect();
    for o in &new {
        send(&mut ep, o);
    }
    let mut router = Router::open(&layout, cfg(0, 64)).unwrap();
    let mut seen = Vec::new();
    let fates = fates_until(&mut router, &layout, "s1", &mut seen, 30);
    // Let it run on: nothing more may be answered.
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end {
        router.step().unwrap();
    }
    let events = router.take_events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            RouterEvent::HistoryRewritten {
                rewritten_from: 10,
                voided: 10,
                ..
            }
        )),
        "{events:?}"
    );
    assert_eq!(router.strategies()[0].merged, 10);
    router.close().unwrap();
    assert_eq!(all_fates(&layout, "s1").len(), 30);
    let new_fates = &fates[20..];
    let out = routed_records(&layout);
    for (i, o) in new.iter().enumerate() {
        let mine: Vec<&Fate> = new_fates
            .iter()
            .filter(|f| f.order_id == o.order_id)
            .collect();
        assert_eq!(mine.len(), 1, "order {}: {new_fates:?}", o.order_id);
        let f = mine[0];
        assert_eq!(
            (f.code, f.order_seq, f.order_epoch),
            (FateCode::Routed, 10 + i as u64, 1)
        );
        let sent: Vec<_> = out.iter().filter(|(_, r)| r.order == *o).collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(f.out_seq, Some(sent[0].0));
    }
    let report = audit(&layout).unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    let s1 = &report.strategies[0];
    assert_eq!((s1.orders, s1.answered, s1.voided), (20, 20, 10));
    assert_eq!(s1.fates.get(FateCode::Routed), 20);
}
