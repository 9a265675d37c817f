//! What every worker of a node shares: the configuration, the counters, the drain state
//! and the HTTP sessions by id. The node (`crate::server`) creates it; the workers hold it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::auth::Auth;
use crate::config::Config;
use crate::limits::Limits;
use crate::member::HttpMember;
use crate::stats::Stats;
use crate::tls::Tls;

/// What every worker shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    /// Checks tokens.
    pub auth: Auth,
    /// TLS, when it is on.
    pub tls: Option<Tls>,
    /// Per-address and per-client accounts.
    pub limits: Limits,
    /// `server.trusted_proxies`, parsed.
    pub proxies: Vec<std::net::IpAddr>,
    /// The HTTP API's keys (`api.key`, `api.keys`), parsed.
    pub api_keys: Vec<crate::config::ApiKey>,
    pub stats: Arc<Stats>,
    /// The histograms of `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// The name sent in `welcome`.
    pub node_id: String,
    /// This process's random id (8 hex digits), the prefix of its session ids: another
    /// node that gets a `POST /cmd` for one of them knows where to forward it.
    pub instance: String,
    /// The address the node listens on.
    pub address: String,
    /// When the node started (ms since the Unix epoch).
    pub started_ms: u64,
    draining: AtomicBool,
    /// The same, for those who wait for it (an HTTP/2 connection's GOAWAY).
    drain_started: watch::Sender<bool>,
    /// Workers whose drain has not ended. A worker whose own connections are gone keeps
    /// accepting (and refusing with 503) until this is 0: closing its listener sooner
    /// would reset the connections the kernel had already queued on it.
    still_draining: watch::Sender<usize>,
    /// HTTP members by session id, for requests that land on another worker.
    sessions: Mutex<HashMap<Arc<str>, Arc<HttpMember>>>,
    /// Poll sessions the server ended, and why, for `http.poll_session_ttl_ms`: a poll
    /// that comes back with such a session's cursor is told, not given a new session.
    ended: Mutex<HashMap<Arc<str>, Ended>>,
}

/// Why a session ended (close code, reason) and when.
type Ended = (u16, Arc<str>, std::time::Instant);

/// Ended poll sessions remembered at most (past it, the oldest are not told).
const ENDED_MAX: usize = 65_536;

impl Shared {
    /// The state of a node of `workers` workers.
    pub(crate) fn new(
        config: Config,
        auth: Auth,
        tls: Option<Tls>,
        node_id: String,
        address: String,
        workers: usize,
    ) -> Self {
        Self {
            limits: Limits::new(config.limits.clone()),
            proxies: config.server.proxies(),
            // Checked when the configuration loaded; cannot fail here.
            api_keys: config.api.all_keys().unwrap_or_default(),
            metrics: crate::metrics::Metrics::new(config.metrics.enabled),
            config,
            auth,
            tls,
            stats: Arc::default(),
            node_id,
            instance: crate::random_id(crate::engine::redis::INSTANCE_LEN / 2),
            address,
            started_ms: crate::now_ms(),
            draining: AtomicBool::new(false),
            drain_started: watch::Sender::new(false),
            still_draining: watch::Sender::new(workers),
            sessions: Mutex::default(),
            ended: Mutex::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests(config: Config) -> Self {
        let auth = Auth::new(&config.auth).unwrap_or_else(|e| panic!("test keys: {e}"));
        Self::new(config, auth, None, "test".into(), "127.0.0.1:0".into(), 1)
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
        self.drain_started.send_replace(true);
    }

    /// Resolves once the node is draining (at once if it is).
    pub(crate) async fn draining(&self) {
        let mut started = self.drain_started.subscribe();
        let _ = started.wait_for(|d| *d).await;
    }

    /// A new session id: this node's instance, then 16 random bytes (hex).
    pub(crate) fn new_session_id(&self) -> String {
        format!("{}{}", self.instance, crate::random_id(16))
    }

    /// Whether `session` is an id of this node's (it may have ended).
    pub(crate) fn is_mine(&self, session: &str) -> bool {
        session.starts_with(&self.instance)
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

    /// Remembers that the server ended the poll session `session` with `code`.
    pub(crate) fn session_ended(&self, session: &Arc<str>, code: u16, reason: &Arc<str>) {
        let ttl = std::time::Duration::from_millis(self.config.http.poll_session_ttl_ms);
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        if ended.len() >= ENDED_MAX / 2 {
            ended.retain(|_, (_, _, at)| at.elapsed() < ttl);
        }
        if ended.len() < ENDED_MAX {
            let entry = (code, reason.clone(), std::time::Instant::now());
            ended.insert(session.clone(), entry);
        }
    }

    /// Why the server ended the poll session `session`, if it did not long ago.
    pub(crate) fn ended_session(&self, session: &str) -> Option<(u16, Arc<str>)> {
        let ttl = std::time::Duration::from_millis(self.config.http.poll_session_ttl_ms);
        let ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        ended
            .get(session)
            .filter(|(_, _, at)| at.elapsed() < ttl)
            .map(|(code, reason, _)| (*code, reason.clone()))
    }

    /// Open SSE streams and poll sessions.
    pub(crate) fn session_counts(&self) -> (i64, i64) {
        let sessions = self.sessions();
        let sse = sessions
            .values()
            .filter(|m| m.kind == crate::member::HttpKind::Sse)
            .count();
        (sse as i64, (sessions.len() - sse) as i64)
    }

    /// The HTTP member of a session, on whichever worker it lives.
    pub(crate) fn session(&self, session: &str) -> Option<Arc<HttpMember>> {
        self.sessions().get(session).cloned()
    }
}
