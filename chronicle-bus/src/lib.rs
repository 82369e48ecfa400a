//! The bus: many chronicle queues under one directory, found at run time and merged, and the
//! order-flow scheduler that fairly interleaves the strategies' orders.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod sched;
