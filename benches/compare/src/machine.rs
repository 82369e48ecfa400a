//! What the numbers were measured on: CPU, cores, kernel, compiler, time and load.

use std::time::{SystemTime, UNIX_EPOCH};

/// A snapshot of the machine, taken before and after the runs.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// The compiler that built this binary.
    pub rustc: &'static str,
    /// UTC time, `YYYY-MM-DD HH:MM`.
    pub utc: String,
    /// 1-minute load average.
    pub loadavg: String,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // day is in 1..=31 and month in 1..=12 by construction.
    (year, month as u32, day as u32)
}

fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = i64::try_from(secs).unwrap_or(0);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        sod / 3600,
        (sod % 3600) / 60
    )
}

impl Machine {
    /// Reads everything now.
    #[must_use]
    pub fn probe() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        Self {
            cpu,
            cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".to_owned()),
            rustc: env!("COMPARE_RUSTC_VERSION"),
            utc: utc_now(),
            loadavg: read_trimmed("/proc/loadavg")
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
                .unwrap_or_else(|| "?".to_owned()),
        }
    }

    /// A one-line summary for the console.
    #[must_use]
    pub fn one_line(&self) -> String {
        format!(
            "{} x {}, kernel {}, {}, {}, load {}",
            self.cpus, self.cpu, self.kernel, self.rustc, self.utc, self.loadavg
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(20_512), (2026, 2, 28));
        assert_eq!(civil(-1), (1969, 12, 31));
    }
}
