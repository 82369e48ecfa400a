//! Command-line options.

use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow, bail};
use chronicle_lab::harness::comma_list;

/// `--help` text.
pub const HELP: &str = "\
chronicle-compare: cross-process latency and throughput of chronicle and the alternatives

usage: chronicle-compare [options]
       chronicle-compare tick-to-route --help   (the demo topology, builds side by side)
       chronicle-compare instructions --help    (instruction counts under callgrind, CI gate)

  --out DIR          output directory (default target/compare)
  --rounds N         rounds; every case runs once per round (default 3)
  --count N          measured messages per latency run (default 1000000)
  --warmup N         warm-up messages per run, not measured (default 10000)
  --rate N           paced send rate of latency runs, msgs/s (default 100000)
  --thru-count N     messages per unpaced throughput run; 0 skips them (default 1000000)
  --sizes A,B        payload sizes in bytes, >= 16 (default 64,1024)
  --cores W,R|none   pin writer to core W, reader to core R (default 0,1)
  --capacity N       channel capacity in messages, a power of two (default 4096)
  --batch N          messages per batch in an extra unpaced run per case; 1 skips it
                     (default 16; chronicle uses QueueWriter::batch, the rings publish
                     their cursor once per batch, the others send one by one)
  --only a,b         only these transports (ring, ring-len, chronicle, chronicle-pretouch,
                     iceoryx2, unix, pipe, crossbeam, ring-futex; chronicle-nocrc, a
                     diagnostic, runs only when named here)
  --touch-payload    every reader reads every payload byte before its receive
                     timestamp (default: only the 16-byte stamp and sequence number;
                     chronicle's reader checks its CRC over the record either way)
  --quick            short check of every transport: 1 round, 20000 messages
                     (overrides --rounds, --count, --warmup, --thru-count)
  --help             this text
";

/// Parsed options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Output directory.
    pub out: PathBuf,
    /// Rounds.
    pub rounds: u32,
    /// Latency-run messages.
    pub count: u64,
    /// Warm-up messages.
    pub warmup: u64,
    /// Paced rate of latency runs.
    pub rate: u64,
    /// Throughput-run messages (0 = none).
    pub thru_count: u64,
    /// Payload sizes.
    pub sizes: Vec<usize>,
    /// Writer and reader cores.
    pub cores: Option<(usize, usize)>,
    /// Channel capacity.
    pub capacity: usize,
    /// Transport filter.
    pub only: Option<Vec<String>>,
    /// Readers read every payload byte, not only the 16-byte header.
    pub touch_payload: bool,
    /// Quick mode was asked for.
    pub quick: bool,
    /// Messages per batch in the batched throughput run (1 = no batched run).
    pub batch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            out: PathBuf::from("target/compare"),
            rounds: 3,
            count: 1_000_000,
            warmup: 10_000,
            rate: 100_000,
            thru_count: 1_000_000,
            sizes: vec![64, 1024],
            cores: Some((0, 1)),
            capacity: 4096,
            only: None,
            touch_payload: false,
            quick: false,
            batch: 16,
        }
    }
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
    v.trim()
        .parse()
        .map_err(|_| anyhow!("--{key}: `{v}` is not a valid number"))
}

impl Options {
    /// Parses `args`; `Ok(None)` means `--help` was asked for.
    ///
    /// # Errors
    /// An unknown option, a missing or malformed value, or an out-of-range setting.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Self>> {
        let mut o = Self::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                bail!("unexpected argument `{arg}`");
            };
            let (key, inline) = match flag.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (flag.to_owned(), None),
            };
            match key.as_str() {
                "help" => return Ok(None),
                "quick" => {
                    o.quick = true;
                    continue;
                }
                "touch-payload" => {
                    if inline.is_some() {
                        bail!("--touch-payload takes no value");
                    }
                    o.touch_payload = true;
                    continue;
                }
                _ => {}
            }
            let v = match inline {
                Some(v) => v,
                None => args
                    .next()
                    .with_context(|| format!("--{key} needs a value"))?,
            };
            match key.as_str() {
                "out" => o.out = PathBuf::from(v),
                "rounds" => o.rounds = num(&key, &v)?,
                "count" => o.count = num(&key, &v)?,
                "warmup" => o.warmup = num(&key, &v)?,
                "rate" => o.rate = num(&key, &v)?,
                "thru-count" => o.thru_count = num(&key, &v)?,
                "capacity" => o.capacity = num(&key, &v)?,
                "batch" => o.batch = num(&key, &v)?,
                "sizes" => {
                    o.sizes = comma_list(&v)
                        .iter()
                        .map(|s| num("sizes", s))
                        .collect::<Result<_>>()?;
                }
                "cores" => {
                    o.cores = if v.trim() == "none" {
                        None
                    } else {
                        let (w, r) = v
                            .split_once(',')
                            .with_context(|| format!("--cores: `{v}` is not W,R"))?;
                        Some((num("cores", w)?, num("cores", r)?))
                    };
                }
                "only" => o.only = Some(comma_list(&v)),
                other => bail!("unknown option --{other}"),
            }
        }
        if o.quick {
            o.rounds = 1;
            o.count = 20_000;
            o.warmup = 2_000;
            o.thru_count = 20_000;
        }
        if o.rounds == 0 || o.count == 0 || o.rate == 0 || o.sizes.is_empty() {
            bail!("--rounds, --count, --rate and --sizes must be non-zero");
        }
        if o.batch == 0 || o.batch > o.capacity {
            bail!(
                "--batch: {} is outside 1..=--capacity ({})",
                o.batch,
                o.capacity
            );
        }
        if let Some(bad) = o.sizes.iter().find(|&&s| !(16..=1024).contains(&s)) {
            bail!(
                "--sizes: {bad} is outside 16..=1024 (the crossbeam reference carries at most 1 KiB)"
            );
        }
        Ok(Some(o))
    }

    /// The command line that reproduces these options (for the report).
    #[must_use]
    pub fn command(&self) -> String {
        let mut s = format!(
            "cargo run --release --manifest-path benches/compare/Cargo.toml -- --out {}",
            self.out.display()
        );
        if self.touch_payload {
            s.push_str(" --touch-payload");
        }
        if self.batch != Self::default().batch {
            s.push_str(&format!(" --batch {}", self.batch));
        }
        if self.quick {
            s.push_str(" --quick");
            return s;
        }
        let d = Self::default();
        if self.rounds != d.rounds {
            s.push_str(&format!(" --rounds {}", self.rounds));
        }
        if self.count != d.count {
            s.push_str(&format!(" --count {}", self.count));
        }
        if self.warmup != d.warmup {
            s.push_str(&format!(" --warmup {}", self.warmup));
        }
        if self.rate != d.rate {
            s.push_str(&format!(" --rate {}", self.rate));
        }
        if self.thru_count != d.thru_count {
            s.push_str(&format!(" --thru-count {}", self.thru_count));
        }
        if self.sizes != d.sizes {
            let sizes: Vec<String> = self.sizes.iter().map(ToString::to_string).collect();
            s.push_str(&format!(" --sizes {}", sizes.join(",")));
        }
        if self.cores != d.cores {
            match self.cores {
                Some((w, r)) => s.push_str(&format!(" --cores {w},{r}")),
                None => s.push_str(" --cores none"),
            }
        }
        if self.capacity != d.capacity {
            s.push_str(&format!(" --capacity {}", self.capacity));
        }
        if let Some(only) = &self.only {
            s.push_str(&format!(" --only {}", only.join(",")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>> {
        Options::parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn defaults_and_overrides() {
        let o = parse(&[]).unwrap().unwrap();
        assert_eq!(o.rounds, 3);
        assert_eq!(o.sizes, vec![64, 1024]);
        let o = parse(&["--count=5", "--cores", "none", "--only", "ring,chronicle"])
            .unwrap()
            .unwrap();
        assert_eq!(o.count, 5);
        assert_eq!(o.cores, None);
        assert_eq!(o.only.as_deref().unwrap(), ["ring", "chronicle"]);
        assert!(
            o.command()
                .contains("--count 5 --cores none --only ring,chronicle")
        );
        let o = parse(&["--quick", "--rounds", "7"]).unwrap().unwrap();
        assert_eq!((o.rounds, o.count), (1, 20_000));
        assert!(!o.touch_payload);
        assert!(!o.command().contains("touch"));
        let o = parse(&["--touch-payload", "--quick"]).unwrap().unwrap();
        assert!(o.touch_payload);
        assert!(
            o.command().ends_with(" --touch-payload --quick"),
            "{}",
            o.command()
        );
        assert!(parse(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse(&["--bogus", "1"]).is_err());
        assert!(parse(&["--count"]).is_err());
        assert!(parse(&["--sizes", "8"]).is_err());
        assert!(parse(&["--sizes", "4096"]).is_err());
        assert!(parse(&["--rounds", "0"]).is_err());
        assert!(parse(&["stray"]).is_err());
        assert!(
            parse(&["--touch-payload=1"]).is_err(),
            "a flag takes no value"
        );
    }
}
