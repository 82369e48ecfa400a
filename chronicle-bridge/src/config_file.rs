//! `chron-bridge out|in --config FILE`: every setting of the command line, from a TOML file.
//!
//! ```toml
//! [nats]
//! url = "nats://10.0.0.1:4222,nats://10.0.0.2:4222"   # or an array of URLs
//! creds = "/etc/chronicle/bridge.creds"
//! reconnect_max_ms = 2000
//! timeout_ms = 5000
//!
//! [tls]
//! ca = "/etc/chronicle/ca.pem"
//! cert = "/etc/chronicle/client.pem"
//! key = "/etc/chronicle/client.key"
//! required = true
//!
//! [stream]
//! name = "CHRON"
//! subject = "chron.hostA.feed"
//! create = true                 # create the stream if missing; then:
//! retention = "limits"          # "interest", "workqueue"
//! replicas = 1
//! storage = "file"              # "memory"
//! duplicate_window = 120        # seconds
//! max_age = 0                   # seconds, 0: unlimited
//! max_bytes = -1                # -1: unlimited
//!
//! [out]                         # only in the file of `chron-bridge out`
//! queue = "/dev/shm/bus/queues/md"
//! reader = "bridge-out"
//! from = "earliest"             # "latest", or a sequence number
//! host_id = "hostA"
//! source_name = "md"
//! window = 256
//! batch = 64
//! batch_bytes = 262144
//! linger_us = 100
//! compress = "none"             # "lz4"
//! exit_at_end = false
//!
//! [in]                          # only in the file of `chron-bridge in`
//! consumer = "hostB"
//! queue = "/dev/shm/bus/queues/md-from-hostA"
//! state = "/dev/shm/bus/queues/md-from-hostA.bridge-in.state"
//! batch = 256
//! sync_batches = false
//! ack_wait = 5                  # seconds
//! max_ack_pending = 20000
//! gap_timeout = 0               # seconds, 0: never skip
//! segment_size = 67108864
//!
//! [metrics]
//! listen = "127.0.0.1:9466"
//!
//! [stats]
//! interval = 5                  # seconds, 0: none
//! json = false
//!
//! [log]
//! format = "json"               # "human"
//! ```
//!
//! Each key is the flag of the same name (`--batch-bytes` is `out.batch_bytes`); [`file_key`]
//! maps one to the other. A missing key keeps the flag's default (or its environment variable:
//! `NATS_URL`, `NATS_CA`, ...); a key the bridge does not know is refused, and every error names
//! the file and the key. The table walking and the messages are `chronicle_metrics::config`,
//! shared with `chron-cli router --config`. The file is read once, at start: the bridge has no
//! reload.

use std::path::Path;

use chronicle_metrics::config::{ConfigError, Doc, Key, Section, Value};
use chronicle_metrics::logs::LogFormat;

use crate::{Cli, Cmd, Common, Compress, InArgs, OutArgs, Retention, Storage, StreamArgs};

/// Reads `path` and sets the fields of `cli` its keys name.
pub fn apply_file(path: &Path, cli: &mut Cli) -> Result<(), ConfigError> {
    let doc = Doc::read(path, "bridge config")?;
    apply(&doc, cli)
}

/// Sets the fields of `cli` the file's keys name, then checks what the command needs.
pub fn apply(doc: &Doc, cli: &mut Cli) -> Result<(), ConfigError> {
    match &mut cli.cmd {
        Cmd::Out(a) => apply_out(doc, a, &mut cli.log.log_format),
        Cmd::In(a) => apply_in(doc, a, &mut cli.log.log_format),
    }
}

/// The fields the shared sections (nats, tls, stream, metrics, stats, log) set.
struct Shared<'a> {
    c: &'a mut Common,
    s: &'a mut StreamArgs,
    stream: &'a mut Option<String>,
    subject: &'a mut Option<String>,
    log: &'a mut LogFormat,
}

/// Walks the file's sections: each key of section `own` ("out" or "in") goes to `own_key`,
/// the shared sections to `sh`; section `other` (the other bridge's) is refused.
fn walk(
    doc: &Doc,
    (own, other): (&str, &str),
    sh: &mut Shared<'_>,
    mut own_key: impl FnMut(&Key<'_>) -> Result<(), ConfigError>,
) -> Result<(), ConfigError> {
    for sec in doc.root().entries() {
        if sec.name() == own {
            for k in sec.table()?.entries() {
                own_key(&k)?;
            }
        } else if sec.name() == other {
            return Err(sec.error(format!(
                "the section of `chron-bridge {other}`, and this is `chron-bridge {own}` \
                 (give each bridge its own file)"
            )));
        } else {
            shared(&sec, sh, own)?;
        }
    }
    Ok(())
}

fn apply_out(doc: &Doc, a: &mut OutArgs, log: &mut LogFormat) -> Result<(), ConfigError> {
    let mut sh = Shared {
        c: &mut a.common,
        s: &mut a.stream_args,
        stream: &mut a.stream,
        subject: &mut a.subject,
        log,
    };
    walk(doc, ("out", "in"), &mut sh, |k| {
        match k.name() {
            "queue" => a.queue = Some(k.path_buf()?),
            "reader" => a.reader = k.string()?,
            "from" => a.from = from(k)?,
            "host_id" => a.host_id = Some(wire_name(k)?),
            "source_name" => a.source_name = Some(wire_name(k)?),
            "window" => a.window = k.uint_in(1, 4096)?,
            "batch" => a.batch = k.uint_in(1, 65_536)?,
            "batch_bytes" => a.batch_bytes = k.uint_in(1024, 1 << 20)?,
            "linger_us" => a.linger_us = k.uint_in(0, 1_000_000)?,
            "compress" => {
                a.compress = match k.choice(&["none", "lz4"])? {
                    "lz4" => Compress::Lz4,
                    _ => Compress::None,
                };
            }
            "exit_at_end" => a.exit_at_end = k.bool()?,
            _ => {
                return Err(k.unknown(
                    "queue, reader, from, host_id, source_name, window, batch, batch_bytes, \
                     linger_us, compress, exit_at_end",
                ));
            }
        }
        Ok(())
    })?;
    require(
        doc,
        &[
            (a.queue.is_some(), "out.queue", "the local queue to publish"),
            (a.stream.is_some(), "stream.name", "the JetStream stream"),
            (
                a.subject.is_some(),
                "stream.subject",
                "the subject to publish to",
            ),
        ],
    )?;
    check_tls_pair(doc, &a.common)
}

fn apply_in(doc: &Doc, a: &mut InArgs, log: &mut LogFormat) -> Result<(), ConfigError> {
    let mut sh = Shared {
        c: &mut a.common,
        s: &mut a.stream_args,
        stream: &mut a.stream,
        subject: &mut a.subject,
        log,
    };
    walk(doc, ("in", "out"), &mut sh, |k| {
        match k.name() {
            "consumer" => a.consumer = Some(k.string()?),
            "queue" => a.queue = Some(k.path_buf()?),
            "state" => a.state = Some(k.path_buf()?),
            "batch" => a.batch = k.usize(1)?,
            "sync_batches" => a.sync_batches = k.bool()?,
            "ack_wait" => a.ack_wait = k.uint(1)?,
            "max_ack_pending" => a.max_ack_pending = k.int(1)?,
            "gap_timeout" => a.gap_timeout = k.uint(0)?,
            "segment_size" => a.segment_size = Some(k.uint(1)?),
            _ => {
                return Err(k.unknown(
                    "consumer, queue, state, batch, sync_batches, ack_wait, max_ack_pending, \
                     gap_timeout, segment_size",
                ));
            }
        }
        Ok(())
    })?;
    require(
        doc,
        &[
            (a.stream.is_some(), "stream.name", "the JetStream stream"),
            (
                a.consumer.is_some(),
                "in.consumer",
                "the durable consumer's name",
            ),
            (
                a.queue.is_some(),
                "in.queue",
                "the local queue to append to",
            ),
        ],
    )?;
    check_tls_pair(doc, &a.common)
}

/// The sections both bridges read: nats, tls, stream, metrics, stats, log; `own` is the
/// bridge's own section ("out" or "in"), named when the section is unknown.
fn shared(sec: &Key<'_>, sh: &mut Shared<'_>, own: &str) -> Result<(), ConfigError> {
    let Shared {
        c,
        s,
        stream,
        subject,
        log,
    } = sh;
    let t: Section<'_> = match sec.name() {
        "nats" | "tls" | "stream" | "metrics" | "stats" | "log" => sec.table()?,
        _ => {
            return Err(sec.unknown(&format!(
                "the sections nats, tls, stream, {own}, metrics, stats, log"
            )));
        }
    };
    for k in t.entries() {
        match (sec.name(), k.name()) {
            ("nats", "url") => c.url = urls(&k)?,
            ("nats", "creds") => c.creds = Some(k.path_buf()?),
            ("nats", "reconnect_max_ms") => c.reconnect_max_ms = k.uint(1)?,
            ("nats", "timeout_ms") => c.timeout_ms = k.uint(1)?,
            ("nats", _) => return Err(k.unknown("url, creds, reconnect_max_ms, timeout_ms")),
            ("tls", "ca") => c.tls_ca = Some(k.path_buf()?),
            ("tls", "cert") => c.tls_cert = Some(k.path_buf()?),
            ("tls", "key") => c.tls_key = Some(k.path_buf()?),
            ("tls", "required") => c.tls_required = k.bool()?,
            ("tls", _) => return Err(k.unknown("ca, cert, key, required")),
            ("stream", "name") => **stream = Some(k.string()?),
            ("stream", "subject") => **subject = Some(k.string()?),
            ("stream", "create") => s.create_stream = k.bool()?,
            ("stream", "retention") => {
                s.retention = match k.choice(&["limits", "interest", "workqueue"])? {
                    "interest" => Retention::Interest,
                    "workqueue" => Retention::Workqueue,
                    _ => Retention::Limits,
                };
            }
            ("stream", "replicas") => s.replicas = k.uint_in(1, 5)?,
            ("stream", "storage") => {
                s.storage = match k.choice(&["file", "memory"])? {
                    "memory" => Storage::Memory,
                    _ => Storage::File,
                };
            }
            ("stream", "duplicate_window") => s.duplicate_window = k.uint(0)?,
            ("stream", "max_age") => s.max_age = k.uint(0)?,
            ("stream", "max_bytes") => s.max_bytes = k.int(-1)?,
            ("stream", _) => {
                return Err(k.unknown(
                    "name, subject, create, retention, replicas, storage, duplicate_window, \
                     max_age, max_bytes",
                ));
            }
            ("metrics", "listen") => c.metrics_listen = Some(k.address()?),
            ("metrics", _) => return Err(k.unknown("listen")),
            ("stats", "interval") => c.stats_interval = k.seconds()?,
            ("stats", "json") => c.stats_json = k.bool()?,
            ("stats", _) => return Err(k.unknown("interval, json")),
            ("log", "format") => {
                **log = match k.choice(&["human", "json"])? {
                    "json" => LogFormat::Json,
                    _ => LogFormat::Human,
                };
            }
            _ => return Err(k.unknown("format")),
        }
    }
    if sec.name() == "stream" && s.create_stream && subject.is_none() {
        return Err(sec.error(
            "create = true needs stream.subject (the subject the created stream captures)",
        ));
    }
    Ok(())
}

/// The first key of `keys` (given?, file key, what it names) not given, as a "missing" error.
fn require(doc: &Doc, keys: &[(bool, &str, &str)]) -> Result<(), ConfigError> {
    match keys.iter().find(|(given, ..)| !given) {
        Some((_, key, what)) => Err(doc.error(key, format!("missing ({what})"))),
        None => Ok(()),
    }
}

/// `tls.cert` and `tls.key` come together (as `--tls-cert` requires `--tls-key`).
fn check_tls_pair(doc: &Doc, c: &Common) -> Result<(), ConfigError> {
    match (&c.tls_cert, &c.tls_key) {
        (Some(_), None) => Err(doc.error(
            "tls.cert",
            "needs tls.key too (the private key of the client certificate)",
        )),
        (None, Some(_)) => Err(doc.error(
            "tls.key",
            "needs tls.cert too (the client certificate of the key)",
        )),
        _ => Ok(()),
    }
}

/// A URL, several comma-separated, or an array of them; as `--url` takes them.
fn urls(k: &Key<'_>) -> Result<String, ConfigError> {
    let what = "a NATS URL or an array of them";
    match k.value() {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::Array(v) if !v.is_empty() => v
            .iter()
            .map(|u| {
                u.as_str()
                    .filter(|u| !u.is_empty() && !u.contains(','))
                    .ok_or_else(|| k.expected(what))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join(",")),
        _ => Err(k.expected(what)),
    }
}

/// "earliest", "latest" or a sequence number (string or integer); as `--from` takes it.
fn from(k: &Key<'_>) -> Result<String, ConfigError> {
    let s = match k.value() {
        Value::Integer(n) if *n >= 0 => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err(k.expected("\"earliest\", \"latest\" or a sequence number")),
    };
    crate::parse_from(&s)
        .map(|_| s)
        .map_err(|_| k.expected("\"earliest\", \"latest\" or a sequence number"))
}

/// A host or queue name as it goes into message ids.
fn wire_name(k: &Key<'_>) -> Result<String, ConfigError> {
    let s = k.value().as_str().unwrap_or_default();
    crate::check_wire_name("a name", s)
        .map(|()| s.to_string())
        .map_err(|_| k.expected("a name of 1-128 characters without '/' or whitespace"))
}

/// The file key of the flag with clap id `id` of subcommand `cmd` ("out" or "in"): the
/// conflict message names it, and a test checks that every flag has one.
pub fn file_key(cmd: &str, id: &str) -> Option<&'static str> {
    Some(match (cmd, id) {
        (_, "url") => "nats.url",
        (_, "creds") => "nats.creds",
        (_, "reconnect_max_ms") => "nats.reconnect_max_ms",
        (_, "timeout_ms") => "nats.timeout_ms",
        (_, "tls_ca") => "tls.ca",
        (_, "tls_cert") => "tls.cert",
        (_, "tls_key") => "tls.key",
        (_, "tls_required") => "tls.required",
        (_, "stream") => "stream.name",
        (_, "subject") => "stream.subject",
        (_, "create_stream") => "stream.create",
        (_, "retention") => "stream.retention",
        (_, "replicas") => "stream.replicas",
        (_, "storage") => "stream.storage",
        (_, "duplicate_window") => "stream.duplicate_window",
        (_, "max_age") => "stream.max_age",
        (_, "max_bytes") => "stream.max_bytes",
        (_, "metrics_listen") => "metrics.listen",
        (_, "stats_interval") => "stats.interval",
        (_, "stats_json") => "stats.json",
        (_, "log_format") => "log.format",
        ("out", "queue") => "out.queue",
        ("out", "reader") => "out.reader",
        ("out", "from") => "out.from",
        ("out", "host_id") => "out.host_id",
        ("out", "source_name") => "out.source_name",
        ("out", "window") => "out.window",
        ("out", "batch") => "out.batch",
        ("out", "batch_bytes") => "out.batch_bytes",
        ("out", "linger_us") => "out.linger_us",
        ("out", "compress") => "out.compress",
        ("out", "exit_at_end") => "out.exit_at_end",
        ("in", "consumer") => "in.consumer",
        ("in", "queue") => "in.queue",
        ("in", "state") => "in.state",
        ("in", "batch") => "in.batch",
        ("in", "sync_batches") => "in.sync_batches",
        ("in", "ack_wait") => "in.ack_wait",
        ("in", "max_ack_pending") => "in.max_ack_pending",
        ("in", "gap_timeout") => "in.gap_timeout",
        ("in", "segment_size") => "in.segment_size",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn every_flag_has_a_file_key_that_the_file_accepts() {
        let cmd = Cli::command();
        let mut seen = 0;
        for sub in ["out", "in"] {
            let s = cmd.find_subcommand(sub).unwrap();
            for arg in s.get_arguments() {
                seen += 1;
                let id = arg.get_id().as_str();
                if matches!(id, "config" | "help" | "version") {
                    continue;
                }
                let key = file_key(sub, id).unwrap_or_else(|| panic!("{sub} --{id}: no file key"));
                // The key is one the walker knows: a wrong value names it, not "unknown key".
                let (section, name) = key.split_once('.').unwrap();
                let text = format!("[{section}]\n{name} = {{ x = 1 }}\n");
                let doc = Doc::parse("b.toml", &text).unwrap();
                let mut c = cli(&["chron-bridge", sub, "--config", "b.toml"]);
                let e = apply(&doc, &mut c).unwrap_err().to_string();
                assert!(
                    e.starts_with(&format!("b.toml: key `{key}`: expected ")),
                    "{sub} {key}: {e}"
                );
            }
        }
        assert_eq!(seen, 62, "the flags of both commands (with --config twice)");
    }

    #[test]
    fn a_file_sets_what_the_flags_set() {
        let doc = Doc::parse(
            "b.toml",
            r#"
            [nats]
            url = ["nats://a:4222", "nats://b:4222"]
            timeout_ms = 100
            [stream]
            name = "S"
            subject = "x.y"
            create = true
            replicas = 3
            [out]
            queue = "/q/md"
            window = 8
            batch = 1
            compress = "lz4"
            from = 42
            [stats]
            interval = 0.5
            [log]
            format = "json"
            "#,
        )
        .unwrap();
        let mut c = cli(&["chron-bridge", "out", "--config", "b.toml"]);
        apply(&doc, &mut c).unwrap();
        assert_eq!(c.log.log_format, LogFormat::Json);
        let Cmd::Out(a) = c.cmd else { panic!() };
        assert_eq!(a.common.url, "nats://a:4222,nats://b:4222");
        assert_eq!(a.common.timeout_ms, 100);
        assert_eq!(a.stream.as_deref(), Some("S"));
        assert_eq!(a.subject.as_deref(), Some("x.y"));
        assert!(a.stream_args.create_stream);
        assert_eq!(a.stream_args.replicas, 3);
        assert_eq!(a.queue.as_deref(), Some(Path::new("/q/md")));
        assert_eq!((a.window, a.batch), (8, 1));
        assert_eq!(a.compress, Compress::Lz4);
        assert_eq!(a.from, "42");
        assert!((a.common.stats_interval - 0.5).abs() < f64::EPSILON);
        // Untouched keys keep the flags' defaults.
        assert_eq!(a.reader, "bridge-out");
        assert_eq!(a.batch_bytes, crate::outbound::DEFAULT_BATCH_BYTES);
    }

    #[test]
    fn the_readme_examples_are_accepted() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split_once("### The bridge's config")
            .unwrap()
            .1
            .split_once("\n## ")
            .unwrap()
            .0;
        let blocks: Vec<&str> = section
            .split("```toml\n")
            .skip(1)
            .map(|b| b.split_once("```").unwrap().0)
            .collect();
        assert_eq!(blocks.len(), 2);
        for (sub, text) in ["out", "in"].iter().zip(blocks) {
            let doc = Doc::parse("README.md", text).unwrap();
            let mut c = cli(&["chron-bridge", sub, "--config", "x.toml"]);
            apply(&doc, &mut c).unwrap_or_else(|e| panic!("{sub}: {e}"));
        }
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let out = "[stream]\nname = \"S\"\nsubject = \"x\"\n[out]\nqueue = \"/q\"\n";
        let cases = [
            (
                "out",
                "[out]\nwindow = 0\n",
                "b.toml: key `out.window`: expected an integer from 1 to 4096, found 0 (integer)",
            ),
            (
                "out",
                "[out]\nwindw = 2\n",
                "b.toml: key `out.windw`: unknown key (known here: queue, reader,",
            ),
            (
                "out",
                "[nats]\nurl = 5\n",
                "b.toml: key `nats.url`: expected a NATS URL or an array of them, found 5 (integer)",
            ),
            (
                "out",
                "[in]\nbatch = 5\n",
                "b.toml: key `in`: the section of `chron-bridge in`",
            ),
            (
                "in",
                "[out]\nbatch = 5\n",
                "b.toml: key `out`: the section of `chron-bridge out`",
            ),
            (
                "out",
                "[router]\nrate_limit = 5\n",
                "b.toml: key `router`: unknown key (known here: the sections nats, tls, stream, out,",
            ),
            (
                "out",
                "[out]\nhost_id = \"a/b\"\n",
                "b.toml: key `out.host_id`: expected a name of 1-128",
            ),
            (
                "out",
                "[out]\nfrom = \"soon\"\n",
                "b.toml: key `out.from`: expected \"earliest\", \"latest\" or a sequence number, found \"soon\" (string)",
            ),
            (
                "out",
                "[log]\nformat = \"xml\"\n",
                "b.toml: key `log.format`: expected \"human\" or \"json\", found \"xml\" (string)",
            ),
            (
                "out",
                "[stream]\ncreate = true\n",
                "b.toml: key `stream`: create = true needs stream.subject",
            ),
            (
                "out",
                "[stream]\nsubject = \"x\"\n",
                "b.toml: key `out.queue`: missing",
            ),
            (
                "in",
                "[in]\nqueue = \"/q\"\n",
                "b.toml: key `stream.name`: missing",
            ),
            (
                "out",
                &format!("{out}[tls]\ncert = \"/c.pem\"\n"),
                "b.toml: key `tls.cert`: needs tls.key too",
            ),
        ];
        for (sub, text, want) in cases {
            let doc = Doc::parse("b.toml", text).unwrap();
            let mut c = cli(&["chron-bridge", sub, "--config", "b.toml"]);
            let e = apply(&doc, &mut c).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}:\n got  {e}\n want {want}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        let doc = Doc::parse("b.toml", out).unwrap();
        let mut c = cli(&["chron-bridge", "out", "--config", "b.toml"]);
        apply(&doc, &mut c).unwrap();
    }
}
