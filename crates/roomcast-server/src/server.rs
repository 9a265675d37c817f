//! The listener and its accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use roomcast_ws::tokio::WebSocketConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::ServerConfig;
use crate::conn;
use crate::error::ServerError;

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) websocket: WebSocketConfig,
    /// Set when the node stops accepting: `/healthz` answers 503.
    pub(crate) draining: AtomicBool,
}

/// A bound server, ready to [`Server::run`].
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

/// Stops a running [`Server`] from elsewhere (a signal handler, a test).
#[derive(Clone, Debug)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Asks the server to stop accepting and return from [`Server::run`].
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

impl Server {
    /// Binds the listen address.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let websocket = config.websocket();
        let shared = Arc::new(Shared {
            config,
            websocket,
            draining: AtomicBool::new(false),
        });
        Ok(Self {
            listener,
            shared,
            stop: watch::Sender::new(false),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        Ok(self.listener.local_addr()?)
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.clone())
    }

    /// Accepts connections until shut down, each in its own task.
    pub async fn run(self) -> Result<(), ServerError> {
        let Self {
            listener,
            shared,
            stop,
        } = self;
        let mut stopped = stop.subscribe();
        info!(addr = %listener.local_addr()?, echo = shared.config.echo, "listening");
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tokio::spawn(conn::handle(stream, peer, shared.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors or memory: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                _ = async { stopped.wait_for(|stop| *stop).await.map(|_| ()) } => break,
            }
        }
        shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        info!("stopped accepting");
        Ok(())
    }
}
