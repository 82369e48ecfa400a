//! Plain-text presentation shared by chronicle's binaries and the lab's reports: aligned tables
//! and human units (bytes, durations). One copy, so every report reads alike.

use std::fmt::Write as _;

/// Renders rows as an aligned table: the first row is the header; every column but the first is
/// right-aligned when `numeric[col]` is true. Each line is prefixed with `indent`.
pub fn table(rows: &[Vec<String>], numeric: &[bool], indent: &str) -> String {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; ncols];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(indent);
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let last = i + 1 == row.len();
            if numeric.get(i).copied().unwrap_or(false) {
                let _ = write!(line, "{cell:>w$}");
            } else if last {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Bytes with a binary unit: `512 B`, `64.0 KiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = "KiB";
    for u in UNITS.iter().skip(1) {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// A duration in nanoseconds, in the largest fitting unit: `850 ns`, `12.5 us`, `3.2 ms`,
/// `4.0 s`, `2m 5s`, `3h 0m`, `2d 4h`.
pub fn duration_ns(ns: u64) -> String {
    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;
    if ns < US {
        format!("{ns} ns")
    } else if ns < MS {
        format!("{:.1} us", ns as f64 / US as f64)
    } else if ns < S {
        format!("{:.1} ms", ns as f64 / MS as f64)
    } else if ns < 60 * S {
        format!("{:.1} s", ns as f64 / S as f64)
    } else {
        let secs = ns / S;
        if secs < 3600 {
            format!("{}m {}s", secs / 60, secs % 60)
        } else if secs < 86_400 {
            format!("{}h {}m", secs / 3600, (secs % 3600) / 60)
        } else {
            format!("{}d {}h", secs / 86_400, (secs % 86_400) / 3600)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(65536), "64.0 KiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(duration_ns(850), "850 ns");
        assert_eq!(duration_ns(3_200_000), "3.2 ms");
        assert_eq!(duration_ns(125_000_000_000), "2m 5s");
        assert_eq!(duration_ns(3 * 3_600_000_000_000), "3h 0m");
    }

    #[test]
    fn table_aligns() {
        let rows = vec![
            vec!["NAME".to_string(), "LAG".to_string(), "STATE".to_string()],
            vec!["a".to_string(), "1000".to_string(), "idle".to_string()],
        ];
        assert_eq!(
            table(&rows, &[false, true, false], "  "),
            "  NAME   LAG  STATE\n  a     1000  idle\n"
        );
    }
}
