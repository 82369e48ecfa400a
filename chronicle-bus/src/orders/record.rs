//! The three record formats of the order path, each fixed-layout little-endian and decoded
//! field by field (queue bytes are untrusted input):
//!
//! ```text
//! order   (type 2, strategies/<id>/orders, written by the strategy)        48 bytes
//!   0 order_id u64 | 8 origin_ns u64 | 16 deadline_ns u64 | 24 price i64
//!   32 symbol u32 | 36 qty u32 | 40 side u8 (1 buy) | 41 kind u8 (0 new, 1 cancel) | 42..48 zero
//!
//! routed  (type 4, router/out, written by the router)                        64 bytes
//!   0..48 the order exactly as the strategy wrote it
//!   48 source_id u64 (SourceId of the strategy) | 56 order_seq u64 (its seq in the order queue)
//!
//! fate    (type 3, strategies/<id>/fates, written by the router)             48 bytes
//!   0 order_id u64 | 8 kind u8 (the order's kind byte, 0xFF if unreadable) | 9 fate u8
//!   10 reason u8 (rejected: why; else 0) | 11 zero
//!   12 order_epoch u32 (history epoch of the order queue the order was read under; 0 in
//!      records written before epochs existed, which is what they meant)
//!   16 order_seq u64 | 24 out_seq u64 (routed: seq in router/out; else u64::MAX)
//!   32 frontier u64 | 40 scan_from u64  (the router's restart journal, see `orders`)
//! ```
//!
//! `origin_ns` is the CLOCK_REALTIME stamp of the event the order reacts to (a tick's send
//! time): the router measures origin-to-route latency from it. `deadline_ns` is CLOCK_REALTIME;
//! 0 means no deadline.

/// Type id of an order in a strategy's order queue.
pub const ORDER: u32 = 2;
/// Type id of a fate in a strategy's fates queue.
pub const FATE: u32 = 3;
/// Type id of a routed order in `router/out`.
pub const ROUTED: u32 = 4;
/// Size of an encoded order.
pub const ORDER_LEN: usize = 48;
/// Size of an encoded routed order.
pub const ROUTED_LEN: usize = 64;
/// Size of an encoded fate.
pub const FATE_LEN: usize = 48;
/// `out_seq` of a fate that was not routed.
pub const NO_OUT_SEQ: u64 = u64::MAX;
/// Kind byte of a fate whose order was too short to have one.
pub const KIND_UNKNOWN: u8 = 0xFF;

// Field offsets, chained; each format's length is asserted against its last field.
const O_ID: usize = 0;
const O_ORIGIN: usize = O_ID + 8;
const O_DEADLINE: usize = O_ORIGIN + 8;
const O_PRICE: usize = O_DEADLINE + 8;
const O_SYMBOL: usize = O_PRICE + 8;
const O_QTY: usize = O_SYMBOL + 4;
const O_SIDE: usize = O_QTY + 4;
const O_KIND: usize = O_SIDE + 1;
const _: () = assert!(O_KIND == 41 && O_KIND + 1 + 6 == ORDER_LEN);

const R_SOURCE: usize = ORDER_LEN;
const R_SEQ: usize = R_SOURCE + 8;
const _: () = assert!(R_SEQ + 8 == ROUTED_LEN);

const F_ID: usize = 0;
const F_KIND: usize = F_ID + 8;
const F_FATE: usize = F_KIND + 1;
const F_REASON: usize = F_FATE + 1;
const F_EPOCH: usize = 12;
const F_SEQ: usize = F_EPOCH + 4;
const F_OUT: usize = F_SEQ + 8;
const F_FRONTIER: usize = F_OUT + 8;
const F_SCAN: usize = F_FRONTIER + 8;
const _: () =
    assert!(F_FATE == 9 && F_REASON + 2 == F_EPOCH && F_SEQ == 16 && F_SCAN + 8 == FATE_LEN);

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

/// New order or cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A new order.
    New,
    /// Cancels the order with the same id.
    Cancel,
}

impl Kind {
    /// The kind byte.
    pub fn byte(self) -> u8 {
        match self {
            Kind::New => 0,
            Kind::Cancel => 1,
        }
    }

    /// The kind of a kind byte, if it is one.
    pub fn from_byte(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::New),
            1 => Some(Kind::Cancel),
            _ => None,
        }
    }
}

/// An order (or cancel) as a strategy writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// Unique per strategy; a cancel carries the id of the order it cancels.
    pub order_id: u64,
    /// CLOCK_REALTIME ns of the event the order reacts to (start of origin-to-route latency).
    pub origin_ns: u64,
    /// CLOCK_REALTIME ns after which the order must not be sent; 0: no deadline.
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
        self.encode_into(&mut b);
        b
    }

    fn encode_into(&self, b: &mut [u8]) {
        put(b, O_ID, &self.order_id.to_le_bytes());
        put(b, O_ORIGIN, &self.origin_ns.to_le_bytes());
        put(b, O_DEADLINE, &self.deadline_ns.to_le_bytes());
        put(b, O_PRICE, &self.price.to_le_bytes());
        put(b, O_SYMBOL, &self.symbol.to_le_bytes());
        put(b, O_QTY, &self.qty.to_le_bytes());
        put(b, O_SIDE, &[u8::from(self.buy)]);
        put(b, O_KIND, &[self.kind.byte()]);
    }

    /// Decodes an order; `None` if `b` is shorter than 48 bytes or the kind byte is unknown.
    pub fn decode(b: &[u8]) -> Option<Order> {
        if b.len() < ORDER_LEN {
            return None;
        }
        Some(Order {
            order_id: u64_at(b, O_ID)?,
            origin_ns: u64_at(b, O_ORIGIN)?,
            deadline_ns: u64_at(b, O_DEADLINE)?,
            price: u64_at(b, O_PRICE)? as i64,
            symbol: u32_at(b, O_SYMBOL)?,
            qty: u32_at(b, O_QTY)?,
            buy: *b.get(O_SIDE)? != 0,
            kind: Kind::from_byte(*b.get(O_KIND)?)?,
        })
    }

    /// Whether the order may no longer be sent at CLOCK_REALTIME `now_ns`.
    pub fn expired_at(&self, now_ns: u64) -> bool {
        self.deadline_ns != 0 && now_ns > self.deadline_ns
    }

    /// The id and kind byte of a record that may not decode as an order (for its `malformed`
    /// fate): the first 8 bytes (0 if fewer) and byte 41 ([`KIND_UNKNOWN`] if absent).
    pub fn id_and_kind_of(b: &[u8]) -> (u64, u8) {
        (
            u64_at(b, O_ID).unwrap_or(0),
            b.get(O_KIND).copied().unwrap_or(KIND_UNKNOWN),
        )
    }
}

/// An order as the router sends it to `router/out`: the order and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    /// The order as the strategy wrote it.
    pub order: Order,
    /// [`SourceId`](crate::SourceId) of the strategy (`SourceId::of(id)`).
    pub source_id: u64,
    /// Its seq in the strategy's order queue.
    pub order_seq: u64,
}

impl Routed {
    /// The 64-byte encoding.
    pub fn encode(&self) -> [u8; ROUTED_LEN] {
        let mut b = [0u8; ROUTED_LEN];
        self.order.encode_into(&mut b);
        put(&mut b, R_SOURCE, &self.source_id.to_le_bytes());
        put(&mut b, R_SEQ, &self.order_seq.to_le_bytes());
        b
    }

    /// Decodes a routed order; `None` if `b` is shorter than 64 bytes or the order does not
    /// decode.
    pub fn decode(b: &[u8]) -> Option<Routed> {
        if b.len() < ROUTED_LEN {
            return None;
        }
        Some(Routed {
            order: Order::decode(b)?,
            source_id: u64_at(b, R_SOURCE)?,
            order_seq: u64_at(b, R_SEQ)?,
        })
    }
}

/// What became of an order (byte 9 of a fate record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FateCode {
    /// Written to `router/out` (its seq there is in the fate).
    Routed,
    /// Refused on arrival (the reason is in the fate).
    Rejected,
    /// Its deadline passed before it could be sent; never sent.
    Expired,
    /// Pushed out of a full queue by a newer order of the same strategy (evict-oldest policy).
    Evicted,
    /// Taken out of the router's queue by its cancel before it was sent; also the fate of that
    /// cancel (it took effect inside the router, nothing was sent).
    Cancelled,
    /// Not a readable order (too short, unknown kind byte, wrong type id).
    Malformed,
}

impl FateCode {
    /// Every code, in code order.
    pub const ALL: [FateCode; 6] = [
        FateCode::Routed,
        FateCode::Rejected,
        FateCode::Expired,
        FateCode::Evicted,
        FateCode::Cancelled,
        FateCode::Malformed,
    ];

    /// The code byte.
    pub fn byte(self) -> u8 {
        match self {
            FateCode::Routed => 0,
            FateCode::Rejected => 1,
            FateCode::Expired => 2,
            FateCode::Evicted => 3,
            FateCode::Cancelled => 4,
            FateCode::Malformed => 5,
        }
    }

    /// The code of a byte, if it is one.
    pub fn from_byte(b: u8) -> Option<FateCode> {
        FateCode::ALL.into_iter().find(|c| c.byte() == b)
    }

    /// Lower-case name (`routed`, `rejected`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FateCode::Routed => "routed",
            FateCode::Rejected => "rejected",
            FateCode::Expired => "expired",
            FateCode::Evicted => "evicted",
            FateCode::Cancelled => "cancelled",
            FateCode::Malformed => "malformed",
        }
    }
}

/// Why an order was rejected (byte 10 of a rejected fate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    /// Its strategy already had `max_per_tenant` orders queued (for a cancel: its cancel reserve
    /// was full too).
    StrategyFull,
    /// The router held `max_global` orders.
    RouterFull,
    /// The router tracks the most strategies it may.
    TooManyStrategies,
    /// The router was shutting down.
    Closed,
    /// A reason this version does not know.
    Other(u8),
}

impl RejectCode {
    /// The reason byte.
    pub fn byte(self) -> u8 {
        match self {
            RejectCode::StrategyFull => 1,
            RejectCode::RouterFull => 2,
            RejectCode::TooManyStrategies => 3,
            RejectCode::Closed => 4,
            RejectCode::Other(b) => b,
        }
    }

    /// The reason of a byte.
    pub fn from_byte(b: u8) -> RejectCode {
        match b {
            1 => RejectCode::StrategyFull,
            2 => RejectCode::RouterFull,
            3 => RejectCode::TooManyStrategies,
            4 => RejectCode::Closed,
            b => RejectCode::Other(b),
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            RejectCode::StrategyFull => "strategy_full",
            RejectCode::RouterFull => "router_full",
            RejectCode::TooManyStrategies => "too_many_strategies",
            RejectCode::Closed => "closed",
            RejectCode::Other(_) => "other",
        }
    }
}

/// One answer of the router about one order or cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    /// The id of the order or cancel, as the strategy wrote it.
    pub order_id: u64,
    /// The kind byte of the order record ([`KIND_UNKNOWN`] if it had none).
    pub kind: u8,
    /// What became of it.
    pub code: FateCode,
    /// Why it was rejected (`Some` only for [`FateCode::Rejected`]).
    pub reason: Option<RejectCode>,
    /// Its seq in the strategy's order queue.
    pub order_seq: u64,
    /// Its seq in `router/out` (`Some` only for [`FateCode::Routed`]).
    pub out_seq: Option<u64>,
    /// Router journal: every order of this strategy below this seq had its fate when this
    /// record was written.
    pub frontier: u64,
    /// Router journal: the seq of this fates queue from which every fate of an order at or
    /// above `frontier` can be found.
    pub scan_from: u64,
    /// Router journal: the history epoch of the strategy's order queue (DESIGN.md section 8)
    /// under which the order at `order_seq` was read. After a power cut rewrote that queue's
    /// history, a fate of an older epoch at or past the rewrite point answers an order that is
    /// gone: the router's journal ignores it, the audit reports it as voided.
    pub order_epoch: u32,
}

impl Fate {
    /// The order's kind, if its kind byte is one.
    pub fn order_kind(&self) -> Option<Kind> {
        Kind::from_byte(self.kind)
    }

    /// The 48-byte encoding.
    pub fn encode(&self) -> [u8; FATE_LEN] {
        let mut b = [0u8; FATE_LEN];
        put(&mut b, F_ID, &self.order_id.to_le_bytes());
        put(&mut b, F_KIND, &[self.kind]);
        put(&mut b, F_FATE, &[self.code.byte()]);
        put(&mut b, F_REASON, &[self.reason.map_or(0, RejectCode::byte)]);
        put(&mut b, F_SEQ, &self.order_seq.to_le_bytes());
        put(
            &mut b,
            F_OUT,
            &self.out_seq.unwrap_or(NO_OUT_SEQ).to_le_bytes(),
        );
        put(&mut b, F_FRONTIER, &self.frontier.to_le_bytes());
        put(&mut b, F_SCAN, &self.scan_from.to_le_bytes());
        put(&mut b, F_EPOCH, &self.order_epoch.to_le_bytes());
        b
    }

    /// Decodes a fate; `None` if `b` is shorter than 48 bytes or the fate byte is unknown.
    pub fn decode(b: &[u8]) -> Option<Fate> {
        if b.len() < FATE_LEN {
            return None;
        }
        let code = FateCode::from_byte(*b.get(F_FATE)?)?;
        let reason = *b.get(F_REASON)?;
        let out = u64_at(b, F_OUT)?;
        Some(Fate {
            order_id: u64_at(b, F_ID)?,
            kind: *b.get(F_KIND)?,
            code,
            reason: (code == FateCode::Rejected).then(|| RejectCode::from_byte(reason)),
            order_seq: u64_at(b, F_SEQ)?,
            out_seq: (code == FateCode::Routed && out != NO_OUT_SEQ).then_some(out),
            frontier: u64_at(b, F_FRONTIER)?,
            scan_from: u64_at(b, F_SCAN)?,
            order_epoch: u32_at(b, F_EPOCH)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(kind: Kind) -> Order {
        Order {
            order_id: 1 << 50 | 3,
            origin_ns: 2,
            deadline_ns: 3,
            price: -4,
            symbol: 5,
            qty: 6,
            buy: true,
            kind,
        }
    }

    #[test]
    fn orders_and_routed_orders_round_trip() {
        let o = order(Kind::Cancel);
        let b = o.encode();
        assert_eq!(Order::decode(&b), Some(o));
        assert_eq!(b[41], 1);
        assert_eq!(Order::decode(&b[..47]), None);
        let mut bad = b;
        bad[41] = 7;
        assert_eq!(Order::decode(&bad), None);
        assert_eq!(Order::id_and_kind_of(&bad), (o.order_id, 7));
        assert_eq!(Order::id_and_kind_of(&[1, 2]), (0, KIND_UNKNOWN));
        let r = Routed {
            order: order(Kind::New),
            source_id: 99,
            order_seq: 1234,
        };
        let rb = r.encode();
        assert_eq!(&rb[..48], &r.order.encode()[..]);
        assert_eq!(Routed::decode(&rb), Some(r));
        assert_eq!(Routed::decode(&rb[..63]), None);
    }

    #[test]
    fn fate_bytes_are_the_documented_ones() {
        let f = Fate {
            order_id: 0x0102_0304_0506_0708,
            kind: 1,
            code: FateCode::Rejected,
            reason: Some(RejectCode::StrategyFull),
            order_seq: 77,
            out_seq: None,
            frontier: 70,
            scan_from: 5,
            order_epoch: 0x0A0B_0C0D,
        };
        let b = f.encode();
        assert_eq!(b[11], 0);
        assert_eq!(&b[12..16], &0x0A0B_0C0Du32.to_le_bytes());
        assert_eq!(&b[0..8], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!((b[8], b[9], b[10]), (1, 1, 1));
        assert_eq!(&b[24..32], &u64::MAX.to_le_bytes());
        assert_eq!(Fate::decode(&b), Some(f));
        let routed = Fate {
            code: FateCode::Routed,
            reason: None,
            out_seq: Some(5),
            ..f
        };
        assert_eq!(Fate::decode(&routed.encode()), Some(routed));
        for c in FateCode::ALL {
            assert_eq!(FateCode::from_byte(c.byte()), Some(c));
        }
        assert_eq!(
            FateCode::ALL.map(FateCode::byte),
            [0, 1, 2, 3, 4, 5],
            "fate codes are fixed by the format"
        );
        let mut unknown = b;
        unknown[9] = 6;
        assert_eq!(Fate::decode(&unknown), None);
        // A record written before epochs existed (bytes 11..16 zero) reads as epoch 0.
        let mut old = b;
        old[12..16].fill(0);
        assert_eq!(Fate::decode(&old).map(|f| f.order_epoch), Some(0));
    }

    #[test]
    fn deadline_zero_never_expires() {
        let mut o = order(Kind::New);
        o.deadline_ns = 0;
        assert!(!o.expired_at(u64::MAX));
        o.deadline_ns = 10;
        assert!(!o.expired_at(10));
        assert!(o.expired_at(11));
    }
}
