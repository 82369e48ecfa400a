//! chronicle-bridge: carries chronicle queue records between hosts through NATS JetStream.
//!
//! Two directions, each one process (`chron-bridge out` / `chron-bridge in`):
//!
//! - [`outbound`]: a named reader tails a local queue and publishes each record (payload as the
//!   body; origin, sequence number, timestamp and type id as [`headers`]) with the message id
//!   `<host>/<queue>/<seq>`, pipelined, committing the reader only after JetStream acknowledged.
//! - [`inbound`]: a durable pull consumer appends records into a local queue with their original
//!   type id and timestamp, tracking the last imported source sequence number per source in a
//!   [`state`] file kept in step with the queue, and acknowledges only after the append.
//!
//! On the wire delivery is at least once (re-sends are de-duplicated by JetStream within the
//! stream's duplicate window); into the local queue it is exactly once. `DESIGN.md` walks
//! through every crash point.
//!
//! The core crates know nothing of this one: async runtime and network dependencies stay here.

pub mod connect;
pub mod creds;
pub mod envelope;
pub mod error;
pub mod headers;
pub mod inbound;
pub mod outbound;
pub mod state;
pub mod stats;

pub use error::{BridgeError, Result};
