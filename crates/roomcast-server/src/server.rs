//! The node: its listeners and worker threads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::error::ServerError;
use crate::http::member::HttpMember;
use crate::stats::Stats;
use crate::worker::{self, Mesh};

/// What every worker shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub stats: Arc<Stats>,
    /// The name sent in `welcome`.
    pub node_id: String,
    draining: AtomicBool,
    /// Workers whose drain has not ended. A worker whose own connections are gone keeps
    /// accepting (and refusing with 503) until this is 0: closing its listener sooner
    /// would reset the connections the kernel had already queued on it.
    still_draining: watch::Sender<usize>,
    /// HTTP members by session id, for requests that land on another worker.
    sessions: Mutex<HashMap<Arc<str>, Arc<HttpMember>>>,
}

impl Shared {
    #[cfg(test)]
    pub(crate) fn for_tests(config: Config) -> Self {
        Self {
            config,
            stats: Arc::default(),
            node_id: "test".into(),
            draining: AtomicBool::new(false),
            still_draining: watch::Sender::new(1),
            sessions: Mutex::default(),
        }
    }

    /// Whether the node is stopping: `/healthz` answers 503 and new WebSocket
    /// handshakes are refused.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Tells the other workers this one's drain has ended, then waits until every
    /// worker's has.
    pub(crate) async fn drained(&self) {
        let mut all = self.still_draining.subscribe();
        self.still_draining
            .send_modify(|n| *n = n.saturating_sub(1));
        let _ = all.wait_for(|n| *n == 0).await;
    }

    /// Marks the node draining (idempotent). Each worker does it before it closes its
    /// connections, so no close it starts can miss the flag.
    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<HttpMember>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn sessions_insert(&self, member: &Arc<HttpMember>) {
        self.sessions()
            .insert(member.session.clone(), member.clone());
    }

    pub(crate) fn sessions_remove(&self, session: &str) {
        self.sessions().remove(session);
    }

    /// The HTTP member of a session, on whichever worker it lives.
    pub(crate) fn session(&self, session: &str) -> Option<Arc<HttpMember>> {
        self.sessions().get(session).cloned()
    }
}

/// A bound node, ready to run.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

/// Stops a running [`Server`] from elsewhere (a signal handler, a test).
#[derive(Clone, Debug)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Starts the drain: the node stops taking WebSocket clients, answers `/healthz` with
    /// 503, closes its clients with 1001 and returns from [`Server::run`] once they are
    /// gone or the drain timeout has passed.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

impl Server {
    /// Binds one listening socket per worker on the configured address (with
    /// `SO_REUSEPORT`, so the kernel spreads new connections over the workers).
    pub fn bind(config: Config) -> Result<Self, ServerError> {
        let workers = config.worker_count();
        let mut addr = config.server.listen;
        let mut listeners = Vec::with_capacity(workers);
        for _ in 0..workers {
            let listener = listen(addr).map_err(|source| ServerError::Bind { addr, source })?;
            // With port 0 the first bind picks the port; the others join it.
            addr = listener.local_addr()?;
            listeners.push(listener);
        }
        let node_id = match config.server.node_id.as_str() {
            "" => format!("node-{}", crate::random_id(4)),
            id => id.to_owned(),
        };
        let shared = Arc::new(Shared {
            config,
            stats: Arc::default(),
            node_id,
            draining: AtomicBool::new(false),
            still_draining: watch::Sender::new(workers),
            sessions: Mutex::default(),
        });
        Ok(Self {
            listeners,
            shared,
            stop: watch::Sender::new(false),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        let first = self
            .listeners
            .first()
            .ok_or_else(|| std::io::Error::other("no listener"))?;
        Ok(first.local_addr()?)
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.clone())
    }

    /// The node's counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Runs the workers until shut down and drained; blocks the calling thread.
    pub fn run_blocking(self) -> Result<(), ServerError> {
        let Self {
            listeners,
            shared,
            stop,
        } = self;
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..listeners.len())
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        let mesh: Mesh = senders.into();
        tracing::info!(addr = %listeners[0].local_addr()?, workers = listeners.len(), node = %shared.node_id, "listening");
        // Mark draining as soon as the stop is asked, before the workers start closing.
        let mut stopped = stop.subscribe();
        let draining = shared.clone();
        let watcher = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().build();
            if let Ok(rt) = runtime {
                rt.block_on(async {
                    let _ = stopped.wait_for(|s| *s).await;
                });
            }
            draining.set_draining();
        });
        let mut threads = Vec::new();
        for (i, (listener, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
            threads.push(worker::spawn(
                i,
                listener,
                shared.clone(),
                mesh.clone(),
                inbox,
                stop.subscribe(),
            )?);
        }
        drop(mesh);
        for t in threads {
            let _ = t.join();
        }
        // Every worker returned: either drained, or failed to start. Let the watcher go.
        stop.send_replace(true);
        let _ = watcher.join();
        tracing::info!("stopped");
        Ok(())
    }

    /// Runs the workers until shut down and drained. The node runs on threads of its
    /// own, not on the caller's runtime; dropping this future leaves it running (stop it
    /// with a [`ShutdownHandle`]).
    pub async fn run(self) -> Result<(), ServerError> {
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("roomcast-server".into())
            .spawn(move || {
                let _ = done.send(self.run_blocking());
            })?;
        finished
            .await
            .map_err(|_| ServerError::Io(std::io::Error::other("the server thread panicked")))?
    }
}

fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}
