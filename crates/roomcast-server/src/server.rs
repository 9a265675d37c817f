//! The node: its listeners and worker threads.

use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, watch};

use crate::auth::Auth;
use crate::config::Config;
use crate::engine::{Engine, Mesh};
use crate::error::ServerError;
use crate::shared::Shared;
use crate::stats::Stats;
use crate::tls::Tls;
use crate::worker;

/// A bound node, ready to run.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    /// The broker's client, when `broker.url` names one (opened, and so checked, at bind).
    broker: Option<crate::engine::redis::Target>,
}

/// Stops a running [`Server`] from elsewhere (a signal handler, a test).
#[derive(Clone, Debug)]
pub struct ShutdownHandle(watch::Sender<bool>);

/// Reads a running [`Server`]'s TLS certificate and key files again: connections made from
/// then on get the new certificate, those up keep theirs.
#[derive(Clone, Debug)]
pub struct TlsReloader(Arc<Shared>);

impl TlsReloader {
    /// Whether there is anything to reload: TLS from certificate files.
    pub fn watches_files(&self) -> bool {
        self.0.tls.as_ref().is_some_and(|t| t.reloadable())
    }

    /// Reloads; on an error the certificate in use stays. Without TLS, does nothing.
    pub fn reload(&self) -> Result<(), crate::TlsError> {
        match &self.0.tls {
            Some(tls) => {
                tls.reload()?;
                tracing::info!(fingerprint = %tls.fingerprint(), "tls: certificate reloaded");
                Ok(())
            }
            None => Ok(()),
        }
    }
}

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
        let broker = match config.broker.url.as_str() {
            "" => None,
            url => Some(
                crate::engine::redis::Target::parse(url)
                    .map_err(|e| ServerError::Broker(format!("{url}: {e}")))?,
            ),
        };
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
        let address = addr.to_string();
        if config.api.key.is_empty() && config.api.keys.is_empty() {
            tracing::info!(
                "the HTTP API has no key (api.key, api.keys): it answers requests from this machine only"
            );
        }
        let auth = Auth::new(&config.auth)?;
        if auth.is_required() {
            tracing::info!("auth: a valid token is required of every client");
        } else if auth.is_on() {
            tracing::info!("auth: tokens are checked when given; clients without one are let in");
        }
        let tls = if config.tls.self_signed {
            let tls = Tls::self_signed(config.server.http2)?;
            // On stderr whatever the log level: who connects has to check it.
            eprintln!(
                "tls: a self-signed certificate for localhost, 127.0.0.1 and ::1 (development only); SHA-256 fingerprint {}",
                tls.fingerprint()
            );
            Some(tls)
        } else if config.tls.is_on() {
            let tls = Tls::from_files(
                std::path::Path::new(&config.tls.cert_file),
                std::path::Path::new(&config.tls.key_file),
                config.server.http2,
            )?;
            tracing::info!(fingerprint = %tls.fingerprint(), "tls: wss:// and https:// on");
            Some(tls)
        } else {
            None
        };
        let shared = Arc::new(Shared::new(config, auth, tls, node_id, address, workers));
        Ok(Self {
            listeners,
            shared,
            stop: watch::Sender::new(false),
            broker,
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

    /// A handle that reads the TLS certificate and key again (on SIGHUP).
    pub fn tls_reloader(&self) -> TlsReloader {
        TlsReloader(self.shared.clone())
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
            broker,
        } = self;
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..listeners.len())
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        let mesh: Mesh = senders.into();
        let (engine, broker) = match broker {
            None => (Engine::Memory, None),
            Some(target) => {
                let settings = crate::engine::redis::Settings {
                    url: shared.config.broker.url.clone(),
                    node: Arc::from(shared.node_id.as_str()),
                    instance: Arc::from(shared.instance.as_str()),
                    address: shared.address.clone(),
                    history: shared.config.history(),
                    presence_ttl_ms: shared.config.broker.presence_ttl_ms,
                    presence_batch_ms: shared.config.rooms.presence_batch_ms,
                    node_ttl_ms: shared.config.broker.node_ttl_ms,
                    wait_replicas: shared.config.broker.wait_replicas,
                    wait_timeout_ms: shared.config.broker.wait_timeout_ms,
                    max_rooms: shared.config.limits.max_rooms,
                };
                let (handle, thread) = crate::engine::redis::start(
                    settings,
                    target,
                    mesh.clone(),
                    shared.stats.clone(),
                    shared.metrics.clone(),
                )?;
                (Engine::Redis(handle), Some(thread))
            }
        };
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
        let node = worker::Node {
            shared: shared.clone(),
            mesh,
            engine,
            serve: crate::conn::accept::serve,
        };
        let mut threads = Vec::new();
        for (i, (listener, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
            threads.push(worker::spawn(
                i,
                listener,
                node.clone(),
                inbox,
                stop.subscribe(),
            )?);
        }
        // The workers hold the only handles to the engine and the inboxes now.
        drop(node);
        for t in threads {
            let _ = t.join();
        }
        // The broker engine stops once the workers' handles are gone, after sending what
        // they left queued (their members' leaves).
        if let Some(broker) = broker {
            let _ = broker.join();
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
