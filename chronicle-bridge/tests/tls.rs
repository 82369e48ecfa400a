//! `chron-bridge` over TLS against real `nats-server` processes: a throwaway PKI (two CAs, a
//! server certificate for 127.0.0.1 and localhost, client certificates) is made with rcgen at
//! test time. Records go out of host A's queue through a TLS-only server into host B's queue;
//! mutual TLS works with a client certificate and fails clearly without one; an untrusted
//! server certificate, `--tls-required` against a plaintext server and bad TLS files or options
//! each stop the bridge with a message that names what to fix.
//!
//! Size: `CHRONICLE_BRIDGE_TLS_RECORDS` (default 4000) for the transfer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use chronicle_core::QueueWriter;
use common::args::{closed_empty_queue, diag, finish_transfer, in_args, out_args, p, run, strings};
use common::{
    Bridge, Hosts, Mode, NatsServer, TRANSFER_DEADLINE, count_records, env_u64, nats_server_bin,
    spawn_writer, tls_args, verify_arrival, write_records, writer_config,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Runs an out-bridge of queue `a` with `--exit-at-end` and `extra` against `url` until it
/// stops; returns its exit code and stderr.
fn run_to_end<S: AsRef<str>>(url: &str, a: &Path, extra: &[S]) -> (i32, String) {
    let mut args = strings(&["--exit-at-end"]);
    args.extend(extra.iter().map(|e| e.as_ref().to_string()));
    run(&out_args(url, a, &args), &[])
}

/// `--tls-cert cert --tls-key key`.
fn client_cert(cert: &Path, key: &Path) -> Vec<String> {
    strings(&["--tls-cert", &p(cert), "--tls-key", &p(key)])
}

/// The files of a throwaway PKI.
struct Pki {
    /// The CA that issued the server and client certificates.
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A second, unrelated CA.
    other_ca: PathBuf,
    /// A client certificate issued by the other CA.
    other_client_cert: PathBuf,
    other_client_key: PathBuf,
}

fn new_ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (params, key, pem)
}

/// A leaf certificate for `names` issued by `issuer`: (certificate PEM, key PEM).
fn new_leaf(
    names: &[&str],
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, &KeyPair>,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn make_pki(dir: &Path) -> Pki {
    let dir = dir.join("pki");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, pem: &str| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let (ca_params, ca_key, ca_pem) = new_ca("chronicle test CA");
    let ca = Issuer::from_params(&ca_params, &ca_key);
    let (server_cert, server_key) = new_leaf(
        &["127.0.0.1", "localhost"],
        "nats-server",
        ExtendedKeyUsagePurpose::ServerAuth,
        &ca,
    );
    let (client_cert, client_key) = new_leaf(
        &["bridge-client"],
        "chron-bridge",
        ExtendedKeyUsagePurpose::ClientAuth,
        &ca,
    );
    let (other_params, other_key, other_pem) = new_ca("another CA");
    let other = Issuer::from_params(&other_params, &other_key);
    let (other_client_cert, other_client_key) = new_leaf(
        &["bridge-client"],
        "chron-bridge",
        ExtendedKeyUsagePurpose::ClientAuth,
        &other,
    );
    Pki {
        ca: write("ca.pem", &ca_pem),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
        other_ca: write("other-ca.pem", &other_pem),
        other_client_cert: write("other-client.pem", &other_client_cert),
        other_client_key: write("other-client-key.pem", &other_client_key),
    }
}

/// A pair of hosts and the PKI made for them.
fn hosts() -> (Hosts, Pki) {
    let h = common::hosts();
    let pki = make_pki(&h.root);
    (h, pki)
}

fn start_server(bin: &Path, dir: &Path, extra: &[String]) -> NatsServer {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    NatsServer::single(bin, dir, &extra)
}

both_modes!(records_flow_through_a_tls_only_server_byte_identical_in_order);

fn records_flow_through_a_tls_only_server_byte_identical_in_order(mode: Mode) {
    let Some(bin) = nats_server_bin() else { return };
    let (h, pki) = hosts();
    let server = start_server(
        &bin,
        &h.root,
        &tls_args(&pki.server_cert, &pki.server_key, None),
    );
    // The server refuses plaintext clients, so records that arrive went over TLS.
    let info = server.info_line();
    assert!(info.contains("\"tls_required\":true"), "{info}");
    let n = env_u64("CHRONICLE_BRIDGE_TLS_RECORDS", 4000);

    let mut w = QueueWriter::open(&h.a, writer_config()).unwrap();
    write_records(&mut w, 0, n / 2, 0);
    // Out: a tls:// URL and --tls-ca. In: a nats:// URL with --tls-required, the CA from
    // NATS_CA (the environment fallback).
    let mut out = Bridge::new(
        &out_args(
            &server.tls_url(),
            &h.a,
            &mode.with(&["--exit-at-end", "--tls-ca", &p(&pki.ca)]),
        ),
        h.root.join("out.log"),
    );
    let mut inb = Bridge::new(
        &in_args(&server.url(), &h.b, &strings(&["--tls-required"])),
        h.root.join("in.log"),
    );
    inb.envs.push(("NATS_CA".to_string(), p(&pki.ca)));
    out.start();
    inb.start();
    let writer = spawn_writer(w, n / 2, n, 20);
    verify_arrival(&h.b, n, TRANSFER_DEADLINE, &|| diag(&out, &inb, &server));
    writer.join().unwrap();
    finish_transfer(&mut out, &mut inb, &server, &h.b, n);
    for log in [out.log_text(), inb.log_text()] {
        assert!(log.contains("connected to NATS"), "{log}");
    }
}

#[test]
fn mutual_tls_works_with_a_client_certificate_and_fails_clearly_without() {
    let Some(bin) = nats_server_bin() else { return };
    let (h, pki) = hosts();
    let server = start_server(
        &bin,
        &h.root,
        &tls_args(&pki.server_cert, &pki.server_key, Some(&pki.ca)),
    );
    let ca = p(&pki.ca);
    let n = 500;
    let mut w = QueueWriter::open(&h.a, writer_config()).unwrap();
    write_records(&mut w, 0, n, 0);
    w.close().unwrap();

    let with_cert =
        |cert: &Path, key: &Path| [strings(&["--tls-ca", &ca]), client_cert(cert, key)].concat();

    // No client certificate.
    let (code, err) = run_to_end(&server.url(), &h.a, &["--tls-ca", &ca]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("requires a TLS client certificate")
            && err.contains("pass --tls-cert FILE and --tls-key FILE"),
        "{err}"
    );

    // A client certificate from a CA the server does not trust.
    let cert_args = with_cert(&pki.other_client_cert, &pki.other_client_key);
    let (code, err) = run_to_end(&server.url(), &h.a, &cert_args);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("rejected the TLS client certificate")
            && err.contains(&p(&pki.other_client_cert)),
        "{err}"
    );

    // The right certificate: the out-bridge publishes everything and exits; the in-bridge
    // (certificate and key from the environment) imports it.
    let cert_args = with_cert(&pki.client_cert, &pki.client_key);
    let (code, err) = run_to_end(&server.url(), &h.a, &cert_args);
    assert_eq!(code, 0, "{err}\n{}", server.log_tail());
    let mut inb = Bridge::new(
        &in_args(&server.url(), &h.b, &strings(&["--tls-ca", &ca])),
        h.root.join("in.log"),
    );
    inb.envs
        .push(("NATS_CERT".to_string(), p(&pki.client_cert)));
    inb.envs.push(("NATS_KEY".to_string(), p(&pki.client_key)));
    inb.start();
    let no_out = Bridge::new(&[], h.root.join("none.log"));
    verify_arrival(&h.b, n, TRANSFER_DEADLINE, &|| diag(&no_out, &inb, &server));
    let st = inb.terminate();
    assert!(st.is_some_and(|s| s.success()), "in-bridge exit: {st:?}");
    assert_eq!(count_records(&h.b), n);
}

#[test]
fn untrusted_server_certificate_fails_clearly_and_promptly() {
    let Some(bin) = nats_server_bin() else { return };
    let (h, pki) = hosts();
    closed_empty_queue(&h.a);
    let server = start_server(
        &bin,
        &h.root,
        &tls_args(&pki.server_cert, &pki.server_key, None),
    );
    let other = p(&pki.other_ca);

    // A CA that did not issue the server's certificate.
    let (code, err) = run_to_end(&server.url(), &h.a, &["--tls-ca", &other]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is not trusted") && err.contains(&format!("--tls-ca {other}")),
        "{err}"
    );

    // No CA at all (the system's roots): with a tls:// URL, and with a nats:// URL and no TLS
    // option (the server requires TLS, so the client upgrades anyway).
    for url in [server.tls_url(), server.url()] {
        let (code, err) = run_to_end(&url, &h.a, &[] as &[&str]);
        assert_eq!(code, 1, "{url}: {err}");
        assert!(
            err.contains("is not trusted") && err.contains("pass the CA certificate"),
            "{url}: {err}"
        );
    }

    // The right CA: connects, creates the stream, finds the queue empty and closed, exits 0.
    let (code, err) = run_to_end(&server.url(), &h.a, &["--tls-ca", &p(&pki.ca)]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn tls_required_against_a_plaintext_server_fails_clearly() {
    let Some(bin) = nats_server_bin() else { return };
    let (h, pki) = hosts();
    closed_empty_queue(&h.a);
    let server = NatsServer::single(&bin, &h.root, &[]);
    let info = server.info_line();
    assert!(!info.contains("\"tls_required\":true"), "{info}");
    let ca = p(&pki.ca);

    let cases: [(String, Vec<String>); 3] = [
        (server.url(), strings(&["--tls-required"])),
        (server.tls_url(), vec![]),
        (server.url(), strings(&["--tls-ca", &ca])),
    ];
    for (url, extra) in &cases {
        let (code, err) = run_to_end(url, &h.a, extra);
        assert_eq!(code, 1, "{url} {extra:?}: {err}");
        assert!(
            err.contains("does not offer TLS") && err.contains("--tls-required"),
            "{url} {extra:?}: {err}"
        );
    }

    // Without any TLS option the same server is fine.
    let (code, err) = run_to_end(&server.url(), &h.a, &[] as &[&str]);
    assert_eq!(code, 0, "{err}");
}

/// File and option mistakes are found before any connection attempt (the URL points at a port
/// where nothing listens, so a connection attempt would give a different error); no server is
/// needed.
#[test]
fn bad_tls_files_and_options_are_reported_before_connecting() {
    let (h, pki) = hosts();
    let dead = "nats://127.0.0.1:1";
    let missing = h.root.join("no-such-file.pem");
    let args = |extra: &[&str]| out_args(dead, &h.a, &strings(extra));

    // One half of the client certificate pair: a usage error (exit code 2), also from the
    // environment.
    let (code, err) = run(&args(&["--tls-cert", &p(&pki.client_cert)]), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-key"), "{err}");
    let (code, err) = run(&args(&["--tls-key", &p(&pki.client_key)]), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-cert"), "{err}");
    let (code, err) = run(&args(&[]), &[("NATS_CERT", &p(&pki.client_cert))]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-key"), "{err}");

    // Files that are missing or hold the wrong thing: exit code 1, the option and the file
    // named.
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            strings(&["--tls-ca", &p(&missing)]),
            format!("--tls-ca file {}: cannot read it", p(&missing)),
        ),
        (
            client_cert(&missing, &pki.client_key),
            format!("--tls-cert file {}: cannot read it", p(&missing)),
        ),
        (
            client_cert(&pki.client_cert, &missing),
            format!("--tls-key file {}: cannot read it", p(&missing)),
        ),
        (
            strings(&["--tls-ca", &p(&pki.client_key)]),
            format!(
                "--tls-ca file {}: holds no PEM certificate",
                p(&pki.client_key)
            ),
        ),
        (
            client_cert(&pki.client_cert, &pki.client_cert),
            format!(
                "--tls-key file {}: holds no PEM private key",
                p(&pki.client_cert)
            ),
        ),
        (
            client_cert(&pki.client_cert, &pki.other_client_key),
            format!(
                "--tls-key file {}: not a usable key for the certificate in --tls-cert {}",
                p(&pki.other_client_key),
                p(&pki.client_cert)
            ),
        ),
    ];
    for (extra, want) in cases {
        let a: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (code, err) = run(&args(&a), &[]);
        assert_eq!(code, 1, "{extra:?}: {err}");
        assert!(
            err.contains(&want),
            "{extra:?}: expected {want:?} in:\n{err}"
        );
    }
}

/// A server that accepts the connection and never says anything (not even INFO) does not hold
/// the bridge for ever at start.
#[test]
fn silent_server_is_given_up_on() {
    let (h, pki) = hosts();
    // The local queue is checked before the connection: give it a real one.
    closed_empty_queue(&h.a);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds connections until the test ends (the listener's thread is detached;
    // the process exit closes everything).
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let (code, err) = run(
        &out_args(
            &format!("tls://127.0.0.1:{port}"),
            &h.a,
            &strings(&["--tls-ca", &p(&pki.ca)]),
        ),
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot connect to NATS") && err.contains("did not answer"),
        "{err}"
    );
}
