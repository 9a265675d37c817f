//! How much one client may take: connections, handshakes and sessions per IP address,
//! messages and bytes per connection, publishes per client id. Token buckets and
//! counters only; the drivers ask before they admit, and answer the refusal.
//!
//! The client's address is the TCP peer's, or, when that peer is one of
//! `server.trusted_proxies` (a load balancer), the last address of its
//! `X-Forwarded-For`. Loopback clients are exempt while `limits.exempt_loopback` is on
//! (the default): benchmarks and the machine's own programs are not clients to protect
//! the node from.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::LimitSettings;

/// A token bucket: `rate` tokens a second, at most `burst` saved.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn full(burst: u64, now: Instant) -> Self {
        Self {
            tokens: burst as f64,
            last: now,
        }
    }

    /// Takes `n` tokens if there are that many (after refilling at `rate` per second).
    pub(crate) fn take(&mut self, n: f64, rate: u64, burst: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate as f64).min(burst as f64);
        self.last = now;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Addresses tracked before those with nothing open are forgotten.
const MAX_TRACKED: usize = 65_536;

/// What one address holds.
#[derive(Debug)]
struct PerIp {
    connections: u32,
    sessions: u32,
    handshakes: Bucket,
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("too many connections from this address (limits.max_connections_per_ip)")]
    Connections,
    #[error("too many handshakes from this address (limits.handshakes_per_second_per_ip)")]
    Handshakes,
    #[error("too many SSE and poll sessions from this address (limits.max_sessions_per_ip)")]
    Sessions,
    #[error("too many publishes from this client (limits.publishes_per_second_per_client)")]
    Publishes,
}

/// The node's per-address and per-client accounts.
#[derive(Debug)]
pub(crate) struct Limits {
    settings: LimitSettings,
    ips: Mutex<HashMap<IpAddr, PerIp>>,
    clients: Mutex<HashMap<Box<str>, Bucket>>,
}

impl Limits {
    pub(crate) fn new(settings: LimitSettings) -> Self {
        Self {
            settings,
            ips: Mutex::default(),
            clients: Mutex::default(),
        }
    }

    /// The settings.
    pub(crate) fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// Whether `ip` is held to the limits.
    pub(crate) fn applies(&self, ip: IpAddr) -> bool {
        !(self.settings.exempt_loopback && ip.is_loopback())
    }

    fn ips(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, PerIp>> {
        self.ips.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A WebSocket handshake from `ip`: refused past the handshake rate or the
    /// connection count; otherwise counted until [`Limits::release`].
    pub(crate) fn connect(&self, ip: IpAddr, now: Instant) -> Result<Option<IpAddr>, Refusal> {
        if !self.applies(ip) {
            return Ok(None);
        }
        let s = &self.settings;
        let burst = s.handshakes_per_second_per_ip.saturating_mul(2).max(1);
        let mut ips = self.ips();
        if ips.len() > MAX_TRACKED {
            // Many addresses (an IPv6 sweep): forget those with nothing open whose
            // bucket has refilled.
            let rate = s.handshakes_per_second_per_ip;
            ips.retain(|_, e| {
                let mut probe = e.handshakes;
                e.connections > 0 || e.sessions > 0 || !probe.take(burst as f64, rate, burst, now)
            });
        }
        let entry = ips.entry(ip).or_insert_with(|| PerIp {
            connections: 0,
            sessions: 0,
            handshakes: Bucket::full(burst, now),
        });
        if s.handshakes_per_second_per_ip > 0
            && !entry
                .handshakes
                .take(1.0, s.handshakes_per_second_per_ip, burst, now)
        {
            return Err(Refusal::Handshakes);
        }
        if s.max_connections_per_ip > 0 && entry.connections >= s.max_connections_per_ip {
            return Err(Refusal::Connections);
        }
        entry.connections += 1;
        Ok(Some(ip))
    }

    /// A new SSE stream or poll session from `ip`.
    pub(crate) fn open_session(&self, ip: IpAddr) -> Result<Option<IpAddr>, Refusal> {
        if !self.applies(ip) {
            return Ok(None);
        }
        let mut ips = self.ips();
        let burst = self
            .settings
            .handshakes_per_second_per_ip
            .saturating_mul(2)
            .max(1);
        let entry = ips.entry(ip).or_insert_with(|| PerIp {
            connections: 0,
            sessions: 0,
            handshakes: Bucket::full(burst, Instant::now()),
        });
        let max = self.settings.max_sessions_per_ip;
        if max > 0 && entry.sessions >= max {
            return Err(Refusal::Sessions);
        }
        entry.sessions += 1;
        Ok(Some(ip))
    }

    /// Gives back what [`Limits::connect`] or [`Limits::open_session`] counted.
    pub(crate) fn release(&self, ip: IpAddr, session: bool) {
        let mut ips = self.ips();
        if let Some(e) = ips.get_mut(&ip) {
            if session {
                e.sessions = e.sessions.saturating_sub(1);
            } else {
                e.connections = e.connections.saturating_sub(1);
            }
            // An address with nothing open and a refilled bucket is forgotten; one whose
            // bucket is still drawn on is kept, or reconnecting would reset its rate.
            let rate = self.settings.handshakes_per_second_per_ip;
            let burst = rate.saturating_mul(2).max(1);
            let mut probe = e.handshakes;
            let refilled = probe.take(burst as f64, rate, burst, Instant::now());
            if e.connections == 0 && e.sessions == 0 && (refilled || rate == 0) {
                ips.remove(&ip);
            }
        }
    }

    /// A publish by `client`: refused past `limits.publishes_per_second_per_client`
    /// (node-wide, over all its connections and sessions).
    pub(crate) fn publish(&self, client: &str, now: Instant) -> Result<(), Refusal> {
        let rate = self.settings.publishes_per_second_per_client;
        if rate == 0 {
            return Ok(());
        }
        let burst = self.settings.publish_burst.max(1);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() > 100_000 {
            // Forget full buckets rather than grow without end.
            clients.retain(|_, b| {
                let mut probe = *b;
                !probe.take(burst as f64, rate, burst, now)
            });
        }
        let bucket = clients
            .entry(client.into())
            .or_insert_with(|| Bucket::full(burst, now));
        if bucket.take(1.0, rate, burst, now) {
            Ok(())
        } else {
            Err(Refusal::Publishes)
        }
    }
}

/// The client's address: `peer`, or the last `X-Forwarded-For` hop when `peer` is a
/// trusted proxy (one that appends the address it saw, as HAProxy's `option forwardfor`
/// and nginx's `$proxy_add_x_forwarded_for` do: the last entry is the one it wrote).
pub(crate) fn client_ip(peer: IpAddr, headers: &http::HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|last| last.trim().parse().ok())
        .unwrap_or(peer)
}

/// Per connection: messages and bytes a second.
#[derive(Debug)]
pub(crate) struct Flow {
    messages: Bucket,
    bytes: Bucket,
    /// Messages refused in a row; past [`Flow::CLOSE_AFTER`] the connection is closed.
    refused: u32,
}

/// What to do with a message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    /// Refuse it (`rate_limited`).
    Refuse,
    /// The client goes on regardless: close with 4029.
    Close,
}

impl Flow {
    /// Refusals in a row after which the connection is closed.
    pub(crate) const CLOSE_AFTER: u32 = 100;

    pub(crate) fn new(s: &LimitSettings, now: Instant) -> Self {
        Self {
            messages: Bucket::full(s.messages_per_second.saturating_mul(2), now),
            bytes: Bucket::full(s.bytes_per_second.saturating_mul(2), now),
            refused: 0,
        }
    }

    /// Accounts one message of `len` bytes (a burst of twice the rate is allowed).
    pub(crate) fn message(&mut self, len: usize, s: &LimitSettings, now: Instant) -> Verdict {
        let ok_messages = s.messages_per_second == 0
            || self.messages.take(
                1.0,
                s.messages_per_second,
                s.messages_per_second.saturating_mul(2),
                now,
            );
        let ok_bytes = s.bytes_per_second == 0
            || self.bytes.take(
                len as f64,
                s.bytes_per_second,
                s.bytes_per_second.saturating_mul(2),
                now,
            );
        if ok_messages && ok_bytes {
            self.refused = 0;
            return Verdict::Pass;
        }
        self.refused += 1;
        if self.refused > Self::CLOSE_AFTER {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::full(4, t0);
        for _ in 0..4 {
            assert!(b.take(1.0, 2, 4, t0));
        }
        assert!(!b.take(1.0, 2, 4, t0));
        assert!(b.take(1.0, 2, 4, t0 + Duration::from_millis(500)));
        assert!(!b.take(1.0, 2, 4, t0 + Duration::from_millis(500)));
        // Ten idle seconds refill to the burst, not beyond.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..4 {
            assert!(b.take(1.0, 2, 4, later));
        }
        assert!(!b.take(1.0, 2, 4, later));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let mut h = http::HeaderMap::new();
        h.append(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7".parse().unwrap(),
        );
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(other, &h, &[proxy]), other);
        assert_eq!(
            client_ip(proxy, &h, &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, &http::HeaderMap::new(), &[proxy]), proxy);
    }
}
