//! The feed and strategy roles as the demo starts them: the topology loops
//! ([`topology::feed::run`], [`topology::strategy::run`]) with one JSON status line per second on
//! stdout (and a final one with `"final":true`), which is what the demo's parent reads. The
//! front end that dispatches the role subcommands parses the arguments, handles the signals and
//! calls these.

use serde_json::{Value, json};

use crate::emit;
use crate::topology::feed::{FeedConfig, FeedStatus};
use crate::topology::strategy::{StrategyArgs, StrategyStatus};
use crate::topology::{self, Error, FateCode};

/// Runs the feed until `stop()` turns true, reporting as the demo expects.
///
/// # Errors
/// The feed loop's bus or queue error.
pub fn feed(cfg: &FeedConfig, stop: fn() -> bool) -> Result<FeedStatus, Error> {
    tracing::info!(bus = %cfg.bus.display(), feed = %cfg.name, rate = cfg.rate, "feed started");
    topology::feed::run(cfg, stop, |s: &FeedStatus, fin| {
        if fin {
            tracing::info!(ticks = s.ticks, next_seq = s.next_seq, "feed stopped");
        }
        emit(&json!({"role": "feed", "ticks": s.ticks, "seq": s.next_seq, "final": fin}));
    })
}

fn fates_json(s: &StrategyStatus) -> Value {
    let mut m = serde_json::Map::new();
    for c in FateCode::ALL {
        m.insert(c.name().to_string(), json!(s.fates.get(c)));
    }
    Value::Object(m)
}

/// Runs a strategy until `stop()` turns true, reporting as the demo expects: a start line
/// (`"start":true`, with the first order id, which the demo checks after a restart) and then the
/// status lines. The final line reports `committed` (its order queue's next seq: every order this
/// strategy id ever committed, across restarts) and the fates it read, by code, and the ticks it
/// did not trade on: `held_back` (its back-off window was full), `stale` (older than the tick age
/// limit), `not_connected` (no router had its order queue open).
///
/// # Errors
/// The strategy loop's bus or queue error.
pub fn strategy(args: &StrategyArgs, stop: fn() -> bool) -> Result<StrategyStatus, Error> {
    let id = &args.id;
    let hot = args.trading.hot;
    topology::strategy::run(
        args,
        stop,
        |s| {
            tracing::info!(strategy = %id, hot, next_seq = s.next_seq,
                first_order_id = s.first_order_id, "strategy started");
            emit(
                &json!({"role": "strategy", "id": id, "start": true, "hot": hot,
                "next_seq": s.next_seq, "first_order_id": s.first_order_id,
                "feed_seq": s.feed_seq}),
            );
        },
        |s, fin| {
            if fin {
                tracing::info!(strategy = %id, orders = s.orders, committed = s.committed,
                    "strategy stopped");
            }
            emit(
                &json!({"role": "strategy", "id": id, "orders": s.orders, "ticks": s.ticks,
                "committed": s.committed, "fates": fates_json(s), "held_back": s.held_back,
                "stale": s.stale, "not_connected": s.not_connected, "window": s.window, "final": fin}),
            );
        },
    )
}
