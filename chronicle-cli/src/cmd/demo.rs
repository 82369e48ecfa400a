//! `chron-cli demo`: the front end of the lab's demo ([`chronicle_lab::demo`]): it installs the
//! signal handlers and hands the demo what belongs to the product: the bus-directory check, the
//! router's config file format and the log format. The roles it starts are this executable's
//! `feed`, `strategy` and `router` subcommands.

use anyhow::Result;
use chronicle_lab::demo::{Host, RouterSettings};

use crate::topology::config::RouterFile;

pub use chronicle_lab::demo::Args;

fn router_config(s: &RouterSettings) -> String {
    RouterFile {
        rate_limit: Some(s.rate_limit),
        metrics_listen: s.metrics_listen.clone(),
        weights: s.weights.clone(),
        ..RouterFile::default()
    }
    .render()
}

/// Runs the demo.
pub fn run(a: Args) -> Result<u8> {
    crate::signals::install_stop_handler()?;
    chronicle_lab::demo::run(
        a,
        &Host {
            stop_requested: crate::signals::stop_requested,
            check_bus_dir: crate::queue::check_bus_dir,
            router_config,
            log_format: crate::log_format().name(),
        },
    )
}
