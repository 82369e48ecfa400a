//! The subcommands.

pub mod append;
pub mod audit;
pub mod bench;
pub mod demo;
pub mod doctor;
pub mod inspect;
pub mod metrics;
pub mod tail;
