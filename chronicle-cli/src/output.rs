//! Presentation: aligned tables, units, times, hex, JSON, and colours (only on a terminal).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

pub use chronicle_metrics::text::{bytes, duration_ns, table};

/// Colours for the human output: on only when stdout is a terminal and `NO_COLOR` is unset.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    /// Detects whether stdout is a terminal.
    pub fn detect() -> Style {
        Style {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// Red (errors, dead writers).
    pub fn red(self, s: &str) -> String {
        self.paint("31", s)
    }
    /// Yellow (warnings).
    pub fn yellow(self, s: &str) -> String {
        self.paint("33", s)
    }
    /// Green (healthy).
    pub fn green(self, s: &str) -> String {
        self.paint("32", s)
    }
    /// Bold (labels).
    pub fn bold(self, s: &str) -> String {
        self.paint("1", s)
    }
}

/// `then` relative to `now`: `3.0 s ago` (or `in the future` for clock skew); `never` for 0.
pub fn ago(now_ns: u64, then_ns: u64) -> String {
    if then_ns == 0 {
        "never".to_string()
    } else if then_ns > now_ns {
        format!("{} in the future", duration_ns(then_ns - now_ns))
    } else {
        format!("{} ago", duration_ns(now_ns - then_ns))
    }
}

/// A timestamp (ns since the Unix epoch) as RFC 3339 UTC with nanoseconds; `-` for 0.
pub fn time_ns(ns: u64) -> String {
    if ns == 0 {
        return "-".to_string();
    }
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| format!("{ns} ns"))
}

/// Parses an RFC 3339 time (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.5+02:00`) into ns since
/// the Unix epoch.
pub fn parse_time(s: &str) -> Result<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| anyhow!("{s:?} is not an RFC 3339 time ({e})"))?;
    u64::try_from(t.unix_timestamp_nanos()).map_err(|_| anyhow!("{s:?} is before the Unix epoch"))
}

/// [`parse_time`] for clap.
pub fn parse_time_arg(s: &str) -> std::result::Result<u64, String> {
    parse_time(s).map_err(|e| e.to_string())
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Parses hex digits (whitespace between bytes is allowed).
pub fn parse_hex(s: &str) -> std::result::Result<Vec<u8>, String> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err(format!(
            "odd number of hex digits ({}): each byte takes two",
            digits.len()
        ));
    }
    let val = |c: u8| -> std::result::Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!("{:?} is not a hex digit", char::from(c))),
        }
    };
    digits
        .chunks_exact(2)
        .map(|p| match p {
            [h, l] => Ok(val(*h)? << 4 | val(*l)?),
            _ => Err("odd number of hex digits".to_string()),
        })
        .collect()
}

/// Printable rendering of a payload: printable ASCII as is, `\\`, `\n`, `\r`, `\t`, and `\xNN`
/// for every other byte.
pub fn printable(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &x in b {
        match x {
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(char::from(x)),
            _ => {
                let _ = write!(s, "\\x{x:02x}");
            }
        }
    }
    s
}

/// Writes `v` as one line of JSON to `out`.
pub fn json_line(out: &mut impl Write, v: &impl Serialize) -> Result<()> {
    serde_json::to_writer(&mut *out, v).context("write JSON output")?;
    writeln!(out).context("write output")?;
    Ok(())
}

/// Writes `v` as pretty JSON to stdout.
pub fn print_json(v: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v).context("write JSON output")?;
    writeln!(out).context("write output")?;
    Ok(())
}

/// Splits `s` (trimmed) into its leading decimal number and the unit after it (untrimmed);
/// `what` completes the message "`s` is not ..." when there is no number.
fn number_and_unit<'a>(s: &'a str, what: &str) -> std::result::Result<(u64, &'a str), String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n = num.parse().map_err(|_| format!("{s:?} is not {what}"))?;
    Ok((n, unit))
}

/// Parses a size with an optional binary suffix: `65536`, `64K`, `64KiB`, `16M`, `1G`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let (n, unit) = number_and_unit(s, "a size (examples: 65536, 64K, 16MiB, 1G)")?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown size unit (use K, M, G or T)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a duration: `500ms`, `30s`, `15m`, `2h`, `7d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let (n, unit) = number_and_unit(s, "a duration (examples: 500ms, 30s, 15m, 2h, 7d)")?;
    let d = match unit {
        "ms" => std::time::Duration::from_millis(n),
        "" | "s" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n.saturating_mul(60)),
        "h" => std::time::Duration::from_secs(n.saturating_mul(3600)),
        "d" => std::time::Duration::from_secs(n.saturating_mul(86_400)),
        _ => {
            return Err(format!(
                "{s:?}: unknown duration unit (use ms, s, m, h or d)"
            ));
        }
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let ns = 1_700_000_000_123_456_789;
        let s = time_ns(ns);
        assert_eq!(s, "2023-11-14T22:13:20.123456789Z");
        assert_eq!(parse_time(&s).unwrap(), ns);
        assert_eq!(
            parse_time("2023-11-15T00:13:20.123456789+02:00").unwrap(),
            ns
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn hex_and_printable() {
        assert_eq!(hex(b"\x00\xffA"), "00ff41");
        assert_eq!(parse_hex("00 ff41").unwrap(), b"\x00\xffA");
        assert!(parse_hex("0").is_err());
        assert!(parse_hex("zz").is_err());
        assert_eq!(printable(b"a\\b\n\x01"), "a\\\\b\\n\\x01");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert!(parse_size("12Q").is_err());
        assert_eq!(parse_duration("2h").unwrap().as_secs(), 7200);
        assert!(parse_duration("2x").is_err());
    }
}
