//! Message formats of the demo trading topology (`examples/{feed,strategy,router}.rs` and the
//! `chron-cli feed|strategy|router|demo` roles): fixed-layout little-endian 48-byte records,
//! decoded field by field because queue bytes are untrusted input.

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
}
