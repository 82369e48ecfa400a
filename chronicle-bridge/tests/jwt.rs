//! `chron-bridge --creds` against a real `nats-server` in operator mode (decentralized JWT
//! authentication): an operator, its accounts and users are made at test time (see
//! `common::jwt`), the server trusts the operator and knows the accounts through its in-memory
//! resolver. Records go out of host A's queue through JetStream into host B's queue with both
//! bridges authenticated by `.creds` files; a user of an account the server does not know, an
//! expired user, a `.creds` file that is not one, an account without JetStream and no
//! credentials at all each stop the bridge with a message that says what to fix.
//!
//! Size: `CHRONICLE_BRIDGE_JWT_RECORDS` (default 4000) for the transfer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chronicle_core::QueueWriter;
use common::args::{closed_empty_queue, diag, finish_transfer, in_args, out_args, p, run, strings};
use common::jwt::{self, Account, Operator};
use common::{
    Bridge, Hosts, Mode, NatsServer, TRANSFER_DEADLINE, count_records, env_u64, free_port, hosts,
    nats_server_bin, spawn_writer, verify_arrival, write_records, writer_config,
};

/// An operator-mode server and the identities around it.
struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    a: PathBuf,
    b: PathBuf,
    operator: Operator,
    /// An account with JetStream, known to the server.
    account: Account,
    /// An account without JetStream, known to the server.
    no_js: Account,
    system: Account,
    config: PathBuf,
    port: u16,
    store: PathBuf,
    server: NatsServer,
}

fn setup(bin: &Path) -> Setup {
    let Hosts {
        _dir: dir,
        root,
        a,
        b,
    } = hosts();
    let operator = Operator::new("chronicle-test");
    let system = operator.account("SYS", false);
    let account = operator.account("TRADING", true);
    let no_js = operator.account("NOJS", false);
    let port = free_port();
    let store = root.join("js-jwt");
    let config = root.join("nats-jwt.conf");
    std::fs::write(
        &config,
        jwt::server_config(&operator, &system, &[&account, &no_js], port, &store),
    )
    .unwrap();
    let server = NatsServer::from_config(bin, &root, "jwt", &config, port, &store);
    Setup {
        _dir: dir,
        root,
        a,
        b,
        operator,
        account,
        no_js,
        system,
        config,
        port,
        store,
        server,
    }
}

impl Setup {
    /// Starts the out-bridge (with `out_extra`) from queue `a` and the in-bridge into queue `b`
    /// against `url`, each with its creds file, logging to `out{tag}.log` and `in{tag}.log`.
    fn start_bridges(
        &self,
        url: &str,
        (out_creds, in_creds): (&Path, &Path),
        out_extra: Vec<String>,
        tag: &str,
    ) -> (Bridge, Bridge) {
        let creds = |file: &Path| strings(&["--creds", &p(file)]);
        let mut out_extra = out_extra;
        out_extra.extend(creds(out_creds));
        let mut out = Bridge::new(
            &out_args(url, &self.a, &out_extra),
            self.root.join(format!("out{tag}.log")),
        );
        let mut inb = Bridge::new(
            &in_args(url, &self.b, &creds(in_creds)),
            self.root.join(format!("in{tag}.log")),
        );
        out.start();
        inb.start();
        (out, inb)
    }

    /// Restarts the server (same port, same JetStream store) knowing only `accounts`.
    fn restart_knowing(&mut self, accounts: &[&Account]) {
        self.server.kill();
        std::fs::write(
            &self.config,
            jwt::server_config(
                &self.operator,
                &self.system,
                accounts,
                self.port,
                &self.store,
            ),
        )
        .unwrap();
        self.server.start();
    }

    /// Writes a `.creds` file for a new user of `account` (expiring at `expires`).
    fn creds(&self, account: &Account, file: &str, expires: Option<i64>) -> PathBuf {
        account
            .user(&format!("{}-{file}", account.name), expires)
            .write_creds(&self.root.join(file))
    }
}

/// Waits (bounded) until the bridge has connected and found the stream (its "->" start line);
/// panics with its log if it exits first.
fn wait_running(b: &mut Bridge, server: &NatsServer) {
    wait_logged(
        b,
        "its start line",
        |log| log.contains("connected to NATS") && log.contains(" -> "),
        || format!("\n--- nats-server log (tail)\n{}", server.log_tail()),
    );
}

/// Waits (bounded, 60 s) until the bridge's log passes `done`; `what` names what is waited for.
/// Panics with the log (and `more()`) if the bridge exits first, with the log on the timeout.
fn wait_logged(b: &mut Bridge, what: &str, done: impl Fn(&str) -> bool, more: impl Fn() -> String) {
    let end = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let log = b.log_text();
        if done(&log) {
            return;
        }
        if let Some(st) = b.wait_exit(Duration::ZERO) {
            panic!(
                "bridge exited ({st}) waiting for {what}:\n{}{}",
                b.log_text(),
                more()
            );
        }
        assert!(
            std::time::Instant::now() < end,
            "{what} not logged within 60 s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The helper's JWTs are what the server expects: signed by their issuers, chained operator
/// -> account -> user, the account's JetStream limits present or absent as asked.
#[test]
fn test_identities_are_well_formed() {
    let operator = Operator::new("op");
    let account = operator.account("acc", true);
    let no_js = operator.account("nojs", false);
    let user = account.user("u", None);
    for token in [&operator.jwt, &account.jwt, &no_js.jwt, &user.jwt] {
        assert!(jwt::signature_is_valid(token), "{token}");
    }
    let (o, a, n, u) = (
        jwt::claims(&operator.jwt),
        jwt::claims(&account.jwt),
        jwt::claims(&no_js.jwt),
        jwt::claims(&user.jwt),
    );
    assert_eq!(o["iss"], o["sub"]);
    assert_eq!(o["nats"]["type"], "operator");
    assert_eq!(a["iss"], o["sub"]);
    assert_eq!(a["sub"].as_str().unwrap(), account.public_key());
    assert_eq!(a["nats"]["type"], "account");
    assert_eq!(a["nats"]["limits"]["disk_storage"], -1);
    assert!(n["nats"]["limits"].get("disk_storage").is_none());
    assert_eq!(u["iss"].as_str().unwrap(), account.public_key());
    assert_eq!(u["sub"].as_str().unwrap(), user.public_key());
    assert_eq!(u["nats"]["type"], "user");
    assert_eq!(u["nats"]["version"], 2);
    let creds = user.creds();
    assert!(creds.starts_with(&format!(
        "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------\n",
        user.jwt
    )));
    assert!(creds.contains("-----BEGIN USER NKEY SEED-----\nSU"));
    // A tampered token fails the signature check.
    let mut bad = user.jwt.clone();
    bad.pop();
    bad.push(if user.jwt.ends_with('A') { 'B' } else { 'A' });
    assert!(!jwt::signature_is_valid(&bad));
}

both_modes!(records_flow_with_creds_against_a_jwt_configured_server);

fn records_flow_with_creds_against_a_jwt_configured_server(mode: Mode) {
    let Some(bin) = nats_server_bin() else { return };
    let s = setup(&bin);
    // The server demands authentication from every client.
    let info = s.server.info_line();
    assert!(info.contains("\"auth_required\":true"), "{info}");
    let n = env_u64("CHRONICLE_BRIDGE_JWT_RECORDS", 4000);
    let out_creds = s.creds(&s.account, "out.creds", None);
    let in_creds = s.creds(&s.account, "in.creds", Some(jwt::now() + 24 * 3600));

    let mut w = QueueWriter::open(&s.a, writer_config()).unwrap();
    write_records(&mut w, 0, n / 2, 0);
    let (mut out, mut inb) = s.start_bridges(
        &s.server.url(),
        (&out_creds, &in_creds),
        mode.with(&["--exit-at-end"]),
        "",
    );
    // Both are past authentication and the stream lookup before the bulk of the records is
    // written (a refused bridge stops here with its own message, not after the transfer
    // deadline).
    for b in [&mut out, &mut inb] {
        wait_running(b, &s.server);
    }
    let writer = spawn_writer(w, n / 2, n, 20);
    verify_arrival(&s.b, n, TRANSFER_DEADLINE, &|| diag(&out, &inb, &s.server));
    writer.join().unwrap();
    finish_transfer(&mut out, &mut inb, &s.server, &s.b, n);
    for log in [out.log_text(), inb.log_text()] {
        assert!(log.contains("connected to NATS"), "{log}");
    }
}

/// Refusals stop the bridge at start, promptly (`run` panics after its deadline), with exit
/// code 1 and a message that says what to fix; the same server accepts a good user.
#[test]
fn refused_credentials_stop_the_bridge_with_a_clear_error() {
    let Some(bin) = nats_server_bin() else { return };
    let s = setup(&bin);
    closed_empty_queue(&s.a);
    let url = s.server.url();
    let out = |extra: &[&str]| {
        let mut v = strings(&["--exit-at-end"]);
        v.extend(strings(extra));
        out_args(&url, &s.a, &v)
    };
    let refused = |err: &str, path: &Path, account: &Account| {
        err.contains(&format!(
            "NATS at {url} refused the user in --creds {}",
            p(path)
        )) && err.contains(&format!("signed account {}", account.public_key()))
    };

    // A user of an account signed by another operator, which the server does not trust.
    let stranger = Operator::new("other").account("STRANGER", true);
    let unknown = s.creds(&stranger, "unknown.creds", None);
    let (code, err) = run(&out(&["--creds", &p(&unknown)]), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(refused(&err, &unknown, &stranger), "{err}");

    // A user of an account signed by the right operator but not known to the resolver.
    let unlisted = s.operator.account("UNLISTED", true);
    let unlisted_creds = s.creds(&unlisted, "unlisted.creds", None);
    let (code, err) = run(&out(&["--creds", &p(&unlisted_creds)]), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(refused(&err, &unlisted_creds, &unlisted), "{err}");

    // An expired user of the right account.
    let expired_at = jwt::now() - 3600;
    let expired = s.creds(&s.account, "expired.creds", Some(expired_at));
    let (code, err) = run(&out(&["--creds", &p(&expired)]), &[]);
    assert_eq!(code, 1, "{err}");
    let when = time::OffsetDateTime::from_unix_timestamp(expired_at)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert!(
        err.contains(&format!(
            "the user JWT in --creds {} expired at {when}",
            p(&expired)
        )) && err.contains("issue a new .creds file"),
        "{err}"
    );

    // No credentials at all.
    let (code, err) = run(&out(&[]), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "NATS at {url} requires authentication and no credentials were given"
        )) && err.contains("pass --creds FILE"),
        "{err}"
    );

    // A user of a known account without JetStream: connects, then the stream cannot be made.
    let nojs = s.creds(&s.no_js, "nojs.creds", None);
    let (code, err) = run(&out(&["--creds", &p(&nojs)]), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("JetStream is not enabled for the account")
            && err.contains("JetStream limits"),
        "{err}"
    );

    // A user of the account the server knows: connects, creates the stream, finds the queue
    // empty and closed, exits 0.
    let good = s.creds(&s.account, "good.creds", None);
    let (code, err) = run(&out(&["--creds", &p(&good)]), &[]);
    assert_eq!(code, 0, "{err}\n{}", s.server.log_tail());
}

/// Files that are not usable `.creds` files are reported before any connection attempt (the
/// URL points at a port where nothing listens, so an attempt would give a different error).
#[test]
fn unusable_creds_files_are_reported_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let q = root.join("feed");
    closed_empty_queue(&q);
    let dead = "nats://127.0.0.1:1";
    let account = Operator::new("op").account("ACC", true);
    let user = account.user("u", None);
    let other = account.user("v", None);
    let write = |name: &str, text: &str| {
        let path = root.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let good = user.write_creds(&root.join("good.creds"));
    let cases = [
        (
            write("garbage.creds", "not a creds file\n"),
            "holds no user JWT".to_string(),
        ),
        (
            // The JWT of one user with the seed of another.
            write("mixed.creds", &user.creds().replace(&user.jwt, &other.jwt)),
            format!(
                "the nkey seed is not the user's: its public key is {}, the user JWT is for {}",
                user.public_key(),
                other.public_key()
            ),
        ),
        (
            write(
                "account.creds",
                &user.creds().replace(&user.jwt, &account.jwt),
            ),
            "holds an account JWT, not a user JWT".to_string(),
        ),
        (
            write("noseed.creds", user.creds().split("\n\n").next().unwrap()),
            "holds the user JWT but no nkey seed".to_string(),
        ),
    ];
    for (path, want) in &cases {
        let (code, err) = run(
            &out_args(dead, &q, &strings(&["--exit-at-end", "--creds", &p(path)])),
            &[],
        );
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!(
                "--creds file {} is not a usable NATS credentials file: {want}",
                p(path)
            )),
            "expected {want:?} in:\n{err}"
        );
    }
    // A good file gets as far as connecting.
    let (code, err) = run(
        &out_args(dead, &q, &strings(&["--exit-at-end", "--creds", &p(&good)])),
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot connect to NATS"), "{err}");
    // A missing file.
    let missing = root.join("missing.creds");
    let (code, err) = run(
        &out_args(dead, &q, &strings(&["--creds", &p(&missing)])),
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot read credentials file {} (--creds)",
            p(&missing)
        )),
        "{err}"
    );
}

/// Waits until the bridge has connected and found the stream, or has exited, or the clock has
/// reached `until` (Unix seconds). Whether it got there in time.
fn running_before(b: &mut Bridge, until: i64) -> bool {
    loop {
        let log = b.log_text();
        if log.contains("connected to NATS") && log.contains(" -> ") {
            return jwt::now() < until;
        }
        if b.wait_exit(Duration::ZERO).is_some() || jwt::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A user JWT that expires while the bridges run: the server ends their sessions and refuses
/// them back; each bridge stops by itself (exit 1) with the expiry error instead of retrying
/// the expired JWT for ever, leaving its queue position and import state consistent: with
/// renewed `.creds` files the records written meanwhile arrive, every record exactly once and in
/// order.
#[test]
fn bridges_stop_when_their_user_jwt_expires_and_resume_with_a_renewed_one() {
    let Some(bin) = nats_server_bin() else { return };
    let s = setup(&bin);
    let url = s.server.url();
    let first = 500;
    let n = 1000;
    let mut w = QueueWriter::open(&s.a, writer_config()).unwrap();
    write_records(&mut w, 0, first, 0);

    // The bridges must be running before the JWTs expire: a lifetime that turns out too short
    // for this machine is tried again with a longer one.
    let mut lifetime = 5;
    let (mut out, mut inb, expires) = loop {
        let expires = jwt::now() + lifetime;
        let out_creds = s.creds(&s.account, &format!("out-{lifetime}s.creds"), Some(expires));
        let in_creds = s.creds(&s.account, &format!("in-{lifetime}s.creds"), Some(expires));
        let (mut out, mut inb) = s.start_bridges(
            &url,
            (&out_creds, &in_creds),
            Vec::new(),
            &format!("-{lifetime}s"),
        );
        if running_before(&mut out, expires) && running_before(&mut inb, expires) {
            break (out, inb, expires);
        }
        eprintln!("the bridges were not running within {lifetime} s; trying a longer lifetime");
        out.kill9();
        inb.kill9();
        lifetime *= 3;
        assert!(lifetime < 1000, "the bridges never got running");
    };
    verify_arrival(&s.b, first, TRANSFER_DEADLINE, &|| {
        diag(&out, &inb, &s.server)
    });

    let want = format!("expired at {}", rfc3339(expires));
    for (name, b) in [("out", &mut out), ("in", &mut inb)] {
        // Bounded by the JWT's lifetime and a generous margin; a bridge that retried for ever
        // would fail here.
        let st = b.wait_exit(Duration::from_secs(lifetime as u64 + 120));
        let log = b.log_text();
        assert!(
            st.is_some_and(|st| st.code() == Some(1)),
            "{name}-bridge: {st:?}\n{log}"
        );
        assert!(
            log.contains("chron-bridge: error: the user JWT in --creds")
                && log.contains(&want)
                && log.contains("issue a new .creds file"),
            "{name}-bridge:\n{log}"
        );
    }

    // Renewed files: everything arrives, exactly once, in order.
    write_records(&mut w, first, n, 0);
    w.close().unwrap();
    let out_creds = s.creds(&s.account, "out-renewed.creds", None);
    let in_creds = s.creds(&s.account, "in-renewed.creds", None);
    let (mut out, mut inb) = s.start_bridges(
        &url,
        (&out_creds, &in_creds),
        strings(&["--exit-at-end"]),
        "-renewed",
    );
    verify_arrival(&s.b, n, TRANSFER_DEADLINE, &|| diag(&out, &inb, &s.server));
    finish_transfer(&mut out, &mut inb, &s.server, &s.b, n);
}

/// Waits (bounded) until the bridge's log contains `what`; panics with the log if the bridge
/// exits first.
fn wait_log(b: &mut Bridge, what: &str) {
    wait_logged(
        b,
        &format!("{what:?}"),
        |log| log.contains(what),
        String::new,
    );
}

/// A reconnect refused for another reason than an expired JWT (here: the server came back
/// without the user's account) is logged with the file and the account, and retried: the
/// bridges keep running and carry on, exactly once, once the server knows the account again.
#[test]
fn a_reconnect_refused_for_an_unknown_account_is_retried() {
    let Some(bin) = nats_server_bin() else { return };
    let mut s = setup(&bin);
    let url = s.server.url();
    let n = 400;
    let out_creds = s.creds(&s.account, "out.creds", None);
    let in_creds = s.creds(&s.account, "in.creds", None);
    let mut w = QueueWriter::open(&s.a, writer_config()).unwrap();
    write_records(&mut w, 0, n / 2, 0);
    let (mut out, mut inb) = s.start_bridges(&url, (&out_creds, &in_creds), Vec::new(), "");
    verify_arrival(&s.b, n / 2, TRANSFER_DEADLINE, &|| {
        diag(&out, &inb, &s.server)
    });

    let account = s.account.public_key();
    let no_js = s.operator.account("OTHER", false);
    s.restart_knowing(&[&no_js]);
    for (b, creds) in [(&mut out, &out_creds), (&mut inb, &in_creds)] {
        wait_log(
            b,
            &format!(
                "the server refused the user in --creds {} (account {account}); still retrying",
                p(creds)
            ),
        );
    }
    let account = std::mem::replace(&mut s.account, no_js);
    s.restart_knowing(&[&account]);
    write_records(&mut w, n / 2, n, 0);
    w.close().unwrap();
    verify_arrival(&s.b, n, TRANSFER_DEADLINE, &|| diag(&out, &inb, &s.server));
    for (name, b) in [("out", &mut out), ("in", &mut inb)] {
        let st = b.terminate();
        assert!(
            st.is_some_and(|st| st.success()),
            "{name}-bridge exit: {st:?}\n{}",
            b.log_text()
        );
    }
    assert_eq!(count_records(&s.b), n);
}
