//! Prometheus metrics and the small HTTP endpoint that serves them on their own port.

use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::replica_manager::ReplicaManager;

pub struct Metrics {
    registry: Registry,
    pub bytes_in: IntCounterVec,
    pub bytes_out: IntCounterVec,
    pub records_in: IntCounterVec,
    pub records_out: IntCounterVec,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub log_size: IntGaugeVec,
    /// Per partition: high watermark and log end (lag = end - high watermark).
    pub high_watermark: IntGaugeVec,
    pub log_end_offset: IntGaugeVec,
    /// Partitions led here, and those of them whose ISR is smaller than their replica
    /// set (Kafka's LeaderCount and UnderReplicatedPartitions).
    pub leader_partitions: prometheus::IntGauge,
    pub under_replicated_partitions: prometheus::IntGauge,
    /// 1 on the node that is the active controller.
    pub active_controller: prometheus::IntGauge,
    /// Open client connections on the Kafka listener.
    pub connections: prometheus::IntGauge,
    /// Connections closed at accept (`max.connections.per.ip`).
    pub connections_refused: IntCounterVec,
    /// Connections the broker closed for a limit: `idle` (connections.max.idle.ms with
    /// no request) or `request_deadline` (a frame not complete in that time).
    pub connections_closed: IntCounterVec,
    /// Request bytes held against `queued.max.request.bytes`.
    pub queued_request_bytes: prometheus::IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let bytes_in = counter(
            "rill_topic_bytes_in_total",
            "Record batch bytes appended",
            &["topic"],
        );
        let bytes_out = counter(
            "rill_topic_bytes_out_total",
            "Record batch bytes sent to fetchers",
            &["topic"],
        );
        let records_in = counter(
            "rill_topic_records_in_total",
            "Records appended",
            &["topic"],
        );
        let records_out = counter(
            "rill_topic_records_out_total",
            "Records sent to fetchers",
            &["topic"],
        );
        let requests = counter("rill_requests_total", "Requests handled", &["api"]);
        let request_duration = HistogramVec::new(
            HistogramOpts::new("rill_request_duration_seconds", "Request handling time").buckets(
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            &["api"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(request_duration.clone()))
            .expect("unique metric");
        let log_size = IntGaugeVec::new(
            Opts::new(
                "rill_partition_log_size_bytes",
                "Bytes in a partition's log",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(log_size.clone()))
            .expect("unique metric");
        let partition_gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["topic", "partition"])
                .expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let high_watermark = partition_gauge(
            "rill_partition_high_watermark",
            "Offset below which records are committed (what consumers can read)",
        );
        let log_end_offset = partition_gauge(
            "rill_partition_log_end_offset",
            "Offset the next record gets",
        );
        let gauge = |name: &str, help: &str| {
            let g = prometheus::IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let leader_partitions = gauge("rill_leader_partitions", "Partitions led by this broker");
        let under_replicated_partitions = gauge(
            "rill_under_replicated_partitions",
            "Partitions led here whose ISR is smaller than their replica set",
        );
        let active_controller = gauge(
            "rill_active_controller",
            "1 when this node is the active controller",
        );
        let connections = gauge(
            "rill_connections",
            "Open client connections on the Kafka listener",
        );
        let connections_refused = counter(
            "rill_connections_refused_total",
            "Connections closed as soon as accepted, by limit",
            &["reason"],
        );
        let connections_closed = counter(
            "rill_connections_closed_total",
            "Connections the broker closed for a time limit",
            &["reason"],
        );
        let queued_request_bytes = gauge(
            "rill_queued_request_bytes",
            "Request bytes being read or handled, held against queued.max.request.bytes",
        );
        Metrics {
            registry,
            connections,
            connections_refused,
            connections_closed,
            queued_request_bytes,
            high_watermark,
            log_end_offset,
            leader_partitions,
            under_replicated_partitions,
            active_controller,
            bytes_in,
            bytes_out,
            records_in,
            records_out,
            requests,
            request_duration,
            log_size,
        }
    }

    /// The text exposition, with log sizes read fresh from the partitions.
    pub fn render(&self, replicas: &ReplicaManager) -> String {
        self.log_size.reset();
        self.high_watermark.reset();
        self.log_end_offset.reset();
        let (mut leading, mut under_replicated) = (0, 0);
        for p in replicas.all_partitions() {
            let labels = [p.topic.as_str(), &p.index.to_string()];
            self.log_size
                .with_label_values(&labels)
                .set(p.size_bytes() as i64);
            self.high_watermark
                .with_label_values(&labels)
                .set(p.high_watermark());
            self.log_end_offset
                .with_label_values(&labels)
                .set(p.log_end_offset());
            if p.role() == crate::partition::Role::Leader {
                leading += 1;
                if p.isr_size() < p.replica_count() {
                    under_replicated += 1;
                }
            }
        }
        self.leader_partitions.set(leading);
        self.under_replicated_partitions.set(under_replicated);
        self.active_controller
            .set(i64::from(replicas.cluster().quorum().is_leader()));
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `GET /metrics`. Anything else is a 404; the endpoint is read-only.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, replicas: Arc<ReplicaManager>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let replicas = replicas.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            // Read until the end of the request head; bodies are not expected.
            while n < buf.len() {
                match stream.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(m) => n += m,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if head.starts_with("GET /metrics ") {
                ("200 OK", metrics.render(&replicas))
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
