//! The demo trading topology, used by `examples/{feed,strategy,router}.rs` and by the
//! `chron-cli feed|strategy|router|demo` roles, so the two always behave alike:
//!
//! - the tick format (fixed-layout little-endian 48-byte records, decoded field by field because
//!   queue bytes are untrusted input); orders use the bus's order format
//!   ([`chronicle_bus::orders::Order`]);
//! - [`Market`], the feed's synthetic ticks, and [`Trader`], a strategy's decisions (which ticks
//!   it trades, its orders and cancels, and how it backs off when its orders are refused or
//!   expire);
//! - the process loops themselves: [`feed::run`] and [`strategy::run`] (the router's loop is the
//!   bus's [`Router::run`](chronicle_bus::orders::Router::run)).

pub mod feed;
pub mod strategy;

use std::fmt;

pub use chronicle_bus::orders::record::ORDER;
pub use chronicle_bus::orders::{FateCode, Kind, Order};

/// Type id of a market-data tick in the feed queue.
pub const TICK: u32 = 1;
/// Size of an encoded tick.
pub const TICK_LEN: usize = 48;

/// Errors of the topology loops: the bus's or the queue engine's.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A bus operation failed.
    Bus(chronicle_bus::BusError),
    /// A queue operation failed.
    Queue(chronicle_core::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bus(e) => e.fmt(f),
            Error::Queue(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bus(e) => Some(e),
            Error::Queue(e) => Some(e),
        }
    }
}

impl From<chronicle_bus::BusError> for Error {
    fn from(e: chronicle_bus::BusError) -> Self {
        Error::Bus(e)
    }
}

impl From<chronicle_core::Error> for Error {
    fn from(e: chronicle_core::Error) -> Self {
        Error::Queue(e)
    }
}

/// A top-of-book update. Prices are in 1e-4 units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Instrument.
    pub symbol: u32,
    /// Size at the bid.
    pub bid_size: u32,
    /// Size at the ask.
    pub ask_size: u32,
    /// Best bid.
    pub bid: i64,
    /// Best ask.
    pub ask: i64,
    /// When the exchange stamped it (simulated).
    pub exchange_ts: u64,
    /// When the feed published it (CLOCK_REALTIME ns): the start of tick-to-route.
    pub send_ts: u64,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(dst) = b.get_mut(at..at + v.len()) {
        dst.copy_from_slice(v);
    }
}

impl Tick {
    /// The 48-byte encoding.
    pub fn encode(&self) -> [u8; TICK_LEN] {
        let mut b = [0u8; TICK_LEN];
        put(&mut b, 0, &self.symbol.to_le_bytes());
        put(&mut b, 4, &self.bid_size.to_le_bytes());
        put(&mut b, 8, &self.ask_size.to_le_bytes());
        put(&mut b, 16, &self.bid.to_le_bytes());
        put(&mut b, 24, &self.ask.to_le_bytes());
        put(&mut b, 32, &self.exchange_ts.to_le_bytes());
        put(&mut b, 40, &self.send_ts.to_le_bytes());
        b
    }

    /// Decodes a tick; `None` if `b` is too short.
    pub fn decode(b: &[u8]) -> Option<Tick> {
        Some(Tick {
            symbol: u32_at(b, 0)?,
            bid_size: u32_at(b, 4)?,
            ask_size: u32_at(b, 8)?,
            bid: u64_at(b, 16)? as i64,
            ask: u64_at(b, 24)? as i64,
            exchange_ts: u64_at(b, 32)?,
            send_ts: u64_at(b, 40)?,
        })
    }
}

/// The 16-bit tag a strategy puts in the top bits of its order ids (so ids are unique across
/// strategies in `router/out`).
pub fn strategy_tag(id: &str) -> u64 {
    chronicle_bus::SourceId::of(id).0 & 0xFFFF
}

/// Small deterministic generator for synthetic prices.
#[derive(Debug)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Synthetic top-of-book market: a random walk of the mid price per symbol.
#[derive(Debug)]
pub struct Market {
    rng: XorShift,
    mids: Vec<i64>,
}

impl Market {
    /// `symbols` instruments (at least one), each starting at its own price level.
    pub fn new(symbols: u32) -> Market {
        Market {
            rng: XorShift(0x9E37_79B9_7F4A_7C15),
            mids: (0..symbols.max(1))
                .map(|s| 1_000_000 + i64::from(s) * 10_000)
                .collect(),
        }
    }

    /// The next tick, stamped `now_ns` (CLOCK_REALTIME) as sent and 20 µs earlier as exchanged.
    pub fn tick(&mut self, now_ns: u64) -> Tick {
        let n = self.mids.len().max(1) as u64;
        let symbol = (self.rng.next_u64() % n) as u32;
        let step = (self.rng.next_u64() % 21) as i64 - 10;
        let spread = 1 + (self.rng.next_u64() % 4) as i64;
        let bid_size = 100 + (self.rng.next_u64() % 900) as u32;
        let ask_size = 100 + (self.rng.next_u64() % 900) as u32;
        let mid = match self.mids.get_mut(symbol as usize) {
            Some(m) => {
                *m += step;
                *m
            }
            None => 1_000_000,
        };
        Tick {
            symbol,
            bid_size,
            ask_size,
            bid: mid - spread,
            ask: mid + spread,
            exchange_ts: now_ns.saturating_sub(20_000),
            send_ts: now_ns,
        }
    }
}

/// What a strategy trades: symbol `s` when `s % slots == slot`, on every `every`-th such tick;
/// `hot` trades every tick it sees, whatever the symbol, four orders at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraderConfig {
    /// Order on every N-th tick of the strategy's symbols (0 is taken as 1).
    pub every: u64,
    /// This strategy's slot.
    pub slot: u64,
    /// Number of slots (0 is taken as 1).
    pub slots: u64,
    /// Flood: a burst of four orders on every tick.
    pub hot: bool,
    /// How long after its creation an order may still be sent, in ns.
    pub deadline_ns: u64,
    /// Back-off: at most this many orders without a fate at once. The window works like TCP's
    /// congestion window: it halves when an order is refused, expires or is evicted (once per
    /// window's worth of orders: the fates of orders sent before the cut do not cut again) and
    /// grows by one per window's worth of orders routed or cancelled (additive increase,
    /// multiplicative decrease). 0: no back-off.
    pub max_outstanding: u64,
    /// Stale market data: a tick older than this when it is read (its send stamp to now) is
    /// not traded on, in ns (after a restart or a stall the strategy reads a backlog of old
    /// ticks: orders on them would react to prices long gone). 0: no limit.
    pub max_tick_age_ns: u64,
}

/// A strategy's decisions: for each tick, the orders to write. Buys even symbols at the bid,
/// sells odd ones at the ask, 100 lots; every fourth order written cancels the previous new one.
#[derive(Debug)]
pub struct Trader {
    cfg: TraderConfig,
    matched: u64,
    next_order_id: u64,
    orders: u64,
    last_new: Option<Order>,
    outstanding: u64,
    window: f64,
    /// Orders with ids from here on were sent after the last cut of the window.
    cut_from: u64,
    held_back: u64,
    stale: u64,
    connected: bool,
    not_connected: u64,
}

impl Trader {
    /// A trader whose first order gets `first_order_id` (ids then count up by one).
    pub fn new(cfg: TraderConfig, first_order_id: u64) -> Trader {
        let slots = cfg.slots.max(1);
        Trader {
            cfg: TraderConfig {
                every: cfg.every.max(1),
                slots,
                slot: cfg.slot % slots,
                ..cfg
            },
            matched: 0,
            next_order_id: first_order_id,
            orders: 0,
            last_new: None,
            outstanding: 0,
            window: cfg.max_outstanding as f64,
            cut_from: first_order_id,
            held_back: 0,
            stale: 0,
            connected: true,
            not_connected: 0,
        }
    }

    /// Takes the fate of one of its orders (or cancels): frees its place in the window and
    /// adapts the window (see [`TraderConfig::max_outstanding`]).
    pub fn on_fate(&mut self, code: FateCode, order_id: u64) {
        self.outstanding = self.outstanding.saturating_sub(1);
        let max = self.cfg.max_outstanding as f64;
        match code {
            FateCode::Routed | FateCode::Cancelled => {
                self.window = (self.window + 1.0 / self.window.max(1.0)).min(max);
            }
            FateCode::Rejected | FateCode::Expired | FateCode::Evicted => {
                if order_id >= self.cut_from {
                    self.window = (self.window / 2.0).max(1.0).min(max);
                    self.cut_from = self.next_order_id;
                }
            }
            FateCode::Malformed => {}
        }
    }

    /// Ticks it would have traded but skipped because its window was full.
    pub fn held_back(&self) -> u64 {
        self.held_back
    }

    /// Ticks it would have traded but skipped because they were stale (see
    /// [`TraderConfig::max_tick_age_ns`]).
    pub fn stale(&self) -> u64 {
        self.stale
    }

    /// Whether a router takes its orders now (see `StrategyEndpoints::router_attached`): while
    /// not, it trades on nothing (an order would only wait for a router, and expire). A new
    /// trader is connected.
    pub fn set_connected(&mut self, connected: bool) {
        self.connected = connected;
    }

    /// See [`set_connected`](Self::set_connected).
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Ticks it would have traded but skipped because no router was attached.
    pub fn not_connected(&self) -> u64 {
        self.not_connected
    }

    /// Its current window, in orders (see [`TraderConfig::max_outstanding`]).
    pub fn window(&self) -> u64 {
        self.window as u64
    }

    /// Decides on `tick` at `now_ns` (CLOCK_REALTIME) and hands each order to `emit` in order;
    /// stops at the first error `emit` returns.
    pub fn on_tick<E>(
        &mut self,
        tick: &Tick,
        now_ns: u64,
        mut emit: impl FnMut(&Order) -> Result<(), E>,
    ) -> Result<(), E> {
        let c = self.cfg;
        if u64::from(tick.symbol) % c.slots != c.slot && !c.hot {
            return Ok(());
        }
        self.matched += 1;
        if !c.hot && self.matched % c.every != 0 {
            return Ok(());
        }
        if c.max_tick_age_ns > 0 && now_ns.saturating_sub(tick.send_ts) > c.max_tick_age_ns {
            self.stale += 1;
            return Ok(());
        }
        if !self.connected {
            self.not_connected += 1;
            return Ok(());
        }
        if c.max_outstanding > 0 && self.outstanding as f64 >= self.window {
            self.held_back += 1;
            return Ok(());
        }
        let deadline_ns = now_ns.saturating_add(c.deadline_ns);
        for _ in 0..if c.hot { 4 } else { 1 } {
            let buy = tick.symbol % 2 == 0;
            let order = Order {
                order_id: self.next_order_id,
                origin_ns: tick.send_ts,
                deadline_ns,
                price: if buy { tick.bid } else { tick.ask },
                symbol: tick.symbol,
                qty: 100,
                buy,
                kind: Kind::New,
            };
            self.next_order_id += 1;
            emit(&order)?;
            self.orders += 1;
            self.outstanding += 1;
            if let Some(prev) = self.last_new.filter(|_| self.orders % 4 == 0) {
                let cancel = Order {
                    kind: Kind::Cancel,
                    origin_ns: tick.send_ts,
                    deadline_ns,
                    ..prev
                };
                emit(&cancel)?;
                self.orders += 1;
                self.outstanding += 1;
            }
            self.last_new = Some(order);
        }
        Ok(())
    }

    /// Orders (new and cancels) handed out so far.
    pub fn orders(&self) -> u64 {
        self.orders
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = Tick {
            symbol: 3,
            bid_size: 4,
            ask_size: 5,
            bid: -6,
            ask: 7,
            exchange_ts: 8,
            send_ts: 9,
        };
        assert_eq!(Tick::decode(&t.encode()), Some(t));
        assert_eq!(Tick::decode(&t.encode()[..47]), None);
    }

    /// Every tick of every symbol, one order at a time, no deadline, back-off or staleness
    /// limit: the tests set what they are about on top.
    const PLAIN: TraderConfig = TraderConfig {
        every: 1,
        slot: 0,
        slots: 1,
        hot: false,
        deadline_ns: 0,
        max_outstanding: 0,
        max_tick_age_ns: 0,
    };

    fn tick(symbol: u32, send_ts: u64) -> Tick {
        Tick {
            symbol,
            bid_size: 1,
            ask_size: 1,
            bid: 99,
            ask: 101,
            exchange_ts: send_ts,
            send_ts,
        }
    }

    fn collect(t: &mut Trader, tk: &Tick, now: u64) -> Vec<Order> {
        let mut out = Vec::new();
        t.on_tick(tk, now, |o| {
            out.push(*o);
            Ok::<(), ()>(())
        })
        .unwrap();
        out
    }

    #[test]
    fn trader_trades_its_slot_every_nth_tick_and_cancels_every_fourth_order() {
        let cfg = TraderConfig {
            every: 2,
            slot: 1,
            slots: 2,
            deadline_ns: 500,
            ..PLAIN
        };
        let mut t = Trader::new(cfg, 10);
        let mut all = Vec::new();
        for i in 0..20u32 {
            all.extend(collect(&mut t, &tick(i, u64::from(i)), 1_000));
        }
        // Odd symbols only (10 of them), every second one: 5 new orders, plus one cancel
        // when the order count reaches 4.
        let news: Vec<&Order> = all.iter().filter(|o| o.kind == Kind::New).collect();
        assert_eq!(news.len(), 5);
        assert!(
            news.iter()
                .all(|o| o.symbol % 2 == 1 && !o.buy && o.price == 101)
        );
        assert_eq!(
            news.iter().map(|o| o.order_id).collect::<Vec<_>>(),
            vec![10, 11, 12, 13, 14]
        );
        assert_eq!(news[0].symbol, 3);
        let cancels: Vec<&Order> = all.iter().filter(|o| o.kind == Kind::Cancel).collect();
        assert_eq!(cancels.len(), 1);
        // The cancel follows the fourth new order and names the third.
        assert_eq!(cancels[0].order_id, 12);
        assert_eq!(all[4].kind, Kind::Cancel);
        assert!(all.iter().all(|o| o.deadline_ns == 1_500));
        assert_eq!(t.orders(), all.len() as u64);
    }

    #[test]
    fn hot_trader_bursts_on_every_tick_and_stops_at_the_first_error() {
        let cfg = TraderConfig {
            every: 8,
            slots: 4,
            hot: true,
            ..PLAIN
        };
        let mut t = Trader::new(cfg, 1);
        let first = collect(&mut t, &tick(7, 1), 0);
        // Four new orders and the cancel the fourth order triggers.
        assert_eq!(first.len(), 5);
        let mut n = 0;
        let r = t.on_tick(&tick(2, 2), 0, |_| {
            n += 1;
            if n == 2 { Err("full") } else { Ok(()) }
        });
        assert_eq!(r, Err("full"));
        assert_eq!(n, 2);
        assert_eq!(t.orders(), 6);
    }

    #[test]
    fn market_ticks_stay_on_their_symbols_with_a_positive_spread() {
        let mut m = Market::new(5);
        for i in 0..1000u64 {
            let t = m.tick(1_000_000 + i);
            assert!(t.symbol < 5);
            assert!(t.ask > t.bid);
            assert_eq!(t.send_ts, 1_000_000 + i);
            assert_eq!(t.exchange_ts, 980_000 + i);
        }
        // Zero symbols is one symbol, not a division by zero.
        assert_eq!(Market::new(0).tick(5).symbol, 0);
    }

    #[test]
    fn trader_backs_off_while_its_orders_are_refused_and_recovers() {
        let cfg = TraderConfig {
            hot: true,
            max_outstanding: 8,
            ..PLAIN
        };
        let mut t = Trader::new(cfg, 1);
        // Two bursts (4 orders + a cancel, then 4 more and a cancel) fill the window of 8...
        let first = collect(&mut t, &tick(0, 1), 0);
        assert_eq!(first.len(), 5);
        assert_eq!(collect(&mut t, &tick(0, 2), 0).len(), 5);
        assert!(collect(&mut t, &tick(0, 3), 0).is_empty());
        assert_eq!(t.held_back(), 1);
        // ...refusals of orders of that flight cut it once, to 4 (10 outstanding - 3 = 7).
        for o in &first[..3] {
            t.on_fate(FateCode::Rejected, o.order_id);
        }
        assert_eq!(t.window(), 4);
        assert!(collect(&mut t, &tick(0, 4), 0).is_empty());
        // Answers free places: with 3 outstanding, the next burst goes.
        for o in &first[3..] {
            t.on_fate(FateCode::Routed, o.order_id);
        }
        for _ in 0..2 {
            t.on_fate(FateCode::Expired, 1);
        }
        assert_eq!(t.window(), 4, "fates of the old flight do not cut again");
        let burst = collect(&mut t, &tick(0, 5), 0);
        assert!(!burst.is_empty());
        // A refusal of an order sent after the cut cuts again.
        t.on_fate(FateCode::Rejected, burst[0].order_id);
        assert_eq!(t.window(), 2);
        // Routed fates grow it by about one per window's worth, up to the max.
        for _ in 0..200 {
            t.on_fate(FateCode::Routed, 0);
        }
        assert_eq!(t.window(), 8);
    }

    #[test]
    fn trader_skips_stale_ticks_and_trades_nothing_while_not_connected() {
        let cfg = TraderConfig {
            deadline_ns: 100,
            max_tick_age_ns: 1_000,
            ..PLAIN
        };
        let mut t = Trader::new(cfg, 1);
        // Sent at 5_000: fresh at 6_000 (1 µs old), stale at 6_001.
        assert_eq!(collect(&mut t, &tick(0, 5_000), 6_000).len(), 1);
        assert!(collect(&mut t, &tick(0, 5_000), 6_001).is_empty());
        assert_eq!(t.stale(), 1);
        t.set_connected(false);
        assert!(collect(&mut t, &tick(0, 7_000), 7_000).is_empty());
        assert_eq!((t.not_connected(), t.stale()), (1, 1));
        t.set_connected(true);
        assert_eq!(collect(&mut t, &tick(0, 8_000), 8_000).len(), 1);
        assert_eq!(t.orders(), 2);
    }
}
