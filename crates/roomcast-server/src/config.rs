//! Settings: the embedded defaults (`default.toml`), a file, the environment and flags.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use roomcast_ws::Config as WsConfig;
use roomcast_ws::tokio::WebSocketConfig;
use serde::Deserialize;

use crate::hub::HistoryLimits;

/// The default configuration, with a comment on every key.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{origin}: {source}")]
    Syntax {
        /// Where the text came from.
        origin: String,
        /// The parser's complaint.
        source: Box<toml::de::Error>,
    },
    /// A key that does not exist.
    #[error("{origin}: unknown setting `{key}` (see `roomcast config` for every setting)")]
    UnknownKey {
        /// Where it came from.
        origin: String,
        /// The key.
        key: String,
    },
    /// A value of the wrong type or out of range.
    #[error("{origin}: `{key}`: {reason}")]
    BadValue {
        /// Where it came from.
        origin: String,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// All settings of `roomcast serve`. `Config::default()` is [`DEFAULT_TOML`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// `[server]`.
    pub server: ServerSettings,
    /// `[websocket]`.
    pub websocket: WebSocketSettings,
    /// `[rooms]`.
    pub rooms: RoomSettings,
    /// `[http]`.
    pub http: HttpSettings,
    /// `[api]`.
    pub api: ApiSettings,
    /// `[broker]`.
    pub broker: BrokerSettings,
    /// `[limits]`.
    pub limits: LimitSettings,
    /// `[auth]`.
    pub auth: AuthSettings,
    /// `[tls]`.
    pub tls: TlsSettings,
    /// `[metrics]`.
    pub metrics: MetricsSettings,
}

/// `[metrics]`: see `default.toml` for each key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct MetricsSettings {
    pub enabled: bool,
}

/// `[tls]`: see `default.toml` for each key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct TlsSettings {
    pub cert_file: String,
    pub key_file: String,
    pub self_signed: bool,
}

impl TlsSettings {
    /// Whether TLS is on.
    pub fn is_on(&self) -> bool {
        self.self_signed || !self.cert_file.is_empty()
    }
}

/// `[auth]`: see `default.toml` for each key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct AuthSettings {
    pub jwt_secret: String,
    pub jwt_public_key_file: String,
    pub jwks_file: String,
    pub required: String,
    pub audience: String,
    pub issuer: String,
    pub leeway_ms: u64,
    pub expiry_warning_ms: u64,
}

impl AuthSettings {
    /// Whether any key is configured.
    pub fn has_key(&self) -> bool {
        !(self.jwt_secret.is_empty()
            && self.jwt_public_key_file.is_empty()
            && self.jwks_file.is_empty())
    }
}

/// `[limits]`: see `default.toml` for each key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct LimitSettings {
    pub max_presence_size: usize,
    pub exempt_loopback: bool,
    pub max_connections_per_ip: u32,
    pub handshakes_per_second_per_ip: u64,
    pub max_sessions_per_ip: u32,
    pub messages_per_second: u64,
    pub bytes_per_second: u64,
    pub publishes_per_second_per_client: u64,
    pub publish_burst: u64,
    pub max_rooms: usize,
}

/// `[broker]`: see `default.toml` for each key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct BrokerSettings {
    pub url: String,
    pub presence_ttl_ms: u64,
    pub node_ttl_ms: u64,
    pub wait_replicas: u32,
    pub wait_timeout_ms: u64,
}

impl BrokerSettings {
    /// What carries the rooms, as `/api/stats` and `/admin` name it: `memory` (no
    /// broker), `redis`, `redis-cluster` or `nats` (from the URL's scheme).
    pub fn kind(&self) -> &'static str {
        if self.url.is_empty() {
            "memory"
        } else if self.url.starts_with("redis+cluster://") {
            "redis-cluster"
        } else if self.url.starts_with("nats://") {
            "nats"
        } else {
            "redis"
        }
    }
}

/// `[http]`: see `default.toml` for each key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct HttpSettings {
    pub sse_heartbeat_ms: u64,
    pub poll_timeout_ms: u64,
    pub poll_max_events: usize,
    pub poll_session_ttl_ms: u64,
    pub max_body_size: usize,
}

/// `[api]`: see `default.toml` for each key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct ApiSettings {
    pub key: String,
    pub keys: Vec<String>,
}

/// What an HTTP API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiScope {
    /// `POST /api/publish`.
    Publish,
    /// `GET /api/rooms`, `/api/nodes`, a room's presence and history.
    Read,
    /// `POST /api/disconnect`.
    Disconnect,
    /// Everything, and a publish's `from` as given.
    Admin,
}

impl ApiScope {
    /// The scope's name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiScope::Publish => "publish",
            ApiScope::Read => "read",
            ApiScope::Disconnect => "disconnect",
            ApiScope::Admin => "admin",
        }
    }
}

/// One HTTP API key, parsed from `api.keys` (or `api.key`, named `api`, with `admin`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ApiKey {
    /// Its name: the `from` of what it publishes.
    pub name: String,
    /// The bearer secret.
    pub secret: String,
    /// What it may do.
    pub scopes: Vec<ApiScope>,
}

impl ApiKey {
    /// Whether the key has `scope` (`admin` has every one).
    pub fn allows(&self, scope: ApiScope) -> bool {
        self.scopes.contains(&ApiScope::Admin) || self.scopes.contains(&scope)
    }
}

/// The shortest `auth.jwt_secret` accepted (RFC 7518 section 3.2).
pub const MIN_JWT_SECRET: usize = 32;

/// The shortest secret `api.keys` accepts.
pub const MIN_API_SECRET: usize = 16;

impl ApiSettings {
    /// Every configured key: `api.key` (as `api`, with `admin`) and `api.keys`.
    pub fn all_keys(&self) -> Result<Vec<ApiKey>, String> {
        let mut keys = Vec::new();
        if !self.key.is_empty() {
            keys.push(ApiKey {
                name: "api".into(),
                secret: self.key.clone(),
                scopes: vec![ApiScope::Admin],
            });
        }
        for entry in &self.keys {
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(scopes), Some(secret)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err("each key is NAME:SCOPE+SCOPE:SECRET".into());
            };
            let name_ok = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !name_ok {
                return Err(format!("{name:?}: a name is 1 to 64 of A-Z a-z 0-9 _ . -"));
            }
            let scopes = scopes
                .split('+')
                .map(|s| match s {
                    "publish" => Ok(ApiScope::Publish),
                    "read" => Ok(ApiScope::Read),
                    "disconnect" => Ok(ApiScope::Disconnect),
                    "admin" => Ok(ApiScope::Admin),
                    other => Err(format!(
                        "{name}: unknown scope {other:?} (publish, read, disconnect, admin)"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if secret.len() < MIN_API_SECRET {
                return Err(format!(
                    "{name}: a secret is at least {MIN_API_SECRET} bytes"
                ));
            }
            if keys.iter().any(|k: &ApiKey| k.name == name) {
                return Err(format!("{name}: named twice"));
            }
            keys.push(ApiKey {
                name: name.into(),
                secret: secret.into(),
                scopes,
            });
        }
        Ok(keys)
    }
}

/// `[server]`: see `default.toml` for each key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub workers: usize,
    pub node_id: String,
    pub echo: bool,
    pub handshake_timeout_ms: u64,
    pub drain_timeout_ms: u64,
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: Vec<String>,
    pub proxy_protocol: bool,
    pub http2: bool,
    pub http2_max_streams: u32,
    pub http2_idle_timeout_ms: u64,
}

impl ServerSettings {
    /// `trusted_proxies`, parsed (checked when the configuration loaded).
    pub fn proxies(&self) -> Vec<std::net::IpAddr> {
        self.trusted_proxies
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

/// `[websocket]`: see `default.toml` for each key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct WebSocketSettings {
    pub max_message_size: usize,
    pub max_frame_size: usize,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub max_queued_bytes: usize,
    pub compression: bool,
    pub compression_threshold: usize,
    pub compression_context_takeover: bool,
    pub compression_window_bits: u8,
    pub compression_idle_release_ms: u64,
}

impl WebSocketSettings {
    /// After how long without a message to it a connection gives its compressor's state
    /// back: only with compression and context takeover on (without context takeover no
    /// state is held between messages), never when `compression_idle_release_ms` is 0.
    pub fn compressor_release(&self) -> Option<std::time::Duration> {
        (self.compression
            && self.compression_context_takeover
            && self.compression_idle_release_ms > 0)
            .then(|| std::time::Duration::from_millis(self.compression_idle_release_ms))
    }

    /// permessage-deflate as this node takes it, when `compression` is on.
    pub fn deflate(&self) -> Option<roomcast_ws::deflate::DeflateConfig> {
        self.compression.then(|| {
            let reset = !self.compression_context_takeover;
            roomcast_ws::deflate::DeflateConfig::default()
                .min_size(self.compression_threshold)
                .max_window_bits(self.compression_window_bits)
                .no_context_takeover(reset)
                .request_peer_no_context_takeover(reset)
        })
    }
}

/// `[rooms]`: see `default.toml` for each key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct RoomSettings {
    pub history_max_messages: usize,
    pub history_max_age_ms: u64,
    pub max_data_size: usize,
    pub presence_batch_ms: u64,
    pub max_rooms_per_connection: usize,
}

impl Default for Config {
    fn default() -> Self {
        // The embedded file is checked by a test; it cannot fail to load.
        Self::load(None, std::iter::empty(), &[])
            .unwrap_or_else(|e| panic!("embedded default.toml: {e}"))
    }
}

impl ServerSettings {
    /// The largest request head accepted.
    pub fn max_head(&self) -> usize {
        roomcast_ws::handshake::DEFAULT_MAX_HEAD
    }
}

impl Config {
    /// Loads the defaults, then `file`, then `env` (pairs of name and value, e.g.
    /// `std::env::vars()`; only `ROOMCAST_<SECTION>_<KEY>` names are looked at), then
    /// `overrides` (`section.key=value`), and checks the result.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let mut table = parse(DEFAULT_TOML, "default.toml")?;
        if let Some(path) = file {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: origin.clone(),
                source,
            })?;
            merge_file(&mut table, parse(&text, &origin)?, &origin)?;
        }
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("ROOMCAST_"))
            .collect();
        for (section, key) in keys(&table) {
            let name = format!("ROOMCAST_{}_{}", section.to_uppercase(), key.to_uppercase());
            if let Some((_, value)) = env.iter().find(|(k, _)| *k == name) {
                set(&mut table, &section, &key, value, &name)?;
            }
        }
        for o in overrides {
            let origin = format!("--set {o}");
            let (path, value) = o.split_once('=').ok_or_else(|| ConfigError::BadValue {
                origin: origin.clone(),
                key: o.clone(),
                reason: "expected section.key=value".into(),
            })?;
            let (section, key) = path.trim().split_once('.').unwrap_or(("", path.trim()));
            set(&mut table, section, key, value.trim(), &origin)?;
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    origin: "configuration".into(),
                    source: Box::new(e),
                })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| {
            Err(ConfigError::BadValue {
                origin: "configuration".into(),
                key: key.into(),
                reason: reason.into(),
            })
        };
        if self.websocket.max_frame_size < 125 || self.websocket.max_message_size < 125 {
            return bad("websocket.max_message_size", "must be at least 125 bytes");
        }
        if self.websocket.heartbeat_interval_ms > 0 && self.websocket.heartbeat_timeout_ms == 0 {
            return bad(
                "websocket.heartbeat_timeout_ms",
                "must be positive when heartbeats are on",
            );
        }
        if self.server.http2_max_streams == 0 {
            return bad("server.http2_max_streams", "must be at least 1");
        }
        if self.server.http2_idle_timeout_ms == 0 {
            return bad("server.http2_idle_timeout_ms", "must be positive");
        }
        if !(9..=15).contains(&self.websocket.compression_window_bits) {
            return bad("websocket.compression_window_bits", "must be 9 to 15");
        }
        if self.rooms.history_max_age_ms == 0 {
            return bad("rooms.history_max_age_ms", "must be positive");
        }
        if self.rooms.history_max_messages == 0 {
            return bad("rooms.history_max_messages", "must be at least 1");
        }
        if self.rooms.presence_batch_ms == 0 {
            return bad("rooms.presence_batch_ms", "must be positive");
        }
        if self.http.sse_heartbeat_ms == 0 || self.http.poll_max_events == 0 {
            return bad(
                "http.sse_heartbeat_ms",
                "heartbeats and poll sizes must be positive",
            );
        }
        let broker = &self.broker;
        if !(broker.url.is_empty()
            || broker.url.starts_with("redis://")
            || broker.url.starts_with("redis+unix://")
            || broker.url.starts_with("redis+cluster://")
            || broker.url.starts_with("nats://"))
        {
            return bad(
                "broker.url",
                "expected redis://HOST:PORT[/DB], redis+cluster://HOST:PORT[,HOST:PORT...], nats://HOST:PORT or nothing",
            );
        }
        if !(1000..=30_000).contains(&broker.presence_ttl_ms) {
            return bad("broker.presence_ttl_ms", "must be 1000 to 30000");
        }
        if broker.wait_replicas > 16 {
            return bad("broker.wait_replicas", "must be 0 to 16");
        }
        if !(10..=2000).contains(&broker.wait_timeout_ms) {
            return bad(
                "broker.wait_timeout_ms",
                "must be 10 to 2000 (below the 3 s a broker request may take)",
            );
        }
        if !(1000..=60_000).contains(&broker.node_ttl_ms) {
            return bad("broker.node_ttl_ms", "must be 1000 to 60000");
        }
        if let Some(bad_ip) = self
            .server
            .trusted_proxies
            .iter()
            .find(|p| p.parse::<std::net::IpAddr>().is_err())
        {
            return bad(
                "server.trusted_proxies",
                &format!("{bad_ip:?} is not an IP address"),
            );
        }
        let tls = &self.tls;
        if tls.cert_file.is_empty() != tls.key_file.is_empty() {
            return bad(
                "tls.key_file",
                "give both tls.cert_file and tls.key_file, or neither",
            );
        }
        if tls.self_signed && !tls.cert_file.is_empty() {
            return bad(
                "tls.self_signed",
                "a certificate file and self_signed exclude each other",
            );
        }
        if let Err(reason) = self.api.all_keys() {
            return bad("api.keys", &reason);
        }
        let auth = &self.auth;
        if !matches!(auth.required.as_str(), "auto" | "true" | "false") {
            return bad("auth.required", "expected auto, true or false");
        }
        if auth.required == "true" && !auth.has_key() {
            return bad(
                "auth.required",
                "true needs a key (auth.jwt_secret, auth.jwt_public_key_file or auth.jwks_file)",
            );
        }
        if auth.leeway_ms > 300_000 {
            return bad("auth.leeway_ms", "at most 300000 (5 minutes)");
        }
        if auth.expiry_warning_ms > 3_600_000 {
            return bad("auth.expiry_warning_ms", "at most 3600000 (an hour)");
        }
        // RFC 7518 section 3.2: an HMAC key at least as long as the hash (256 bits).
        if !auth.jwt_secret.is_empty() && auth.jwt_secret.len() < MIN_JWT_SECRET {
            return bad(
                "auth.jwt_secret",
                "at least 32 bytes: a shorter secret can be guessed from one token",
            );
        }
        if self.server.workers > 256 {
            return bad("server.workers", "at most 256");
        }
        Ok(())
    }

    /// Worker threads to run: the setting, or one per CPU.
    pub fn worker_count(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.server.handshake_timeout_ms)
    }

    /// The WebSocket protocol limits.
    pub fn ws_limits(&self) -> WsConfig {
        WsConfig::default()
            .max_frame_size(self.websocket.max_frame_size)
            .max_message_size(self.websocket.max_message_size)
    }

    /// Settings for connections run by the generic driver (`/echo`).
    pub fn driver(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .protocol(self.ws_limits())
            .handshake_timeout(self.handshake_timeout())
    }

    /// How long rooms keep messages.
    pub fn history(&self) -> HistoryLimits {
        HistoryLimits {
            max_messages: self.rooms.history_max_messages,
            max_age_ms: self.rooms.history_max_age_ms,
        }
    }
}

fn parse(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            origin: origin.into(),
            source: Box::new(e),
        })
}

/// Every `(section, key)` of the defaults.
fn keys(table: &toml::Table) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (section, v) in table {
        if let Some(t) = v.as_table() {
            out.extend(t.keys().map(|k| (section.clone(), k.clone())));
        }
    }
    out
}

fn merge_file(base: &mut toml::Table, file: toml::Table, origin: &str) -> Result<(), ConfigError> {
    for (section, value) in file {
        let unknown = |key: String| ConfigError::UnknownKey {
            origin: origin.into(),
            key,
        };
        let Some(base_section) = base.get_mut(&section).and_then(|v| v.as_table_mut()) else {
            return Err(unknown(section));
        };
        let toml::Value::Table(entries) = value else {
            return Err(unknown(section));
        };
        for (key, v) in entries {
            let Some(slot) = base_section.get_mut(&key) else {
                return Err(unknown(format!("{section}.{key}")));
            };
            // `auth.required` is "auto" by default; `true` and `false` may be written bare.
            let v = match (&*slot, v) {
                (toml::Value::String(_), toml::Value::Boolean(b)) => {
                    toml::Value::String(b.to_string())
                }
                (_, v) => v,
            };
            if std::mem::discriminant(slot) != std::mem::discriminant(&v) {
                return Err(ConfigError::BadValue {
                    origin: origin.into(),
                    key: format!("{section}.{key}"),
                    reason: format!("expected a {}, found a {}", slot.type_str(), v.type_str()),
                });
            }
            *slot = v;
        }
    }
    Ok(())
}

/// Sets one key from text, typed like its default.
fn set(
    table: &mut toml::Table,
    section: &str,
    key: &str,
    text: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    let path = format!("{section}.{key}");
    let Some(slot) = table
        .get_mut(section)
        .and_then(|s| s.as_table_mut())
        .and_then(|s| s.get_mut(key))
    else {
        return Err(ConfigError::UnknownKey {
            origin: origin.into(),
            key: path,
        });
    };
    let bad = |reason: String| ConfigError::BadValue {
        origin: origin.into(),
        key: path.clone(),
        reason,
    };
    *slot = match slot {
        toml::Value::String(_) => toml::Value::String(text.to_owned()),
        toml::Value::Integer(_) => {
            let n: i64 = text
                .replace('_', "")
                .parse()
                .map_err(|_| bad(format!("{text:?} is not a whole number")))?;
            if n < 0 {
                return Err(bad(format!("{n} is negative")));
            }
            toml::Value::Integer(n)
        }
        toml::Value::Boolean(_) => toml::Value::Boolean(match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(bad(format!("{text:?} is not true or false"))),
        }),
        // A list: comma-separated, each item trimmed.
        toml::Value::Array(_) => toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        other => return Err(bad(format!("cannot set a {} from text", other.type_str()))),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Every default, exactly, and each documented one with the words that document it:
    /// a default changed without its documentation (or the other way round) fails here.
    #[test]
    fn defaults_are_exactly_the_documented_ones() {
        let docs = [
            include_str!("../../../README.md"),
            include_str!("../../../docs/protocol.md"),
        ]
        .concat();
        let docs = docs.split_whitespace().collect::<Vec<_>>().join(" ");
        let c = Config::default();
        let kib = 1024;
        let mib = 1024 * 1024;
        let cases: [(&str, u64, u64, &str); 32] = [
            (
                "limits.max_connections_per_ip",
                u64::from(c.limits.max_connections_per_ip),
                256,
                "| `max_connections_per_ip` | 256 room connections",
            ),
            (
                "limits.messages_per_second",
                c.limits.messages_per_second,
                200,
                "| 200 messages and 1 MiB a second per connection",
            ),
            (
                "limits.publish_burst",
                c.limits.publish_burst,
                500,
                "after a burst of `publish_burst` (500)",
            ),
            (
                "server.listen port",
                u64::from(c.server.listen.port()),
                8080,
                "listening on `127.0.0.1:8080`",
            ),
            ("server.workers", c.server.workers as u64, 0, ""),
            ("server.node_id empty", c.server.node_id.len() as u64, 0, ""),
            (
                "server.echo",
                u64::from(c.server.echo),
                0,
                "`GET /echo` | echo WebSocket (only with `--echo`)",
            ),
            (
                "server.handshake_timeout_ms",
                c.server.handshake_timeout_ms,
                10_000,
                "within the handshake timeout (10 s)",
            ),
            (
                "server.drain_timeout_ms",
                c.server.drain_timeout_ms,
                10_000,
                "",
            ),
            (
                "server.http2_max_streams",
                u64::from(c.server.http2_max_streams),
                128,
                "`SETTINGS_MAX_CONCURRENT_STREAMS = server.http2_max_streams` (128)",
            ),
            (
                "server.http2",
                u64::from(c.server.http2),
                1,
                "`server.http2 = true`, the default",
            ),
            (
                "server.http2_idle_timeout_ms",
                c.server.http2_idle_timeout_ms,
                60_000,
                "for `server.http2_idle_timeout_ms` (60 s)",
            ),
            (
                "websocket.max_message_size",
                c.websocket.max_message_size as u64,
                mib,
                "`websocket.max_frame_size` / `max_message_size` (1 MiB)",
            ),
            (
                "websocket.max_frame_size",
                c.websocket.max_frame_size as u64,
                mib,
                "frames and messages of at most 1 MiB each by default",
            ),
            (
                "websocket.heartbeat_interval_ms",
                c.websocket.heartbeat_interval_ms,
                25_000,
                "`websocket.heartbeat_interval_ms` (25 s, the `heartbeat_ms` of `welcome`)",
            ),
            (
                "websocket.heartbeat_timeout_ms",
                c.websocket.heartbeat_timeout_ms,
                10_000,
                "`websocket.heartbeat_timeout_ms` (10 s)",
            ),
            (
                "websocket.idle_timeout_ms",
                c.websocket.idle_timeout_ms,
                0,
                "`websocket.idle_timeout_ms` (off by default)",
            ),
            (
                "websocket.max_queued_bytes",
                c.websocket.max_queued_bytes as u64,
                4 * mib,
                "`websocket.max_queued_bytes` (4 MiB)",
            ),
            (
                "rooms.history_max_messages",
                c.rooms.history_max_messages as u64,
                1000,
                "retains its last 1,000 messages for 10 minutes (`rooms.history_max_messages`",
            ),
            (
                "rooms.history_max_age_ms",
                c.rooms.history_max_age_ms,
                600_000,
                "for 10 minutes (`rooms.history_max_messages`, `rooms.history_max_age_ms`)",
            ),
            (
                "rooms.max_data_size",
                c.rooms.max_data_size as u64,
                64 * kib,
                "`rooms.max_data_size` (64 KiB)",
            ),
            (
                "rooms.presence_batch_ms",
                c.rooms.presence_batch_ms,
                50,
                "`rooms.presence_batch_ms` (50 ms)",
            ),
            (
                "rooms.max_rooms_per_connection",
                c.rooms.max_rooms_per_connection as u64,
                256,
                "`rooms.max_rooms_per_connection` (256)",
            ),
            (
                "limits.max_presence_size",
                c.limits.max_presence_size as u64,
                4 * kib,
                "`limits.max_presence_size` (4 KiB)",
            ),
            (
                "http.sse_heartbeat_ms",
                c.http.sse_heartbeat_ms,
                15_000,
                "`http.sse_heartbeat_ms` (15 s)",
            ),
            (
                "http.poll_timeout_ms",
                c.http.poll_timeout_ms,
                25_000,
                "(default and maximum `http.poll_timeout_ms`, 25 s)",
            ),
            (
                "http.poll_max_events",
                c.http.poll_max_events as u64,
                100,
                "(at most `limit`, default and maximum `http.poll_max_events`, 100)",
            ),
            (
                "http.poll_session_ttl_ms",
                c.http.poll_session_ttl_ms,
                45_000,
                "`http.poll_session_ttl_ms` (45 s)",
            ),
            (
                "broker.presence_ttl_ms",
                c.broker.presence_ttl_ms,
                15_000,
                "every third of `broker.presence_ttl_ms` (15 s)",
            ),
            (
                "broker.node_ttl_ms",
                c.broker.node_ttl_ms,
                5_000,
                "within `broker.node_ttl_ms` (5 s)",
            ),
            (
                "broker.wait_replicas",
                u64::from(c.broker.wait_replicas),
                0,
                "`broker.wait_replicas` (0: off)",
            ),
            (
                "broker.wait_timeout_ms",
                c.broker.wait_timeout_ms,
                500,
                "`broker.wait_timeout_ms` (500 ms)",
            ),
        ];
        for (key, got, want, documented) in cases {
            assert_eq!(got, want, "default of {key}");
            assert!(
                documented.is_empty() || docs.contains(documented),
                "{key}: the docs no longer say {documented:?}"
            );
        }
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.http.max_body_size, mib as usize);
        assert!(docs.contains("`http.max_body_size` (1 MiB)"));
        assert_eq!(c.broker.url, "");
        assert!(docs.contains("Without it, rooms live in this process's memory"));
        assert_eq!(c.api.key, "");
        assert!(docs.contains("Without any key configured (the default), the API answers only requests from loopback addresses"));
        assert!(c.api.keys.is_empty());
    }

    #[test]
    fn precedence_file_then_env_then_flags() {
        let dir = std::env::temp_dir().join(format!("roomcast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:1111\"\nworkers = 3\n[rooms]\nmax_data_size = 10\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("ROOMCAST_SERVER_WORKERS", "5"),
                ("ROOMCAST_ROOMS_MAX_DATA_SIZE", "20"),
            ]),
            &["rooms.max_data_size=30".into()],
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 1111, "file over default");
        assert_eq!(c.server.workers, 5, "env over file");
        assert_eq!(c.rooms.max_data_size, 30, "flag over env");
        std::fs::write(&file, "[server]\nlisen = \"x\"\n").unwrap();
        assert!(
            matches!(Config::load(Some(&file), env(&[]), &[]), Err(ConfigError::UnknownKey { key, .. }) if key == "server.lisen")
        );
        std::fs::write(&file, "[server]\nworkers = \"two\"\n").unwrap();
        assert!(matches!(
            Config::load(Some(&file), env(&[]), &[]),
            Err(ConfigError::BadValue { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_env_and_flags_are_errors() {
        assert!(matches!(
            Config::load(None, env(&[("ROOMCAST_SERVER_ECHO", "maybe")]), &[]),
            Err(ConfigError::BadValue { .. })
        ));
        assert!(matches!(
            Config::load(None, env(&[]), &["nope.key=1".into()]),
            Err(ConfigError::UnknownKey { .. })
        ));
        assert!(matches!(
            Config::load(None, env(&[]), &["rooms.history_max_messages=0".into()]),
            Err(ConfigError::BadValue { .. })
        ));
        assert!(
            Config::load(None, env(&[("ROOMCAST_SERVER_ECHO", "yes")]), &[])
                .unwrap()
                .server
                .echo
        );
    }

    #[test]
    fn compression_settings_become_the_deflate_offer_taken() {
        let load = |set: &[&str]| {
            let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
            Config::load(None, env(&[]), &set)
        };
        assert!(load(&[]).unwrap().websocket.deflate().is_none());
        let shared = load(&["websocket.compression=true"])
            .unwrap()
            .websocket
            .deflate();
        let shared = shared.unwrap();
        assert!(shared.no_context_takeover && shared.request_peer_no_context_takeover);
        assert_eq!((shared.max_window_bits, shared.min_size), (15, 128));
        let own = load(&[
            "websocket.compression=true",
            "websocket.compression_context_takeover=true",
            "websocket.compression_window_bits=10",
        ])
        .unwrap()
        .websocket
        .deflate()
        .unwrap();
        assert!(!own.no_context_takeover && !own.request_peer_no_context_takeover);
        assert_eq!(own.max_window_bits, 10);
        for bits in ["8", "16"] {
            let set = format!("websocket.compression_window_bits={bits}");
            assert!(matches!(load(&[&set]), Err(ConfigError::BadValue { .. })));
        }
    }

    #[test]
    fn broker_urls_and_replica_waits_are_checked() {
        let load = |set: &[&str]| {
            let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
            Config::load(None, env(&[]), &set)
        };
        let bad = |set: &[&str]| matches!(load(set), Err(ConfigError::BadValue { .. }));
        let c = load(&["broker.url=redis+cluster://127.0.0.1:7000,127.0.0.1:7001"]).unwrap();
        assert_eq!(
            c.broker.url,
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
        );
        assert_eq!(c.broker.kind(), "redis-cluster");
        let c = load(&["broker.url=nats://127.0.0.1:4222"]).unwrap();
        assert_eq!(c.broker.url, "nats://127.0.0.1:4222");
        assert_eq!(c.broker.kind(), "nats");
        assert_eq!(
            load(&["broker.url=redis://127.0.0.1:6379/2"])
                .unwrap()
                .broker
                .kind(),
            "redis"
        );
        assert_eq!(load(&[]).unwrap().broker.kind(), "memory");
        assert!(bad(&["broker.url=kafka://127.0.0.1:9092"]));
        let c = load(&["broker.wait_replicas=16", "broker.wait_timeout_ms=2000"]).unwrap();
        assert_eq!(
            (c.broker.wait_replicas, c.broker.wait_timeout_ms),
            (16, 2000)
        );
        assert!(bad(&["broker.wait_replicas=17"]));
        assert!(bad(&["broker.wait_timeout_ms=9"]));
        assert!(bad(&["broker.wait_timeout_ms=2001"]));
    }
}
