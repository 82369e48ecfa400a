//! Argument parsing, error exit and fate summaries shared by the feed, strategy and router
//! examples. The message formats are
//! `chronicle_lab::topology` (shared with the `chron-cli` roles).
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use chronicle::bus::orders::{FateCode, FateCounts};

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

/// Runs the example's `run`; on an error prints `name: error` and exits with status 1.
pub fn main_with(name: &str, run: impl FnOnce() -> Result<(), Box<dyn std::error::Error>>) {
    if let Err(e) = run() {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}

/// "N routed, N rejected, ...": every fate code with its count.
pub fn fate_summary(fates: &FateCounts) -> String {
    let counts: Vec<String> = FateCode::ALL
        .iter()
        .map(|c| format!("{} {}", fates.get(*c), c.name()))
        .collect();
    counts.join(", ")
}
