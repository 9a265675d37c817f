//! The brokers the scale-out tests run against, started here from Debian's packages on
//! free loopback ports and stopped by their process ids: one `redis-server`, a Redis
//! Cluster of three primaries with one replica each (`redis-server --cluster-enabled
//! yes`, joined by `redis-cli --cluster create`), or one `nats-server -js` with its store
//! in a directory of its own.
//!
//! Shared by `crates/roomcast-server/tests/broker_redis.rs` (in-process nodes) and
//! `crates/roomcast/tests/cluster.rs` (`roomcast serve` processes behind HAProxy), each
//! including it with `#[path]`. Blocking calls only: it is used from both kinds of test.

#![allow(dead_code)]

use std::io::Write as _;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Declares, for each test function `name(kind)` of the including file, a module `name`
/// with one test per broker: `name::redis` and `name::redis_cluster`. The including file
/// has `Kind` in scope (`use brokers::Kind`).
macro_rules! on_every_broker {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$name(super::Kind::Redis).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_cluster() {
                super::$name(super::Kind::RedisCluster).await
            }
        }
    )*};
}

/// Declares, for each test function `name(kind)` given, `on_nats::name`: the same test
/// on NATS with JetStream. (Tests that read or change Redis itself are not given.)
macro_rules! on_nats_too {
    ($($name:ident),* $(,)?) => {
        mod on_nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Nats).await
                }
            )*
        }
    };
}

/// Which broker a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Redis,
    RedisCluster,
    Nats,
}

/// One broker process.
struct Proc {
    port: u16,
    child: Option<Child>,
}

/// A running broker; every process is killed when it is dropped.
pub struct Broker {
    pub kind: Kind,
    procs: Vec<Proc>,
    dir: PathBuf,
    aof: bool,
    /// Lines of `nats.conf` (NATS only).
    conf: String,
    /// On NATS, what the nodes connect through (see [`Broker::proxied`]).
    proxy: Option<Proxy>,
}

/// How long the cluster takes to notice a dead primary (`cluster-node-timeout`).
pub const NODE_TIMEOUT_MS: u64 = 1000;
const START: Duration = Duration::from_secs(30);

impl Broker {
    /// Starts a broker of `kind`; with `aof`, every write is on disk before Redis
    /// answers it (`appendfsync always`), so a restart keeps what was acknowledged.
    pub fn start(kind: Kind, aof: bool) -> Self {
        Self::start_with(kind, aof, "")
    }

    /// [`Broker::start`], NATS given `conf` as lines of its configuration file (one
    /// Redis takes its settings with `CONFIG SET` instead).
    pub fn start_with(kind: Kind, aof: bool, conf: &str) -> Self {
        let count = match kind {
            Kind::Redis | Kind::Nats => 1,
            Kind::RedisCluster => 6,
        };
        let ports = free_ports(count, kind == Kind::RedisCluster);
        let dir = std::env::temp_dir().join(format!(
            "roomcast-broker-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut b = Self {
            kind,
            procs: ports
                .into_iter()
                .map(|port| Proc { port, child: None })
                .collect(),
            dir,
            aof,
            conf: conf.to_owned(),
            proxy: None,
        };
        b.spawn();
        if kind == Kind::RedisCluster {
            let addrs: Vec<String> = b.ports().iter().map(|p| format!("127.0.0.1:{p}")).collect();
            let out = Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&addrs)
                .args(["--cluster-replicas", "1", "--cluster-yes"])
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("redis-cli (Debian package redis-tools): {e}"));
            assert!(
                out.status.success(),
                "redis-cli --cluster create: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            b.wait_healthy();
        }
        b
    }

    /// Starts every process that is not running (again, on its own directory: a restart
    /// keeps the cluster's configuration, and with AOF its data), and waits until the
    /// broker serves.
    pub fn spawn(&mut self) {
        for i in 0..self.procs.len() {
            if self.procs[i].child.is_none() {
                self.spawn_one(i);
            }
        }
        if self.kind == Kind::RedisCluster && self.cluster_created() {
            self.wait_healthy();
        }
    }

    fn spawn_one(&mut self, i: usize) {
        let port = self.procs[i].port;
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        if self.kind == Kind::Nats {
            return self.spawn_nats(i, &dir);
        }
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"));
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if self.kind == Kind::RedisCluster {
            cmd.args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server (Debian package; scripts/test installs it): {e}")
            });
        self.procs[i].child = Some(child);
        wait_listening(port, "redis-server");
    }

    /// `nats-server -js` on the process's port, its JetStream store in `dir`: kept
    /// across restarts with `aof` (the store is on disk as the AOF is), lost without.
    fn spawn_nats(&mut self, i: usize, dir: &std::path::Path) {
        let port = self.procs[i].port;
        if !self.aof {
            let _ = std::fs::remove_dir_all(dir.join("jetstream"));
        }
        let conf = dir.join("nats.conf");
        std::fs::write(&conf, &self.conf).unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .arg("-sd")
            .arg(dir)
            .arg("-l")
            .arg(dir.join("nats.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("nats-server (Debian package; scripts/test installs it): {e}")
            });
        self.procs[i].child = Some(child);
        // The client port opens once JetStream has read its store.
        wait_listening(port, "nats-server");
    }

    fn cluster_created(&self) -> bool {
        self.procs.iter().any(|p| {
            self.dir
                .join(p.port.to_string())
                .join("nodes.conf")
                .exists()
        }) && self
            .cli(self.procs[0].port, &["CLUSTER", "INFO"])
            .contains("cluster_known_nodes:6")
    }

    /// Waits until every running node says the cluster is ok and every primary has its
    /// replica attached.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + START;
        loop {
            let running: Vec<u16> = self
                .procs
                .iter()
                .filter(|p| p.child.is_some())
                .map(|p| p.port)
                .collect();
            let ok = running.iter().all(|&p| {
                self.cli(p, &["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
            });
            // Attached and done with the first sync (`state=online`, not `wait_bgsave`).
            let replicated = self.primaries().iter().all(|&p| {
                let info = self.cli(p, &["INFO", "replication"]);
                info.contains("connected_slaves:1") && info.contains("state=online")
            });
            if ok && replicated {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The URL a node is given (`--broker`).
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", self.procs[0].port),
            Kind::Nats => {
                let port = self.proxy.as_ref().map_or(self.procs[0].port, |p| p.port);
                format!("nats://127.0.0.1:{port}")
            }
            Kind::RedisCluster => {
                let seeds: Vec<String> = self
                    .ports()
                    .iter()
                    .map(|p| format!("127.0.0.1:{p}"))
                    .collect();
                format!("redis+cluster://{}", seeds.join(","))
            }
        }
    }

    /// Every process's port.
    pub fn ports(&self) -> Vec<u16> {
        self.procs.iter().map(|p| p.port).collect()
    }

    /// `redis-cli -p PORT ARGS...`'s output (empty when it fails).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        // Bounded: a stopped or wedged node must fail the test, not hang it.
        Command::new("timeout")
            .args([
                "10",
                "redis-cli",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// `args` on every running process (a `CLIENT KILL`, a `CONFIG SET`).
    pub fn cli_all(&self, args: &[&str]) {
        for p in self.procs.iter().filter(|p| p.child.is_some()) {
            self.cli(p.port, args);
        }
    }

    /// The ports of the running primaries (the one Redis, on its own).
    pub fn primaries(&self) -> Vec<u16> {
        if self.kind != Kind::RedisCluster {
            return vec![self.procs[0].port];
        }
        self.procs
            .iter()
            .filter(|p| p.child.is_some())
            .map(|p| p.port)
            .filter(|&p| self.cli(p, &["ROLE"]).starts_with("master"))
            .collect()
    }

    /// The port of the primary that holds `key`'s slot now.
    pub fn primary_of(&self, key: &str) -> u16 {
        if self.kind == Kind::Redis {
            return self.procs[0].port;
        }
        let slot = self.slot_of(key);
        if let Some(p) = self.primaries().into_iter().find(|&p| self.owns(p, slot)) {
            return p;
        }
        panic!("no primary holds slot {slot}");
    }

    /// Whether the node on `port` serves `slot`: the `myself` line of its `CLUSTER NODES`
    /// lists its slot ranges from the ninth field on.
    fn owns(&self, port: u16, slot: u16) -> bool {
        let nodes = self.cli(port, &["CLUSTER", "NODES"]);
        let Some(me) = nodes.lines().find(|l| l.contains("myself")) else {
            return false;
        };
        me.split_whitespace().skip(8).any(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            match (a.parse::<u16>(), b.parse::<u16>()) {
                (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                _ => false,
            }
        })
    }

    /// The port of the replica of the primary on `port` (from its `INFO replication`).
    pub fn replica_of(&self, port: u16) -> u16 {
        let info = self.cli(port, &["INFO", "replication"]);
        info.lines()
            .find(|l| l.starts_with("slave0:"))
            .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("port=")))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no replica of {port}: {info}"))
    }

    /// Waits until the replica of the primary on `port` has everything the primary wrote
    /// (its acknowledged offset is the primary's replication offset).
    pub fn wait_replica_synced(&self, port: u16) {
        let field = |info: &str, name: &str| -> Option<u64> {
            info.split([',', '\n', '\r'])
                .find_map(|f| f.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        let deadline = Instant::now() + START;
        loop {
            let info = self.cli(port, &["INFO", "replication"]);
            let master = field(&info, "master_repl_offset:");
            let replica = info
                .lines()
                .find(|l| l.starts_with("slave0:"))
                .and_then(|l| field(l, "offset="));
            if master.is_some() && master == replica {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica of {port} did not catch up: {info}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to the process on `port`.
    pub fn pause_port(&self, port: u16, stop: bool) {
        let proc = self.procs.iter().find(|p| p.port == port);
        if let Some(c) = proc.and_then(|p| p.child.as_ref()) {
            signal(c.id(), stop);
        }
    }

    /// Waits until the node on `port` is a primary (a replica promoted by a failover).
    pub fn wait_primary(&self, port: u16) {
        let deadline = Instant::now() + START;
        while !self.cli(port, &["ROLE"]).starts_with("master") {
            assert!(Instant::now() < deadline, "{port} was not promoted");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether any process's log has a line containing `text`.
    pub fn log_contains(&self, text: &str) -> bool {
        self.procs.iter().any(|p| {
            let name = match self.kind {
                Kind::Nats => "nats.log",
                Kind::Redis | Kind::RedisCluster => "redis.log",
            };
            std::fs::read_to_string(self.dir.join(p.port.to_string()).join(name))
                .is_ok_and(|log| log.contains(text))
        })
    }

    /// The node id (`CLUSTER MYID`) of the process on `port`.
    pub fn node_id(&self, port: u16) -> String {
        self.cli(port, &["CLUSTER", "MYID"]).trim().to_owned()
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        let running = self.procs.iter().find(|p| p.child.is_some());
        self.cli(
            running.expect("a running node").port,
            &["CLUSTER", "KEYSLOT", key],
        )
        .trim()
        .parse()
        .expect("CLUSTER KEYSLOT")
    }

    /// Moves `slot` from the primary on `from` to the one on `to` while clients use it,
    /// as `redis-cli --cluster reshard` does for each slot: importing and migrating
    /// marks, its keys moved with `MIGRATE` a few at a time, then the new owner told to
    /// every primary.
    pub fn move_slot(&self, slot: u16, from: u16, to: u16) {
        let (src, dst) = (self.node_id(from), self.node_id(to));
        let slot_s = slot.to_string();
        let ok = |out: String, what: &str| assert!(out.contains("OK"), "{what}: {out}");
        ok(
            self.cli(to, &["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &src]),
            "importing",
        );
        ok(
            self.cli(from, &["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &dst]),
            "migrating",
        );
        loop {
            let keys = self.cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot_s, "2"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let to_s = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_s, "", "0", "5000", "KEYS"];
            args.extend(keys);
            let out = self.cli(from, &args);
            assert!(
                out.contains("OK") || out.contains("NOKEY"),
                "MIGRATE: {out}"
            );
        }
        // The new owner first, then the old one, then the others (redis-cli's order).
        let mut tell = vec![to, from];
        tell.extend(
            self.primaries()
                .into_iter()
                .filter(|p| *p != to && *p != from),
        );
        for p in tell {
            ok(
                self.cli(p, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &dst]),
                "setslot node",
            );
        }
    }

    /// `kill -9` of every process.
    pub fn kill(&mut self) {
        for i in 0..self.procs.len() {
            self.kill_one(i);
        }
    }

    /// `kill -9` of the process on `port`.
    pub fn kill_port(&mut self, port: u16) {
        if let Some(i) = self.procs.iter().position(|p| p.port == port) {
            self.kill_one(i);
        }
    }

    fn kill_one(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to every process: a broker that hangs.
    pub fn pause(&self, stop: bool) {
        for c in self.procs.iter().filter_map(|p| p.child.as_ref()) {
            signal(c.id(), stop);
        }
    }

    /// The seed nodes of the cluster (every process), as `redis://HOST:PORT`.
    pub fn seeds(&self) -> Vec<String> {
        self.ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A stopped process must be let go on before it can die.
        self.pause(false);
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Broker {
    /// On NATS, the nodes (given [`Broker::url`] from now on) connect through a TCP
    /// proxy of the test's, which [`Broker::cut`] can cut: a NATS server cannot drop
    /// one client's connection on demand before 2.10. Nothing changes on Redis.
    pub fn proxied(mut self) -> Self {
        if self.kind == Kind::Nats {
            self.proxy = Some(Proxy::start(self.procs[0].port));
        }
        self
    }

    /// Cuts every connection through the proxy (both ways, as a network fault does);
    /// new connections pass again at once.
    pub fn cut(&self) {
        let proxy = self.proxy.as_ref().expect("Broker::proxied first");
        for s in proxy.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// A TCP proxy on a free loopback port to `127.0.0.1:upstream`, one thread per
/// direction of each connection.
struct Proxy {
    port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (held, stopped) = (conns.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                // The broker down: the client sees its connection closed, as it would.
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.flush();
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                };
                let mut held = held.lock().unwrap();
                held.retain(|s| s.peer_addr().is_ok());
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Self { port, conns, stop }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Waits until `what` accepts connections on `port`.
fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + START;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} on {port} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGSTOP (`true`) or SIGCONT (`false`) to process `pid`: a process that hangs, and
/// wakes.
pub fn signal(pid: u32, stop: bool) {
    let signal = if stop { "-STOP" } else { "-CONT" };
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// `n` free loopback ports; for a cluster, each with its bus port (+10000) free too.
fn free_ports(n: usize, bus: bool) -> Vec<u16> {
    // Never the same port twice in one test process: a node of another test whose broker
    // was stopped keeps dialling that broker's port, and would join (and show up in) a
    // broker started there later.
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        held.push(l);
        if given.contains(&port) || (bus && given.contains(&port.wrapping_add(10000))) {
            continue;
        }
        if bus {
            let Some(bus) = port.checked_add(10000) else {
                continue;
            };
            match std::net::TcpListener::bind(("127.0.0.1", bus)) {
                Ok(b) => held.push(b),
                Err(_) => continue,
            }
        }
        ports.push(port);
    }
    given.extend(&ports);
    if bus {
        given.extend(ports.iter().map(|p| p + 10000));
    }
    ports
}
