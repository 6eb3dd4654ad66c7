//! The accept loop and Kafka's connection quotas. Each connection runs in its own task
//! until it ends or the shutdown signal fires; at shutdown, requests being handled are
//! answered first (for up to `DRAIN_TIMEOUT`), as in mini-redis.
//!
//! As in Kafka's SocketServer: while `max.connections` are open the loop stops
//! accepting (new connections wait in the listen backlog until a slot frees); a
//! connection over `max.connections.per.ip` for its address is closed as soon as it is
//! accepted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::budget::MemoryBudget;
use super::connection::{Connection, ConnectionError, Limits};
use super::Context;
use crate::config::SocketServerConfig;

/// How long shutdown waits for requests in flight (a produce waiting for acks, a
/// long-poll fetch) before dropping them.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn serve(listener: TcpListener, ctx: Context, mut shutdown: watch::Receiver<bool>) {
    let config = ctx.replicas.config();
    let socket = &config.socket_server;
    let limits = Limits {
        max_frame: config.socket_request_max_bytes,
        max_idle: socket.connections_max_idle(),
        budget: MemoryBudget::new(
            socket.queued_max_request_bytes(),
            ctx.metrics.queued_request_bytes.clone(),
        ),
    };
    let slots = Arc::new(Semaphore::new(
        usize::try_from(socket.max_connections).unwrap_or(0),
    ));
    let quotas = Arc::new(ConnectionQuotas::new(socket.clone()));
    let mut connections = JoinSet::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            Some(_) = connections.join_next() => continue,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: back off rather than spin.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next() => continue,
            _ = shutdown.changed() => break,
        };
        let ip_slot = match quotas.admit(peer.ip()) {
            Ok(ip_slot) => ip_slot,
            Err(TooManyConnections { ip, max }) => {
                tracing::info!(%ip, max, "refused connection: address has max.connections.per.ip open");
                ctx.metrics
                    .connections_refused
                    .with_label_values(&["max.connections.per.ip"])
                    .inc();
                drop(stream);
                continue;
            }
        };
        let ctx = ctx.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        let open = OpenConnection::new(ctx.metrics.clone(), slot, ip_slot);
        connections.spawn(async move {
            let result = Connection::new(stream, limits)
                .run(ctx.clone(), shutdown)
                .await;
            if let Err(e) = result {
                let limit = match e {
                    ConnectionError::Idle(_) => Some("idle"),
                    ConnectionError::RequestDeadline(_) => Some("request_deadline"),
                    _ => None,
                };
                if let Some(limit) = limit {
                    ctx.metrics
                        .connections_closed
                        .with_label_values(&[limit])
                        .inc();
                }
                tracing::info!(%peer, error = %e, "connection ended");
            }
            drop(open);
        });
    }
    // No new connections; those handling a request finish it, the rest end at once.
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            busy = connections.len(),
            "requests still in flight after the drain timeout: dropped"
        );
        connections.shutdown().await;
    }
}

/// What an open connection holds: its `max.connections` slot, its address's count and
/// its place in the gauge. Dropped when its task ends, however it ends.
struct OpenConnection {
    metrics: Arc<crate::metrics::Metrics>,
    _slot: tokio::sync::OwnedSemaphorePermit,
    _ip_slot: IpSlot,
}

impl OpenConnection {
    fn new(
        metrics: Arc<crate::metrics::Metrics>,
        slot: tokio::sync::OwnedSemaphorePermit,
        ip_slot: IpSlot,
    ) -> Self {
        metrics.connections.inc();
        OpenConnection {
            metrics,
            _slot: slot,
            _ip_slot: ip_slot,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connections.dec();
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct TooManyConnections {
    pub ip: IpAddr,
    pub max: i32,
}

/// Open connections per client address, against `max.connections.per.ip` and its
/// overrides.
pub struct ConnectionQuotas {
    config: SocketServerConfig,
    counts: Mutex<HashMap<IpAddr, i32>>,
}

impl ConnectionQuotas {
    pub fn new(config: SocketServerConfig) -> Self {
        ConnectionQuotas {
            config,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new connection from `ip`, or refuses it when the address already has
    /// its limit open.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<IpSlot, TooManyConnections> {
        let max = self.config.max_connections_for(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= max {
            if *count == 0 {
                counts.remove(&ip);
            }
            return Err(TooManyConnections { ip, max });
        }
        *count += 1;
        Ok(IpSlot {
            quotas: self.clone(),
            ip,
        })
    }

    pub fn count(&self, ip: IpAddr) -> i32 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&ip).copied().unwrap_or(0)
    }
}

/// One admitted connection; its address's count drops when this does.
pub struct IpSlot {
    quotas: Arc<ConnectionQuotas>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.quotas.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count <= 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_limit_refuses_over_the_limit_and_frees_on_close() {
        let mut config = SocketServerConfig {
            max_connections_per_ip: 2,
            ..Default::default()
        };
        let special: IpAddr = "127.0.0.2".parse().unwrap();
        let banned: IpAddr = "127.0.0.3".parse().unwrap();
        config.max_connections_per_ip_overrides.insert(special, 3);
        config.max_connections_per_ip_overrides.insert(banned, 0);
        let q = Arc::new(ConnectionQuotas::new(config));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = q.admit(ip).unwrap();
        let _b = q.admit(ip).unwrap();
        assert_eq!(q.admit(ip).err(), Some(TooManyConnections { ip, max: 2 }));
        assert_eq!(q.count(ip), 2);
        drop(a);
        assert_eq!(q.count(ip), 1);
        let _c = q.admit(ip).unwrap();
        // Overrides: more for one address, none for another; others unaffected.
        let specials: Vec<_> = (0..3).map(|_| q.admit(special).unwrap()).collect();
        assert!(q.admit(special).is_err());
        assert_eq!(
            q.admit(banned).err(),
            Some(TooManyConnections { ip: banned, max: 0 })
        );
        assert_eq!(q.count(banned), 0);
        drop(specials);
        assert_eq!(q.count(special), 0);
    }
}
