//! `roomcast serve` over TLS, with clients nobody here wrote: curl for `https://`, Python
//! `websockets` for `wss://`, openssl to make the certificates and read a server's. A
//! certificate replaced and SIGHUP sent: new connections get the new one, a connection
//! already up goes on. `--tls-self-signed` prints the fingerprint it serves.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Lines, Serve, curl, peer_script, python, run_python};

const ANSWER: Duration = Duration::from_secs(10);

/// A directory of the test's own, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("roomcast-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("openssl (scripts/test installs it): {e}"));
    assert!(status.success(), "openssl {args:?}");
}

/// A test CA (`ca.crt`, `ca.key` in `dir`), as a deployment's certificates come from one.
fn ca(dir: &Dir) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.path("ca.crt"), dir.path("ca.key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=roomcast test CA",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
    ]);
    (crt, key)
}

/// A certificate for 127.0.0.1 and localhost signed by the test CA: `NAME.crt` and
/// `NAME.key` in `dir`.
fn certificate(dir: &Dir, name: &str, (ca_crt, ca_key): &(PathBuf, PathBuf)) -> (PathBuf, PathBuf) {
    let (crt, key, csr, ext) = (
        dir.path(&format!("{name}.crt")),
        dir.path(&format!("{name}.key")),
        dir.path(&format!("{name}.csr")),
        dir.path(&format!("{name}.ext")),
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        &format!("/CN={name}"),
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        ca_crt.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        ext.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
    ]);
    (crt, key)
}

/// A certificate's SHA-256 fingerprint, as openssl prints it (`AB:CD:...`).
fn fingerprint_of(crt: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(crt)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().rsplit('=').next().unwrap().to_owned()
}

fn client_script() -> PathBuf {
    peer_script("tls_client.py")
}

#[test]
fn https_and_wss_share_the_port_with_real_clients() {
    let dir = Dir::new("serve");
    let authority = ca(&dir);
    let (crt, key) = certificate(&dir, "a", &authority);
    let s = Serve::start(&[
        "--tls-cert",
        crt.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let base = format!("https://127.0.0.1:{}", s.addr.port());
    let ca = authority.0.to_str().unwrap();
    let (ok, body) = curl(&["--cacert", ca, &format!("{base}/healthz")]);
    assert!(ok && body == "ok\n", "{body:?}");
    let (ok, body) = curl(&[
        "--cacert",
        ca,
        &format!("{base}/poll?room=secure&timeout_ms=0"),
    ]);
    assert!(ok && body.contains("\"welcome\""), "{body}");
    // Plain HTTP on the TLS port is not served; an unknown CA is refused by the client.
    let (ok, _) = curl(&[&format!("http://127.0.0.1:{}/healthz", s.addr.port())]);
    assert!(!ok, "plain HTTP answered on the TLS port");
    let (ok, _) = curl(&[&format!("{base}/healthz")]);
    assert!(!ok, "curl trusted a self-signed certificate by itself");
    let wss_url = format!("wss://127.0.0.1:{}/ws", s.addr.port());
    let stdout = run_python(client_script(), &[&wss_url, ca]);
    assert!(stdout.contains(&fingerprint_of(&crt)), "{stdout}");
    // Our CLI over wss:// and https://: with --cacert, with --insecure, and refused
    // without either (the system roots do not vouch for this certificate).
    let port = s.addr.port();
    let wss = format!("wss://127.0.0.1:{port}/ws");
    let https = format!("https://127.0.0.1:{port}");
    for (url, trust) in [
        (&wss, vec!["--cacert", ca]),
        (&wss, vec!["--insecure"]),
        (&https, vec!["--cacert", ca]),
    ] {
        let out = Command::new(BIN)
            .args(["publish", url.as_str(), "--room", "secure", "hi"])
            .args(&trust)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{url} {trust:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for url in [&wss, &https] {
        let out = Command::new(BIN)
            .args(["publish", url.as_str(), "--room", "secure", "hi"])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{url}: a certificate no root vouches for was trusted"
        );
    }
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_connections() {
    let dir = Dir::new("reload");
    let authority = ca(&dir);
    let (a_crt, a_key) = certificate(&dir, "a", &authority);
    let (b_crt, b_key) = certificate(&dir, "b", &authority);
    // The files the server reads: A now, B after the reload.
    let (crt, key) = (dir.path("server.crt"), dir.path("server.key"));
    std::fs::copy(&a_crt, &crt).unwrap();
    std::fs::copy(&a_key, &key).unwrap();
    let both = authority.0.clone();
    let s = Serve::start(&[
        "--tls-cert",
        crt.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let mut client = Command::new(python())
        .arg(client_script())
        .arg(format!("wss://127.0.0.1:{}/ws", s.addr.port()))
        .arg(&both)
        .arg("--hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::spawn(client.stdout.take().unwrap());
    let first = lines.next_within(ANSWER, "the first fingerprint");
    assert_eq!(first, format!("fingerprint {}", fingerprint_of(&a_crt)));
    // A broken pair is refused: the old certificate stays.
    std::fs::write(&key, b"not a key").unwrap();
    let kill = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &s.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    kill("-HUP");
    let refused = (0..20)
        .map(|_| s.stderr.next_within(ANSWER, "the refused reload"))
        .find(|l| l.contains("reload"))
        .unwrap();
    assert!(refused.contains("not reloaded"), "{refused}");
    std::fs::copy(&b_crt, &crt).unwrap();
    std::fs::copy(&b_key, &key).unwrap();
    kill("-HUP");
    std::thread::sleep(Duration::from_millis(300));
    let mut stdin = client.stdin.take().unwrap();
    writeln!(stdin, "reloaded").unwrap();
    assert_eq!(
        lines.next_within(ANSWER, "the old connection's answer"),
        "old connection still answers"
    );
    let second = lines.next_within(ANSWER, "the second fingerprint");
    assert_eq!(second, format!("fingerprint {}", fingerprint_of(&b_crt)));
    assert_eq!(lines.next_within(ANSWER, "the end"), "all scenarios passed");
    assert!(client.wait().unwrap().success());
}

#[test]
fn a_self_signed_certificate_prints_the_fingerprint_it_serves() {
    let s = Serve::start(&["--tls-self-signed"]);
    let line = s.stderr.next_within(ANSWER, "the fingerprint line");
    let printed = line
        .rsplit("fingerprint ")
        .next()
        .unwrap_or_else(|| panic!("{line}"))
        .trim()
        .to_owned();
    let (ok, body) = curl(&[
        "-k",
        &format!("https://127.0.0.1:{}/healthz", s.addr.port()),
    ]);
    assert!(ok && body == "ok\n", "{body:?}");
    // What the server presents, read by openssl.
    let served = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
            s.addr.port()
        ))
        .output()
        .unwrap();
    let served = String::from_utf8_lossy(&served.stdout);
    assert_eq!(
        served.trim().rsplit('=').next(),
        Some(printed.as_str()),
        "{line}"
    );
}

/// TLS records no good client sends, written one by one by `tls_faults.py`: the session
/// closed at the hand-over to the worker, close_notify with garbage after it, a record
/// with a flipped bit (answered with an alert). One worker and one connection allowed per
/// address, so a worker stuck in a loop, a slot never given back, or a broken record left
/// behind for the next connection (as the worker's scratch buffer once did) fails the
/// connection that follows each.
#[test]
fn broken_tls_records_end_their_connection_and_nothing_else() {
    let s = Serve::start(&[
        "--tls-self-signed",
        "--set",
        "server.workers=1",
        "--set",
        "limits.exempt_loopback=false",
        "--set",
        "limits.max_connections_per_ip=1",
    ]);
    let port = s.addr.port().to_string();
    run_python(peer_script("tls_faults.py"), &["127.0.0.1", &port]);
}

/// `--cacert` with a file that holds no certificate is an error naming the file, not a
/// client that trusts nothing (or, worse, falls back to something).
#[test]
fn a_cacert_file_without_certificates_is_an_error() {
    let dir = Dir::new("empty-cacert");
    let empty = dir.path("empty.pem");
    std::fs::write(&empty, b"").unwrap();
    let s = Serve::start(&["--tls-self-signed"]);
    let wss = format!("wss://127.0.0.1:{}/ws", s.addr.port());
    let out = Command::new(BIN)
        .args(["publish", &wss, "--room", "a", "hi", "--cacert"])
        .arg(&empty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no certificate") && stderr.contains(empty.to_str().unwrap()),
        "{stderr}"
    );
}
