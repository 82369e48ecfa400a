//! The log setup of chronicle's binaries (`chron-cli`, `chron-bridge`), written once here.
//!
//! Logs are `tracing` events written to stderr, one line each: human-readable by default
//! (`2026-12-05T07:00:00.123456Z  INFO chronicle_cli::router: strategy attached id="s1" weight=1`)
//! or one JSON object per line with [`LogFormat::Json`]
//! (`{"timestamp":"…","level":"INFO","fields":{"message":"strategy attached","id":"s1","weight":1},"target":"chronicle_cli::router"}`).
//! Which events are written is chosen by the environment variable [`LOG_ENV`]
//! (`CHRONICLE_LOG`), in `RUST_LOG` syntax: a level (`error`, `warn`, `info`, `debug`,
//! `trace`, `off`), or `target=level` pairs separated by commas (`warn,chronicle_bridge=debug`).
//! Unset or empty, it is [`DEFAULT_FILTER`] (`info`, and `warn` for the NATS client library).
//!
//! The binaries log lifecycle only (start, stop, attach, detach, reconnects, reloads, errors, a
//! periodic status): never one event per record.

use std::fmt;
use std::io::IsTerminal as _;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// The environment variable holding the log filter.
pub const LOG_ENV: &str = "CHRONICLE_LOG";

/// The environment variable the binaries read `--log-format` from when the flag is absent.
pub const LOG_FORMAT_ENV: &str = "CHRONICLE_LOG_FORMAT";

/// The filter when [`LOG_ENV`] is unset or empty: `info`, but warnings only from the NATS
/// client library (its own connection events repeat the bridge's).
pub const DEFAULT_FILTER: &str = "info,async_nats=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// Time, level, target, message and `key=value` fields; colours on a terminal only.
    #[default]
    Human,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `target`.
    Json,
}

impl LogFormat {
    /// The name taken by `--log-format`.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format: use human or json")),
        }
    }
}

/// The binaries' `--log-format FORMAT` flag (or [`LOG_FORMAT_ENV`]), global to every
/// subcommand: a binary's top-level command takes it with `#[command(flatten)]` and gives its
/// help with `mut_arg("log_format", |a| a.help(format_help(FILTER)))`.
#[cfg(feature = "clap")]
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct LogArgs {
    #[arg(
        long,
        global = true,
        value_name = "FORMAT",
        env = LOG_FORMAT_ENV,
        default_value_t = LogFormat::Human
    )]
    pub log_format: LogFormat,
}

/// The help of `--log-format`, `filter` an example [`LOG_ENV`] filter that names the binary's
/// own target.
#[cfg(feature = "clap")]
pub fn format_help(filter: &str) -> String {
    format!(
        "Log lines on stderr: `human` or `json` (one object per line). Which ones: the \
         {LOG_ENV} filter, e.g. `info` (the default), `warn`, `{filter}`"
    )
}

/// What can go wrong setting logs up.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// [`LOG_ENV`] holds something that is not a filter.
    Filter {
        /// The variable's value.
        value: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A global subscriber was set already (a second call in one process).
    AlreadySet,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Filter { value, reason } => write!(
                f,
                "{LOG_ENV}={value:?} is not a log filter ({reason}): use a level (error, warn, \
                 info, debug, trace, off) or target=level pairs, e.g. warn,chronicle_bridge=debug"
            ),
            Error::AlreadySet => f.write_str("logging was set up twice in one process"),
        }
    }
}

impl std::error::Error for Error {}

/// The filter of `value` ([`LOG_ENV`]'s content; `None` or empty: [`DEFAULT_FILTER`]).
pub fn filter(value: Option<&str>) -> Result<EnvFilter, Error> {
    let v = value.map(str::trim).filter(|v| !v.is_empty());
    let text = v.unwrap_or(DEFAULT_FILTER);
    EnvFilter::builder().parse(text).map_err(|e| Error::Filter {
        value: text.to_string(),
        reason: e.to_string(),
    })
}

/// Installs the process's log subscriber: `format` on stderr, filtered by [`LOG_ENV`].
/// Call once, first thing after the command line is parsed.
pub fn init(format: LogFormat) -> Result<(), Error> {
    let value = std::env::var(LOG_ENV).ok();
    let filter = filter(value.as_deref())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let set = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    set.map_err(|_| Error::AlreadySet)
}

/// An error and its causes (`messages`, outermost first) as one line, skipping a cause that
/// the text before it already quotes (errors that include their source's message), so the
/// binaries' final error is one sentence without repeats.
pub fn one_line(messages: impl IntoIterator<Item = String>) -> String {
    let mut msg = String::new();
    for text in messages {
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_skips_quoted_causes() {
        let m = |v: &[&str]| one_line(v.iter().map(|s| s.to_string()));
        assert_eq!(m(&["open q: gone (hint)", "gone"]), "open q: gone (hint)");
        assert_eq!(
            m(&["cannot start", "bind: taken"]),
            "cannot start: bind: taken"
        );
        assert_eq!(m(&[]), "");
    }

    #[test]
    fn formats_parse_and_print() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("human".parse::<LogFormat>(), Ok(LogFormat::Human));
        assert_eq!(LogFormat::Json.to_string(), "json");
        let e = "xml".parse::<LogFormat>().unwrap_err();
        assert!(e.contains("\"xml\"") && e.contains("human or json"), "{e}");
    }

    #[test]
    fn filter_defaults_to_info_and_names_a_bad_value() {
        assert_eq!(filter(None).unwrap().to_string(), "async_nats=warn,info");
        assert_eq!(
            filter(Some("  ")).unwrap().to_string(),
            "async_nats=warn,info"
        );
        assert_eq!(
            filter(Some("warn,chronicle_bridge=debug"))
                .unwrap()
                .to_string(),
            "chronicle_bridge=debug,warn"
        );
        let e = filter(Some("chronicle=loud")).unwrap_err().to_string();
        assert!(
            e.starts_with("CHRONICLE_LOG=\"chronicle=loud\" is not a log filter"),
            "{e}"
        );
    }
}
