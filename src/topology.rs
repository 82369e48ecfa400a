//! The demo trading topology's shared parts, used by `examples/{feed,strategy,router}.rs` and by
//! the `chron-cli feed|strategy|router|demo` roles, so the two always behave alike:
//!
//! - message formats: fixed-layout little-endian 48-byte records, decoded field by field because
//!   queue bytes are untrusted input;
//! - [`Market`], the feed's synthetic ticks;
//! - [`Trader`], a strategy's decisions (which ticks it trades, its orders and cancels);
//! - [`order_task`] and [`TokenBucket`], how the router schedules and paces orders.

use std::time::{Duration, Instant};

use chronicle_bus::sched::Task;

/// Type id of a market-data tick in the feed queue.
pub const TICK: u32 = 1;
/// Type id of an order in a strategy's order queue and in `router/out`.
pub const ORDER: u32 = 2;
/// Size of an encoded tick.
pub const TICK_LEN: usize = 48;
/// Size of an encoded order.
pub const ORDER_LEN: usize = 48;

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

/// New order or cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new order.
    New,
    /// Cancels the order with the same id.
    Cancel,
}

/// An order from a strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// Unique per strategy (the CLI roles put a 16-bit strategy tag in the top bits).
    pub order_id: u64,
    /// `send_ts` of the tick that caused it.
    pub tick_send_ts: u64,
    /// CLOCK_REALTIME ns after which the order must not be sent.
    pub deadline_ns: u64,
    /// Limit price.
    pub price: i64,
    /// Instrument.
    pub symbol: u32,
    /// Quantity.
    pub qty: u32,
    /// Side.
    pub buy: bool,
    /// New or cancel.
    pub kind: Kind,
}

impl Order {
    /// The 48-byte encoding.
    pub fn encode(&self) -> [u8; ORDER_LEN] {
        let mut b = [0u8; ORDER_LEN];
        put(&mut b, 0, &self.order_id.to_le_bytes());
        put(&mut b, 8, &self.tick_send_ts.to_le_bytes());
        put(&mut b, 16, &self.deadline_ns.to_le_bytes());
        put(&mut b, 24, &self.price.to_le_bytes());
        put(&mut b, 32, &self.symbol.to_le_bytes());
        put(&mut b, 36, &self.qty.to_le_bytes());
        put(&mut b, 40, &[u8::from(self.buy)]);
        let kind = match self.kind {
            Kind::New => 0u8,
            Kind::Cancel => 1,
        };
        put(&mut b, 41, &[kind]);
        b
    }

    /// Decodes an order; `None` if `b` is too short or the kind byte is unknown.
    pub fn decode(b: &[u8]) -> Option<Order> {
        if b.len() < ORDER_LEN {
            return None;
        }
        Some(Order {
            order_id: u64_at(b, 0)?,
            tick_send_ts: u64_at(b, 8)?,
            deadline_ns: u64_at(b, 16)?,
            price: u64_at(b, 24)? as i64,
            symbol: u32_at(b, 32)?,
            qty: u32_at(b, 36)?,
            buy: *b.get(40)? != 0,
            kind: match *b.get(41)? {
                0 => Kind::New,
                1 => Kind::Cancel,
                _ => return None,
            },
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
        }
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
        let deadline_ns = now_ns.saturating_add(c.deadline_ns);
        for _ in 0..if c.hot { 4 } else { 1 } {
            let buy = tick.symbol % 2 == 0;
            let order = Order {
                order_id: self.next_order_id,
                tick_send_ts: tick.send_ts,
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
            if let Some(prev) = self.last_new.filter(|_| self.orders % 4 == 0) {
                let cancel = Order {
                    kind: Kind::Cancel,
                    tick_send_ts: tick.send_ts,
                    deadline_ns,
                    ..prev
                };
                emit(&cancel)?;
                self.orders += 1;
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

/// The scheduler task of an order merged by the router at `now` (`now_ns` being the same moment
/// on CLOCK_REALTIME): its deadline moved onto the monotonic clock, cancels urgent.
pub fn order_task(order: Order, now_ns: u64, now: Instant) -> Task<Order> {
    let left = Duration::from_nanos(order.deadline_ns.saturating_sub(now_ns));
    let task = Task::new(order).with_deadline(now + left);
    if order.kind == Kind::Cancel {
        task.urgent()
    } else {
        task
    }
}

/// The router's send pacing: `rate` tokens per second, holding at most 1 ms of them (and at
/// least one), so a quiet spell never turns into a burst.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// An empty bucket filling at `rate_per_s` from `now`.
    pub fn new(rate_per_s: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: rate_per_s.max(0.0),
            tokens: 0.0,
            last: now,
        }
    }

    /// Adds the tokens earned since the last refill, up to the cap.
    pub fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min((self.rate / 1000.0).max(1.0));
        self.last = now;
    }

    /// Whether a whole token is there to spend.
    pub fn ready(&self) -> bool {
        self.tokens >= 1.0
    }

    /// Spends one token (after a send; without one the bucket goes into debt, repaid first).
    pub fn spend(&mut self) {
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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
        let o = Order {
            order_id: 1 << 50 | 3,
            tick_send_ts: 2,
            deadline_ns: 3,
            price: -4,
            symbol: 5,
            qty: 6,
            buy: true,
            kind: Kind::Cancel,
        };
        assert_eq!(Order::decode(&o.encode()), Some(o));
        assert_eq!(Order::decode(&[0u8; 47]), None);
    }

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
            hot: false,
            deadline_ns: 500,
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
            slot: 0,
            slots: 4,
            hot: true,
            deadline_ns: 0,
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
    fn order_task_maps_the_deadline_and_makes_cancels_urgent() {
        let now = Instant::now();
        let mut o = Order {
            order_id: 1,
            tick_send_ts: 0,
            deadline_ns: 5_000,
            price: 1,
            symbol: 1,
            qty: 1,
            buy: true,
            kind: Kind::New,
        };
        let t = order_task(o, 2_000, now);
        assert_eq!(t.deadline(), Some(now + Duration::from_nanos(3_000)));
        assert!(!t.is_urgent());
        o.kind = Kind::Cancel;
        // Already past its deadline: due now.
        let t = order_task(o, 9_000, now);
        assert_eq!(t.deadline(), Some(now));
        assert!(t.is_urgent());
    }

    #[test]
    fn token_bucket_paces_and_caps_at_one_millisecond() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10_000.0, t0);
        let drain = |b: &mut TokenBucket| {
            let mut n = 0;
            while b.ready() {
                b.spend();
                n += 1;
            }
            n
        };
        assert_eq!(drain(&mut b), 0);
        b.refill(t0 + Duration::from_micros(250));
        assert_eq!(drain(&mut b), 2);
        // A long quiet spell earns at most 1 ms worth (10 tokens).
        b.refill(t0 + Duration::from_secs(5));
        assert_eq!(drain(&mut b), 10);
    }
}
