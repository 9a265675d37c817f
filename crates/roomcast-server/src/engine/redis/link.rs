//! The engine's connections to Redis, in either of its two shapes:
//!
//! - **one Redis** (`redis://`): a multiplexed connection for commands and a RESP2
//!   pub/sub connection beside it (`PubSub::split`); a room's channel is subscribed with
//!   `SUBSCRIBE` and written with `PUBLISH`.
//! - **Redis Cluster** (`redis+cluster://HOST:PORT,HOST:PORT,...`): one
//!   `ClusterConnection` (RESP3) for both, which routes each command to the primary of
//!   its slot, follows `MOVED` and `ASK`, and delivers pushes from every node on one
//!   channel. Rooms use *sharded* pub/sub (`SSUBSCRIBE`/`SPUBLISH`): a message travels
//!   only within its slot's shard, not to every node of the cluster as `PUBLISH` would.
//!   Every key and the channel of room `R` carry the hash tag `{R}`, so a room's script
//!   runs on one primary and may `SPUBLISH` its channel there.
//!
//! Everything else in the engine is the same for both; what differs is here, plus the
//! per-slot batching in `Broker::pump` (a cluster pipeline may not cross slots; ops are
//! grouped by `Op::group`).

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection, PubSubSink};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, PushKind, RedisFuture, Value};

use std::sync::Arc;

use super::jetstream::{self, Jet, JetError, JetSettings, Subs};
use super::wire;
use tokio::sync::mpsc;

/// Where the engine connects, parsed from `broker.url`.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Single(redis::Client),
    /// The seed nodes of a cluster (`redis://HOST:PORT` each); the rest are discovered.
    Cluster(Vec<String>),
    /// A NATS server with JetStream (`nats://HOST:PORT`): see [`super::jetstream`].
    Nats(String),
}

/// The URL scheme of a Redis Cluster: the seed nodes, comma-separated.
pub(crate) const CLUSTER_SCHEME: &str = "redis+cluster://";

impl Target {
    /// Parses `broker.url`: `redis://...`, `redis+unix://...` or
    /// `redis+cluster://HOST:PORT[,HOST:PORT...]`.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("nats://") {
            return Ok(Target::Nats(url.to_owned()));
        }
        let Some(seeds) = url.strip_prefix(CLUSTER_SCHEME) else {
            return redis::Client::open(url)
                .map(Target::Single)
                .map_err(|e| e.to_string());
        };
        let seeds: Vec<String> = seeds
            .trim_end_matches('/')
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| format!("redis://{s}"))
            .collect();
        if seeds.is_empty() {
            return Err("no seed node after redis+cluster://".into());
        }
        // Each seed must parse as a node's address.
        for s in &seeds {
            redis::Client::open(s.as_str()).map_err(|e| format!("{s}: {e}"))?;
        }
        Ok(Target::Cluster(seeds))
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    pub(crate) fn is_nats(&self) -> bool {
        matches!(self, Target::Nats(_))
    }
}

/// The command connection: cloned freely, each clone shares the same sockets.
#[derive(Clone)]
pub(super) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
    Nats(Arc<Jet>),
}

/// What a Redis command on a NATS link answers (the engine sends none there).
fn not_redis<'a, T: Send + 'a>() -> RedisFuture<'a, T> {
    Box::pin(async {
        Err(redis::RedisError::from(std::io::Error::other(
            "not a Redis link",
        )))
    })
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Nats(_) => not_redis(),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Nats(_) => not_redis(),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Nats(_) => 0,
        }
    }
}

/// Where subscriptions are made.
#[derive(Clone)]
pub(super) enum Subscriber {
    Single(PubSubSink),
    Cluster(ClusterConnection),
    Nats(Subs),
}

impl Subscriber {
    /// Subscribes `channels`. On a cluster each goes to its own shard (`SSUBSCRIBE` may
    /// not cross slots), all at once.
    pub(super) async fn subscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Subscriber::Single(sink) => sink.subscribe(channels).await,
            Subscriber::Cluster(conn) => {
                let each = channels.iter().map(|c| {
                    let mut conn = conn.clone();
                    async move { conn.ssubscribe(c).await }
                });
                futures_util::future::join_all(each)
                    .await
                    .into_iter()
                    .collect()
            }
            Subscriber::Nats(subs) => subs.subscribe(channels).await.map_err(nats_error),
        }
    }

    pub(super) async fn unsubscribe(&mut self, channel: String) -> redis::RedisResult<()> {
        match self {
            Subscriber::Single(sink) => sink.unsubscribe(channel).await,
            Subscriber::Cluster(conn) => conn.sunsubscribe(channel).await,
            Subscriber::Nats(subs) => {
                subs.unsubscribe(&channel);
                Ok(())
            }
        }
    }
}

/// A NATS failure in the Redis error type the link's callers take.
pub(super) fn nats_error(e: JetError) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::other(e.to_string()))
}

/// What the connections hear besides replies.
#[derive(Debug)]
pub(super) enum Heard {
    /// A message on a channel.
    Message(String, Bytes),
    /// A cluster node told the engine its subscription to a channel ended (its slot
    /// moved, or a failover): subscribe again, and read what may have been missed.
    Dropped(String),
    /// A connection to one of the cluster's nodes closed (the client reconnects by
    /// itself): whatever its channels carried meanwhile must be read.
    Blip,
    /// The pub/sub connection is gone (one Redis): the link is down.
    Closed,
}

/// The publish command of the channels: `PUBLISH`, or `SPUBLISH` on a cluster.
pub(super) fn publish_verb(cluster: bool) -> &'static str {
    if cluster { "SPUBLISH" } else { "PUBLISH" }
}

/// `fut`, or an error naming `what` once `timeout` has passed.
async fn within<T>(
    timeout: Duration,
    what: &str,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| redis::RedisError::from(std::io::Error::other(format!("{what} timed out"))))?
}

/// The connections of a link: commands, subscriptions, what they hear, and the task that
/// reads it (stopped with the link).
pub(super) type Opened = (
    Conn,
    Subscriber,
    mpsc::UnboundedReceiver<Heard>,
    tokio::task::AbortHandle,
);

/// Opens the connections: the command connection, the subscriber, and a stream of what
/// they hear. `control` channels are subscribed before it returns.
pub(super) async fn open(
    target: &Target,
    timeout: Duration,
    control: &[String],
    nats: &JetSettings,
) -> redis::RedisResult<Opened> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (conn, mut subscriber, reader) = match target {
        Target::Nats(url) => {
            let jet = jetstream::connect(url, nats.clone(), tx.clone())
                .await
                .map_err(nats_error)?;
            let subs = Subs::new(jet.client().clone(), tx);
            // Nothing to read here: the subscriptions forward what they hear themselves.
            let reader = tokio::task::spawn_local(async {});
            (Conn::Nats(Arc::new(jet)), Subscriber::Nats(subs), reader)
        }
        Target::Single(client) => {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let pubsub = within(timeout, "pub/sub connect", client.get_async_pubsub()).await?;
            let (sink, mut stream) = pubsub.split();
            let reader = tokio::task::spawn_local(async move {
                while let Some(msg) = stream.next().await {
                    let channel = msg.get_channel_name().to_owned();
                    let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
                    if tx.send(Heard::Message(channel, payload)).is_err() {
                        return;
                    }
                }
                let _ = tx.send(Heard::Closed);
            });
            (Conn::Single(conn), Subscriber::Single(sink), reader)
        }
        Target::Cluster(seeds) => {
            let (push_tx, mut push_rx) = mpsc::unbounded_channel::<redis::PushInfo>();
            let client = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(push_tx)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // A failover takes the cluster a few seconds; the engine answers
                // `unavailable` meanwhile and retries itself rather than waiting long.
                .retries(2)
                .build()?;
            let conn = within(timeout, "cluster connect", client.get_async_connection()).await?;
            let reader = tokio::task::spawn_local(async move {
                while let Some(push) = push_rx.recv().await {
                    let Some(heard) = heard_of(push) else {
                        continue;
                    };
                    if tx.send(heard).is_err() {
                        return;
                    }
                }
                let _ = tx.send(Heard::Closed);
            });
            (
                Conn::Cluster(conn.clone()),
                Subscriber::Cluster(conn),
                reader,
            )
        }
    };
    let reader = reader.abort_handle();
    if let Err(e) = within(timeout, "subscribe", subscriber.subscribe(control)).await {
        reader.abort();
        return Err(e);
    }
    Ok((conn, subscriber, rx, reader))
}

/// What a cluster's push says, when it concerns the engine.
fn heard_of(push: redis::PushInfo) -> Option<Heard> {
    let mut data = push.data.into_iter();
    match push.kind {
        PushKind::SMessage | PushKind::Message => {
            let channel = wire::string_of(data.next()?)?;
            let payload = Bytes::from(wire::bytes_of(data.next()?)?);
            Some(Heard::Message(channel, payload))
        }
        PushKind::SUnsubscribe => Some(Heard::Dropped(wire::string_of(data.next()?)?)),
        PushKind::Disconnection => Some(Heard::Blip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_seeds() {
        let t = Target::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap();
        match t {
            Target::Cluster(seeds) => {
                assert_eq!(seeds, ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])
            }
            _ => panic!("not a cluster"),
        }
        assert!(Target::parse("redis+cluster://").is_err());
        assert!(Target::parse("nats://127.0.0.1:4222").unwrap().is_nats());
        assert!(
            !Target::parse("redis://127.0.0.1:6379")
                .unwrap()
                .is_cluster()
        );
    }
}
