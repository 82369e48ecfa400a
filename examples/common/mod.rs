//! Message formats and argument parsing shared by the feed, strategy and router examples.
//!
//! Both messages are fixed-layout, little-endian records (48 bytes), encoded and decoded field by
//! field: the bytes in a queue are untrusted input to every reader.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

/// Type id of a market-data tick in the feed queue.
pub const TICK: u32 = 1;
/// Type id of an order in a strategy's order queue and in the router's output.
pub const ORDER: u32 = 2;

/// A top-of-book update. Prices are in 1e-4 units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    pub symbol: u32,
    pub bid_size: u32,
    pub ask_size: u32,
    pub bid: i64,
    pub ask: i64,
    /// When the exchange stamped it (simulated).
    pub exchange_ts: u64,
    /// When the feed handler published it (CLOCK_REALTIME ns): the start of tick-to-route.
    pub send_ts: u64,
}

/// Size of an encoded tick.
pub const TICK_LEN: usize = 48;

impl Tick {
    pub fn encode(&self) -> [u8; TICK_LEN] {
        let mut b = [0u8; TICK_LEN];
        b[0..4].copy_from_slice(&self.symbol.to_le_bytes());
        b[4..8].copy_from_slice(&self.bid_size.to_le_bytes());
        b[8..12].copy_from_slice(&self.ask_size.to_le_bytes());
        b[16..24].copy_from_slice(&self.bid.to_le_bytes());
        b[24..32].copy_from_slice(&self.ask.to_le_bytes());
        b[32..40].copy_from_slice(&self.exchange_ts.to_le_bytes());
        b[40..48].copy_from_slice(&self.send_ts.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Tick> {
        let b: &[u8; TICK_LEN] = b.get(..TICK_LEN)?.try_into().ok()?;
        Some(Tick {
            symbol: u32::from_le_bytes(b[0..4].try_into().ok()?),
            bid_size: u32::from_le_bytes(b[4..8].try_into().ok()?),
            ask_size: u32::from_le_bytes(b[8..12].try_into().ok()?),
            bid: i64::from_le_bytes(b[16..24].try_into().ok()?),
            ask: i64::from_le_bytes(b[24..32].try_into().ok()?),
            exchange_ts: u64::from_le_bytes(b[32..40].try_into().ok()?),
            send_ts: u64::from_le_bytes(b[40..48].try_into().ok()?),
        })
    }
}

/// New order or cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    New,
    Cancel,
}

/// An order from a strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    pub order_id: u64,
    /// `send_ts` of the tick that caused it.
    pub tick_send_ts: u64,
    /// CLOCK_REALTIME ns after which the order must not be sent.
    pub deadline_ns: u64,
    pub price: i64,
    pub symbol: u32,
    pub qty: u32,
    pub buy: bool,
    pub kind: Kind,
}

/// Size of an encoded order.
pub const ORDER_LEN: usize = 48;

impl Order {
    pub fn encode(&self) -> [u8; ORDER_LEN] {
        let mut b = [0u8; ORDER_LEN];
        b[0..8].copy_from_slice(&self.order_id.to_le_bytes());
        b[8..16].copy_from_slice(&self.tick_send_ts.to_le_bytes());
        b[16..24].copy_from_slice(&self.deadline_ns.to_le_bytes());
        b[24..32].copy_from_slice(&self.price.to_le_bytes());
        b[32..36].copy_from_slice(&self.symbol.to_le_bytes());
        b[36..40].copy_from_slice(&self.qty.to_le_bytes());
        b[40] = u8::from(self.buy);
        b[41] = match self.kind {
            Kind::New => 0,
            Kind::Cancel => 1,
        };
        b
    }

    pub fn decode(b: &[u8]) -> Option<Order> {
        let b: &[u8; ORDER_LEN] = b.get(..ORDER_LEN)?.try_into().ok()?;
        Some(Order {
            order_id: u64::from_le_bytes(b[0..8].try_into().ok()?),
            tick_send_ts: u64::from_le_bytes(b[8..16].try_into().ok()?),
            deadline_ns: u64::from_le_bytes(b[16..24].try_into().ok()?),
            price: i64::from_le_bytes(b[24..32].try_into().ok()?),
            symbol: u32::from_le_bytes(b[32..36].try_into().ok()?),
            qty: u32::from_le_bytes(b[36..40].try_into().ok()?),
            buy: b[40] != 0,
            kind: match b[41] {
                0 => Kind::New,
                1 => Kind::Cancel,
                _ => return None,
            },
        })
    }
}

/// `--key value` and `--flag` arguments.
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    /// Parses `std::env::args()`; exits with a usage message on anything unexpected.
    pub fn parse(usage: &str, flags: &[&str]) -> Args {
        let mut values = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                usage_exit(usage, &format!("unexpected argument {a:?}"));
            };
            if flags.contains(&key) {
                values.insert(key.to_string(), "true".to_string());
                continue;
            }
            match it.next() {
                Some(v) => {
                    values.insert(key.to_string(), v);
                }
                None => usage_exit(usage, &format!("--{key} needs a value")),
            }
        }
        Args { values }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn flag(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    pub fn num(&self, key: &str, default: u64, usage: &str) -> u64 {
        match self.values.get(key) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| usage_exit(usage, &format!("--{key}: {v:?} is not a number"))),
        }
    }

    pub fn secs(&self, key: &str, usage: &str) -> Option<Duration> {
        match self.num(key, 0, usage) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }
}

pub fn usage_exit(usage: &str, why: &str) -> ! {
    eprintln!("{why}\nusage: {usage}");
    std::process::exit(2)
}

/// Small deterministic generator for synthetic prices.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
