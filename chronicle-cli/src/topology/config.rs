//! The router's topology config: a TOML file (`chron-cli router --config FILE`).
//!
//! ```toml
//! [router]
//! rate_limit = 5000        # outbound orders per second, 0: unlimited          (reloadable)
//! hold_us = 500            # live merge: longest hold behind a silent strategy
//! drain_timeout_ms = 10000 # on SIGTERM: longest drain before closing
//!
//! [scheduler]
//! max_per_tenant = 1024    # orders a strategy may have queued
//! max_global = 65536       # orders queued over every strategy
//! cancel_reserve = 256     # cancels a strategy may have queued beyond that
//! backpressure = "reject"  # or "evict_oldest"
//!
//! [metrics]
//! listen = "127.0.0.1:9465"
//!
//! [strategies.s1]
//! weight = 2               # DRR weight; unlisted strategies weigh 1       (reloadable)
//! ```
//!
//! Every key is optional (a missing one keeps the router's default). Unknown keys are refused,
//! and every error names the file and the key (`router.toml: key `strategies.s1.weight`:
//! expected a positive integer, found 0`). Weights and the rate limit are reloaded on SIGHUP
//! (or when the file changes); the other keys take effect at the next start. The walking of the
//! table, the typed getters and the messages are `chronicle_metrics::config`, shared with
//! `chron-bridge --config`.

use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use chronicle_bus::orders::RouterConfig;
use chronicle_bus::sched::Backpressure;
use chronicle_metrics::config::{ConfigError, Doc, toml_key};
use toml::Value;

/// A parsed, validated router config. `None`: the key is absent (the default stays).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouterFile {
    pub rate_limit: Option<u64>,
    pub hold_us: Option<u64>,
    pub drain_timeout_ms: Option<u64>,
    pub max_per_tenant: Option<usize>,
    pub max_global: Option<usize>,
    pub cancel_reserve: Option<usize>,
    pub backpressure: Option<Backpressure>,
    pub metrics_listen: Option<String>,
    /// Strategy weights, in the file's order.
    pub weights: Vec<(String, NonZeroU32)>,
}

/// The drain limit when the file does not set one.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

impl RouterFile {
    /// Applies the file to `cfg` (the keys it sets; the others keep `cfg`'s values).
    pub fn apply(&self, cfg: &mut RouterConfig) {
        cfg.weights.clone_from(&self.weights);
        if let Some(v) = self.rate_limit {
            cfg.rate_limit = v;
        }
        if let Some(v) = self.hold_us {
            cfg.max_hold = Duration::from_micros(v);
        }
        if let Some(v) = self.max_per_tenant {
            cfg.max_per_tenant = v;
        }
        if let Some(v) = self.max_global {
            cfg.max_global = v;
        }
        if let Some(v) = self.cancel_reserve {
            cfg.cancel_reserve = v;
        }
        if let Some(v) = self.backpressure {
            cfg.backpressure = v;
        }
    }

    /// The drain limit on stop.
    pub fn drain_limit(&self) -> Duration {
        self.drain_timeout_ms
            .map_or(DEFAULT_DRAIN, Duration::from_millis)
    }

    /// The keys that differ between `self` and `new` and are read only at start (a reload
    /// applies weights and the rate limit only), by name.
    pub fn restart_only_changes(&self, new: &RouterFile) -> Vec<&'static str> {
        [
            ("router.hold_us", self.hold_us != new.hold_us),
            (
                "router.drain_timeout_ms",
                self.drain_timeout_ms != new.drain_timeout_ms,
            ),
            (
                "scheduler.max_per_tenant",
                self.max_per_tenant != new.max_per_tenant,
            ),
            ("scheduler.max_global", self.max_global != new.max_global),
            (
                "scheduler.cancel_reserve",
                self.cancel_reserve != new.cancel_reserve,
            ),
            (
                "scheduler.backpressure",
                self.backpressure != new.backpressure,
            ),
            ("metrics.listen", self.metrics_listen != new.metrics_listen),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }

    /// The file as TOML with comments, as `demo` writes it ([`parse`] reads it back equal).
    pub fn render(&self) -> String {
        let mut s = String::from(
            "# chronicle router config: `chron-cli router --bus BUS --config THIS_FILE`.\n\
             # Weights and the rate limit are reloaded on SIGHUP (or when this file changes);\n\
             # the other keys take effect at the next start. Unknown keys are refused.\n\n[router]\n",
        );
        fn shown(v: Option<impl ToString>) -> Option<String> {
            v.map(|v| v.to_string())
        }
        let router = [
            (
                "rate_limit",
                shown(self.rate_limit),
                "outbound orders per second, 0: unlimited (reloadable)",
            ),
            (
                "hold_us",
                shown(self.hold_us),
                "live merge: longest hold behind a silent strategy, microseconds",
            ),
            (
                "drain_timeout_ms",
                shown(self.drain_timeout_ms),
                "on SIGTERM: longest drain before closing, milliseconds",
            ),
        ];
        let scheduler = [
            (
                "max_per_tenant",
                shown(self.max_per_tenant),
                "orders one strategy may have queued",
            ),
            (
                "max_global",
                shown(self.max_global),
                "orders queued over every strategy",
            ),
            (
                "cancel_reserve",
                shown(self.cancel_reserve),
                "cancels a strategy may have queued beyond max_per_tenant",
            ),
            (
                "backpressure",
                self.backpressure
                    .map(|b| format!("{:?}", backpressure_name(b))),
                "a full strategy: \"reject\" the new order or \"evict_oldest\"",
            ),
        ];
        let keys = |s: &mut String, keys: &[(&str, Option<String>, &str)]| {
            for (k, v, comment) in keys {
                if let Some(v) = v {
                    let _ = writeln!(s, "{k} = {v}  # {comment}");
                }
            }
        };
        keys(&mut s, &router);
        if scheduler.iter().any(|(_, v, _)| v.is_some()) {
            s.push_str("\n[scheduler]\n");
        }
        keys(&mut s, &scheduler);
        if let Some(l) = &self.metrics_listen {
            let _ = write!(s, "\n[metrics]\nlisten = {}\n", Value::from(l.as_str()));
        }
        for (id, w) in &self.weights {
            let _ = write!(
                s,
                "\n[strategies.{}]\nweight = {w}  # DRR weight (reloadable); unlisted strategies weigh 1\n",
                toml_key(id)
            );
        }
        s
    }
}

fn backpressure_name(b: Backpressure) -> &'static str {
    match b {
        Backpressure::EvictOldest => "evict_oldest",
        _ => "reject",
    }
}

/// Reads and validates a config file. The error is one sentence naming the file and the key.
pub fn load(path: &Path) -> anyhow::Result<RouterFile> {
    let doc = Doc::read(path, "router config")?;
    Ok(from_doc(&doc)?)
}

/// Parses and validates a config's text; `name` goes into the messages (the tests' entry).
#[cfg(test)]
pub fn parse(name: &str, text: &str) -> Result<RouterFile, String> {
    Doc::parse(name, text)
        .and_then(|doc| from_doc(&doc))
        .map_err(|e| e.to_string())
}

/// The router's keys, walked with the shared checks of [`chronicle_metrics::config`].
fn from_doc(doc: &Doc) -> Result<RouterFile, ConfigError> {
    let mut f = RouterFile::default();
    for sec in doc.root().entries() {
        match sec.name() {
            "router" => {
                for k in sec.table()?.entries() {
                    match k.name() {
                        "rate_limit" => f.rate_limit = Some(k.uint(0)?),
                        "hold_us" => f.hold_us = Some(k.uint(0)?),
                        "drain_timeout_ms" => f.drain_timeout_ms = Some(k.uint(1)?),
                        _ => return Err(k.unknown("rate_limit, hold_us, drain_timeout_ms")),
                    }
                }
            }
            "scheduler" => {
                for k in sec.table()?.entries() {
                    match k.name() {
                        "max_per_tenant" => f.max_per_tenant = Some(k.usize(1)?),
                        "max_global" => f.max_global = Some(k.usize(1)?),
                        "cancel_reserve" => f.cancel_reserve = Some(k.usize(0)?),
                        "backpressure" => {
                            f.backpressure = Some(match k.choice(&["reject", "evict_oldest"])? {
                                "evict_oldest" => Backpressure::EvictOldest,
                                _ => Backpressure::Reject,
                            });
                        }
                        _ => {
                            return Err(k.unknown(
                                "max_per_tenant, max_global, cancel_reserve, backpressure",
                            ));
                        }
                    }
                }
            }
            "metrics" => {
                for k in sec.table()?.entries() {
                    match k.name() {
                        "listen" => f.metrics_listen = Some(k.address()?),
                        _ => return Err(k.unknown("listen")),
                    }
                }
            }
            "strategies" => {
                for strat in sec.table()?.entries() {
                    let id = strat.name();
                    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
                        return Err(
                            strat.error("not a strategy id (a directory name under strategies/)")
                        );
                    }
                    for k in strat.table_named("strategy")?.entries() {
                        match k.name() {
                            "weight" => {
                                let w = k
                                    .uint(1)
                                    .ok()
                                    .and_then(|n| u32::try_from(n).ok())
                                    .and_then(NonZeroU32::new)
                                    .ok_or_else(|| {
                                        k.expected(&format!(
                                            "a positive integer (1 to {})",
                                            u32::MAX
                                        ))
                                    })?;
                                f.weights.push((id.to_string(), w));
                            }
                            _ => return Err(k.unknown("weight")),
                        }
                    }
                }
            }
            _ => {
                return Err(sec.unknown("the sections router, scheduler, metrics, strategies"));
            }
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn reads_every_key() {
        let f = parse(
            "r.toml",
            r#"
            [router]
            rate_limit = 0
            hold_us = 250
            drain_timeout_ms = 3000
            [scheduler]
            max_per_tenant = 8
            max_global = 100
            cancel_reserve = 0
            backpressure = "evict_oldest"
            [metrics]
            listen = "127.0.0.1:0"
            [strategies.alpha]
            weight = 3
            [strategies."odd id"]
            weight = 1
            "#,
        )
        .unwrap();
        assert_eq!(f.rate_limit, Some(0));
        assert_eq!(f.hold_us, Some(250));
        assert_eq!(f.drain_limit(), Duration::from_secs(3));
        assert_eq!(f.max_per_tenant, Some(8));
        assert_eq!(f.max_global, Some(100));
        assert_eq!(f.cancel_reserve, Some(0));
        assert_eq!(f.backpressure, Some(Backpressure::EvictOldest));
        assert_eq!(f.metrics_listen.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(
            f.weights,
            vec![("alpha".to_string(), nz(3)), ("odd id".to_string(), nz(1))]
        );
        // What demo writes reads back the same.
        assert_eq!(parse("again", &f.render()).unwrap(), f);
        let mut cfg = RouterConfig::default();
        f.apply(&mut cfg);
        assert_eq!(cfg.rate_limit, 0);
        assert_eq!(cfg.max_hold, Duration::from_micros(250));
        assert_eq!(cfg.max_per_tenant, 8);
        assert_eq!(cfg.backpressure, Backpressure::EvictOldest);
    }

    #[test]
    fn an_empty_file_keeps_the_defaults() {
        let f = parse("r.toml", "").unwrap();
        assert_eq!(f, RouterFile::default());
        assert_eq!(f.drain_limit(), DEFAULT_DRAIN);
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let cases = [
            (
                "[strategies.alpha]\nweight = 0",
                "router.toml: key `strategies.alpha.weight`: expected a positive integer (1 to 4294967295), found 0",
            ),
            (
                "[strategies.alpha]\nweight = \"2\"",
                "router.toml: key `strategies.alpha.weight`: expected a positive integer (1 to 4294967295), found \"2\" (string)",
            ),
            (
                "[strategies.alpha]\nweight = 5000000000",
                "router.toml: key `strategies.alpha.weight`: expected a positive integer",
            ),
            (
                "[strategies.alpha]\nwieght = 2",
                "router.toml: key `strategies.alpha.wieght`: unknown key (known here: weight)",
            ),
            (
                "[router]\nrate_limt = 5",
                "router.toml: key `router.rate_limt`: unknown key",
            ),
            (
                "[router]\nrate_limit = -1",
                "router.toml: key `router.rate_limit`: expected a non-negative integer, found -1",
            ),
            (
                "[router]\nrate_limit = 1.5",
                "router.toml: key `router.rate_limit`: expected a non-negative integer, found 1.5 (float)",
            ),
            (
                "[scheduler]\nbackpressure = \"drop\"",
                "router.toml: key `scheduler.backpressure`: expected \"reject\" or \"evict_oldest\", found \"drop\" (string)",
            ),
            (
                "[scheduler]\nmax_per_tenant = 0",
                "router.toml: key `scheduler.max_per_tenant`: expected a positive integer, found 0",
            ),
            (
                "[metrics]\nlisten = 9465",
                "router.toml: key `metrics.listen`: expected an address \"HOST:PORT\", found 9465 (integer)",
            ),
            ("router = 5", "router.toml: key `router`: expected a table"),
            (
                "weights = \"a=1\"",
                "router.toml: key `weights`: unknown key (known here: the sections",
            ),
            ("[router\n", "router.toml: not valid TOML: "),
        ];
        for (text, want) in cases {
            let e = parse("router.toml", text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}:\n got  {e}\n want {want}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn restart_only_keys_are_named() {
        let a = parse("a", "[router]\nrate_limit = 5\nhold_us = 1").unwrap();
        let b = parse(
            "b",
            "[router]\nrate_limit = 6\nhold_us = 2\n[strategies.x]\nweight = 2",
        )
        .unwrap();
        assert_eq!(a.restart_only_changes(&b), vec!["router.hold_us"]);
        assert!(a.restart_only_changes(&a).is_empty());
    }
}
