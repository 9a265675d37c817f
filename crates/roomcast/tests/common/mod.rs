//! Shared by the binary's tests: the bounded async wait, a child's output read line by
//! line with bounded waits, and the line `roomcast serve` prints once it listens.

#![allow(dead_code)]

use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_roomcast");

/// Awaits `fut` at most `bound`; panics naming `what` did not happen.
pub async fn within<T>(what: &str, bound: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(bound, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {bound:?}"))
}

/// What the first line of `roomcast serve`'s stdout is for: `listening on ADDR`.
pub const LISTENING: &str = "`listening on ADDR` from roomcast serve";

/// The address in `roomcast serve`'s `listening on ADDR` line.
pub fn listening_addr(line: &str) -> SocketAddr {
    line.strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not `listening on ADDR`: {line:?}"))
}

/// The lines a child writes to a pipe, read on a thread so that a wait can be bounded.
pub struct Lines(mpsc::Receiver<String>);

impl Lines {
    pub fn spawn(pipe: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self(rx)
    }

    /// The next line, within `bound`; panics naming `what` was awaited.
    pub fn next_within(&self, bound: Duration, what: &str) -> String {
        match self.0.recv_timeout(bound) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no {what} within {bound:?}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the output ended before {what}")
            }
        }
    }

    /// Everything written until the pipe closes, within `bound`.
    pub fn rest_within(&self, bound: Duration, what: &str) -> String {
        let deadline = Instant::now() + bound;
        let mut out = String::new();
        loop {
            match self
                .0
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    out.push_str(&line);
                    out.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return out,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{what} did not end within {bound:?}; so far: {out}")
                }
            }
        }
    }
}

/// `roomcast serve --listen 127.0.0.1:0 --log warn` with `args`, its stdout and stderr
/// read line by line; killed by its pid on drop.
pub struct Serve {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub stderr: Lines,
    _stdout: Lines,
}

impl Serve {
    /// Starts it and waits for its `listening on` line.
    pub fn start(args: &[&str]) -> Self {
        use std::process::{Command, Stdio};
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{BIN}: {e}"));
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            panic!("no pipes to roomcast serve");
        };
        let (stdout, stderr) = (Lines::spawn(out), Lines::spawn(err));
        let addr = listening_addr(&stdout.next_within(Duration::from_secs(10), LISTENING));
        Self {
            child,
            addr,
            stderr,
            _stdout: stdout,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python with the test peers' packages (`ROOMCAST_TEST_PYTHON`, set by the test
/// command to its venv), else `python3`.
pub fn python() -> String {
    std::env::var("ROOMCAST_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// A Python peer script of `tests/peers/python`.
pub fn peer_script(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/peers/python")
        .join(name)
}

/// Runs a Python peer script to its end; it must succeed and print "all scenarios
/// passed". Returns its stdout.
pub fn run_python(script: std::path::PathBuf, args: &[&str]) -> String {
    let out = std::process::Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("all scenarios passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `curl -sS --max-time 10` with `args`: whether it succeeded, and its stdout.
pub fn curl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("curl (the test command installs it): {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
