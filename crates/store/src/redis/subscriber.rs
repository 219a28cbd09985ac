//! The Redis side of [`crate::TokenStore::subscribe`]: one task per subscription, owning a
//! dedicated connection that speaks RESP3, on which published messages arrive as push
//! messages next to ordinary replies.
//!
//! Why this and not the alternatives redis 1.8 offers:
//! - `redis::aio::PubSub` (RESP2) hands out messages only as a `futures` `Stream`, which
//!   would need one more dependency for this crate;
//! - a `ConnectionManager` reconnects and resubscribes by itself, but does not say when the
//!   new subscription is in place, and a consumer must know that exactly;
//! - a plain multiplexed connection with a push sender says both: the sender receives a
//!   `Disconnection` push (and is then dropped) the moment the connection dies, and
//!   `subscribe` returns once Redis confirmed. It needs RESP3 (`HELLO 3`): Redis 6 or later.
//!   On Redis 5, subscribing fails with [`StoreError::Unavailable`], and a sidecar must run
//!   without a validation cache.
//!
//! The task forwards what arrives on [`REVOCATION_CHANNEL`] to the consumer. When the
//! connection ends (Redis restarted, a network failure, or no answer to a health-check PING)
//! it sends `Lost` at once, then reconnects with growing, jittered delays and sends
//! `Subscribed` once SUBSCRIBE is confirmed again. A consumer that falls more than
//! [`BUFFER`] events behind is treated the same way: the task drops the connection rather
//! than buffer without bound, since `Lost` then `Subscribed` tells the consumer all it needs.
//!
//! On Redis Cluster, PUBLISH reaches every node, so one connection to any node hears every
//! namespace: the node the URL names, and, while that one is down, any other node the cluster
//! reports. Behind Sentinel, every new subscription goes to the master the sentinels name at
//! that moment: after a failover the old master's connection drops (it died, or Sentinel
//! killed its clients when it demoted it), and the next subscription follows the new one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, Msg, ProtocolVersion, PushInfo, PushKind, Value,
};
use tokio::sync::mpsc;

use super::connection::{CONNECTION_TIMEOUT, RESPONSE_TIMEOUT};
use super::layout::{REVOCATION_CHANNEL, parse_revocation};
use super::sentinel::SentinelConn;
use crate::{RevocationEvent, Revocations, StoreError};

/// Events waiting for the consumer before it counts as fallen behind.
const BUFFER: usize = 1024;
/// How often an idle subscription checks that Redis still answers: a connection that died
/// without a word (a network partition, a node gone) is noticed within about this long.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// How long that PING may take before the subscription counts as lost.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_MIN_DELAY: Duration = Duration::from_millis(50);
const RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

/// A subscribed connection and the messages Redis pushes on it.
struct Subscription {
    conn: MultiplexedConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

/// What the store's connection knows of where to subscribe again.
pub(super) enum Origin {
    /// The one node the URL names.
    Node,
    /// A cluster: the store's connection, to learn of other nodes.
    Cluster(ClusterConnection),
    /// Whichever master the sentinels name.
    Sentinel(SentinelConn),
}

struct Subscriber {
    /// The node the URL names; behind Sentinel, the master at connect time.
    client: Client,
    origin: Origin,
    /// For logs: where we subscribe, without the password.
    target: String,
    events: mpsc::Sender<RevocationEvent>,
}

/// Why a subscription ended.
enum End {
    /// The consumer dropped its receiver: stop.
    Dropped,
    /// Lost, for this reason: tell the consumer and subscribe again.
    Lost(String),
}

pub(super) async fn subscribe(
    client: Client,
    origin: Origin,
    target: String,
) -> Result<Revocations, StoreError> {
    let first = open(&client)
        .await
        .map_err(|e| StoreError::Unavailable(format!("{target}: cannot subscribe: {e}")))?;
    let (events, rx) = mpsc::channel(BUFFER);
    // The channel is new: there is room.
    let _ = events.try_send(RevocationEvent::Subscribed);
    let subscriber = Subscriber {
        client,
        origin,
        target,
        events,
    };
    let task = tokio::spawn(subscriber.run(first));
    Ok(Revocations::from_task(rx, task))
}

impl Subscriber {
    async fn run(self, mut subscription: Subscription) {
        loop {
            match self.forward(&mut subscription).await {
                End::Dropped => return,
                End::Lost(reason) => {
                    tracing::warn!(
                        target = %self.target,
                        %reason,
                        "revocation subscription lost; validation caches must not be trusted",
                    );
                }
            }
            drop(subscription);
            if self.events.send(RevocationEvent::Lost).await.is_err() {
                return;
            }
            let Some(again) = self.resubscribe().await else {
                return;
            };
            subscription = again;
            if self.events.send(RevocationEvent::Subscribed).await.is_err() {
                return;
            }
            tracing::info!(target = %self.target, "revocation subscription restored");
        }
    }

    /// Forwards revocations until the subscription ends.
    async fn forward(&self, subscription: &mut Subscription) -> End {
        let mut health = tokio::time::interval(HEALTH_INTERVAL);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the connection was just checked.
        health.tick().await;
        loop {
            tokio::select! {
                push = subscription.pushes.recv() => {
                    let push = match push {
                        Some(push) if push.kind != PushKind::Disconnection => push,
                        _ => return End::Lost("the connection closed".into()),
                    };
                    // Confirmations of (un)subscribing and other pushes are no messages.
                    let Some(message) = Msg::from_push_info(push) else {
                        continue;
                    };
                    if message.get_channel_name() != REVOCATION_CHANNEL {
                        continue;
                    }
                    let Some((namespace, access)) = parse_revocation(message.get_payload_bytes())
                    else {
                        // Not ours (someone else publishes on the channel): nothing to evict.
                        tracing::debug!("ignoring a malformed revocation message");
                        continue;
                    };
                    let event = RevocationEvent::Revoked { namespace, access };
                    match self.events.try_send(event) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            return End::Lost(format!(
                                "the consumer fell {BUFFER} revocations behind"
                            ));
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return End::Dropped,
                    }
                }
                _ = health.tick() => {
                    let ping = redis::cmd("PING");
                    let answer = ping.query_async::<Value>(&mut subscription.conn);
                    match tokio::time::timeout(HEALTH_TIMEOUT, answer).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return End::Lost(format!("PING failed: {e}")),
                        Err(_) => {
                            return End::Lost(format!("no answer to PING within {HEALTH_TIMEOUT:?}"));
                        }
                    }
                }
                () = self.events.closed() => return End::Dropped,
            }
        }
    }

    /// Subscribes again, retrying with growing delays until it works; `None` when the
    /// consumer went away meanwhile.
    async fn resubscribe(&self) -> Option<Subscription> {
        let mut delay = RETRY_MIN_DELAY;
        loop {
            let attempt = async {
                if let Origin::Sentinel(sentinel) = &self.origin {
                    let master = sentinel.current_master_client().await?;
                    return open(&master).await;
                }
                match open(&self.client).await {
                    Ok(subscription) => Ok(subscription),
                    Err(e) => self.other_node().await.ok_or(e),
                }
            };
            tokio::select! {
                result = attempt => match result {
                    Ok(subscription) => return Some(subscription),
                    Err(e) => tracing::debug!(target = %self.target, error = %e, "cannot subscribe yet"),
                },
                () = self.events.closed() => return None,
            }
            tokio::select! {
                () = tokio::time::sleep(jitter(delay)) => {}
                () = self.events.closed() => return None,
            }
            delay = (delay * 2).min(RETRY_MAX_DELAY);
        }
    }

    /// On Redis Cluster, a subscription to any other node the cluster knows of.
    async fn other_node(&self) -> Option<Subscription> {
        let Origin::Cluster(cluster) = &self.origin else {
            return None;
        };
        let mut cluster = cluster.clone();
        let slots: Value = tokio::time::timeout(
            RESPONSE_TIMEOUT,
            redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut cluster),
        )
        .await
        .ok()?
        .ok()?;
        let seed = self.client.get_connection_info();
        for (host, port) in cluster_nodes(&slots) {
            let addr = match seed.addr() {
                ConnectionAddr::Tcp(..) => ConnectionAddr::Tcp(host, port),
                ConnectionAddr::TcpTls {
                    insecure,
                    tls_params,
                    ..
                } => ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: *insecure,
                    tls_params: tls_params.clone(),
                },
                _ => return None,
            };
            if addr == *seed.addr() {
                continue;
            }
            let Ok(client) = Client::open(seed.clone().set_addr(addr)) else {
                continue;
            };
            if let Ok(subscription) = open(&client).await {
                return Some(subscription);
            }
        }
        None
    }
}

/// Opens a RESP3 connection to where `client` points and subscribes, within a bounded time.
async fn open(client: &Client) -> Result<Subscription, String> {
    let info = client.get_connection_info();
    let resp3 = info.clone().set_redis_settings(
        info.redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3),
    );
    let client = Client::open(resp3).map_err(|e| e.to_string())?;
    let (sender, pushes) = mpsc::unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_push_sender(sender);
    let subscribe = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        conn.subscribe(REVOCATION_CHANNEL).await?;
        Ok::<_, redis::RedisError>(Subscription { conn, pushes })
    };
    match tokio::time::timeout(CONNECTION_TIMEOUT + RESPONSE_TIMEOUT, subscribe).await {
        Ok(Ok(subscription)) => Ok(subscription),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// The node addresses in a `CLUSTER SLOTS` reply: `[[start, end, [host, port, …], …], …]`.
fn cluster_nodes(slots: &Value) -> Vec<(String, u16)> {
    let mut nodes = Vec::new();
    let Value::Array(ranges) = slots else {
        return nodes;
    };
    for range in ranges {
        let Value::Array(parts) = range else {
            continue;
        };
        for node in parts.iter().skip(2) {
            let Value::Array(fields) = node else {
                continue;
            };
            let host = match fields.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = fields.get(1) else {
                continue;
            };
            let Ok(port) = u16::try_from(*port) else {
                continue;
            };
            if !host.is_empty() && !nodes.contains(&(host.clone(), port)) {
                nodes.push((host, port));
            }
        }
    }
    nodes
}

/// Between half and all of `delay`, so that many sidecars losing the same Redis do not all
/// come back in the same millisecond.
fn jitter(delay: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let fraction = f64::from(nanos % 1000) / 2000.0;
    delay.mul_f64(0.5 + fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_from_cluster_slots() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 6379),
                node("10.0.0.2", 6379),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("10.0.0.2", 6379),
                node("", 6380),
                node("10.0.0.3", 70000),
            ]),
        ]);
        assert_eq!(
            cluster_nodes(&reply),
            [("10.0.0.1".to_owned(), 6379), ("10.0.0.2".to_owned(), 6379)]
        );
        assert!(cluster_nodes(&Value::Nil).is_empty());
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(100));
            assert!(Duration::from_millis(50) <= d && d <= Duration::from_millis(100));
        }
    }
}
