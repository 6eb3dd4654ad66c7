//! Broker configuration: Kafka's property names, read from a `key=value` file
//! (`run --config`) or built for `dev`, with `--set name=value` overrides on top.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::log::{CleanupPolicy, LogConfig, TimestampType};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("line {line}: expected name=value, got {text:?}")]
    Syntax { line: usize, text: String },
    #[error("{name}: invalid value {value:?}: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
    #[error("unknown config {0}")]
    Unknown(String),
}

/// The broker's settings. Topic-level defaults live in `log_defaults`.
/// Where `/metrics` listens unless `metrics.listen` says otherwise.
const METRICS_PORT: u16 = 9644;

#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// Where the Kafka listener binds.
    pub listen: SocketAddr,
    /// What Metadata tells clients to connect to.
    pub advertised_host: String,
    pub advertised_port: u16,
    pub metrics_listen: Option<SocketAddr>,
    pub log_dir: PathBuf,
    pub auto_create_topics_enable: bool,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub socket_request_max_bytes: usize,
    /// Connection and request-memory limits of the Kafka listener.
    pub socket_server: SocketServerConfig,
    pub log_retention_check_interval_ms: u64,
    /// `offsets.topic.num.partitions`
    pub offsets_topic_num_partitions: i32,
    /// `group.min.session.timeout.ms`, `group.max.session.timeout.ms`,
    /// `group.initial.rebalance.delay.ms`
    pub group: crate::group::GroupConfig,
    pub log_defaults: LogConfig,
    pub cluster: ClusterConfig,
}

/// Kafka's SocketServer limits: how many connections, for how long, and how many request
/// bytes may be held in memory while they are read or wait to be handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketServerConfig {
    /// `connections.max.idle.ms`: a connection with no request for this long is closed;
    /// a request whose frame is not complete this long after its first byte is closed
    /// too. Negative: never.
    pub connections_max_idle_ms: i64,
    /// `max.connections`: while this many are open, new ones wait in the listen backlog
    /// (Kafka blocks its acceptor the same way).
    pub max_connections: i32,
    /// `max.connections.per.ip` and `max.connections.per.ip.overrides` (IP literals): a
    /// connection over its address's limit is closed as soon as it is accepted.
    pub max_connections_per_ip: i32,
    pub max_connections_per_ip_overrides: BTreeMap<std::net::IpAddr, i32>,
    /// `queued.max.request.bytes`: request bytes being read or handled at once, broker
    /// wide; when spent, connections stop reading. Zero or negative: unbounded (Kafka's
    /// default, -1). Rill's default is 256 MiB.
    pub queued_max_request_bytes: i64,
}

impl Default for SocketServerConfig {
    fn default() -> Self {
        SocketServerConfig {
            connections_max_idle_ms: 600_000,
            max_connections: i32::MAX,
            max_connections_per_ip: i32::MAX,
            max_connections_per_ip_overrides: BTreeMap::new(),
            queued_max_request_bytes: 256 * 1024 * 1024,
        }
    }
}

impl SocketServerConfig {
    /// The per-IP limit for `ip`: its override, else `max.connections.per.ip`.
    pub fn max_connections_for(&self, ip: std::net::IpAddr) -> i32 {
        self.max_connections_per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.max_connections_per_ip)
    }

    /// The request-memory budget in bytes; `None` when unbounded.
    pub fn queued_max_request_bytes(&self) -> Option<usize> {
        usize::try_from(self.queued_max_request_bytes)
            .ok()
            .filter(|b| *b > 0)
    }

    /// `connections.max.idle.ms` as a duration; `None` when connections never expire.
    pub fn connections_max_idle(&self) -> Option<std::time::Duration> {
        u64::try_from(self.connections_max_idle_ms)
            .ok()
            .map(std::time::Duration::from_millis)
    }
}

/// The KRaft settings: which roles this node plays and how the nodes find each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `process.roles`: `broker`, `controller` or both.
    pub broker: bool,
    pub controller: bool,
    /// `controller.quorum.voters`: node id -> `host:port` of its CONTROLLER listener.
    /// Every tonic call between nodes (Raft, controller requests, replica fetches) goes
    /// to that listener.
    pub voters: BTreeMap<i32, String>,
    /// Where this node's CONTROLLER listener binds (from `listeners`). `None` in `dev`,
    /// where the one-node quorum needs no network.
    pub internal_listen: Option<SocketAddr>,
    /// `broker.rack`
    pub rack: Option<String>,
    /// `replica.lag.time.max.ms`: a follower that has not caught up for this long
    /// leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// `broker.session.timeout.ms`: the controller fences a broker silent this long.
    pub broker_session_timeout_ms: i64,
    /// `broker.heartbeat.interval.ms`
    pub broker_heartbeat_interval_ms: i64,
    /// `replica.fetch.max.bytes` and `replica.fetch.wait.max.ms`
    pub replica_fetch_max_bytes: i32,
    pub replica_fetch_wait_max_ms: i32,
    /// `auto.leader.rebalance.enable`, `leader.imbalance.check.interval.seconds`
    pub auto_leader_rebalance_enable: bool,
    pub leader_imbalance_check_interval_ms: i64,
    /// `offsets.topic.replication.factor`; -1 follows `default.replication.factor`
    /// (capped by the brokers there are).
    pub offsets_topic_replication_factor: i16,
    /// `controlled.shutdown.enable`: SIGTERM moves leadership away first.
    pub controlled_shutdown_enable: bool,
}

impl ClusterConfig {
    /// The voters as the quorum wants them. A lone `dev` voter has no listener; its
    /// address is never dialled, so a placeholder serves.
    pub fn quorum_voters(&self) -> BTreeMap<i32, String> {
        self.voters
            .iter()
            .map(|(id, addr)| {
                let addr = if addr.is_empty() { "127.0.0.1:0" } else { addr };
                (*id, addr.to_string())
            })
            .collect()
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            broker: true,
            controller: true,
            voters: BTreeMap::from([(1, String::new())]),
            internal_listen: None,
            rack: None,
            replica_lag_time_max_ms: 30_000,
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 2_000,
            replica_fetch_max_bytes: 1024 * 1024,
            replica_fetch_wait_max_ms: 500,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
            offsets_topic_replication_factor: -1,
            controlled_shutdown_enable: true,
        }
    }
}

impl BrokerConfig {
    /// The `dev` defaults: one node on loopback, auto-create on, every record fsynced
    /// before it is acknowledged so a `kill -9` loses nothing acknowledged.
    pub fn dev(listen: SocketAddr, log_dir: PathBuf) -> Self {
        let log_defaults = LogConfig {
            flush_messages: 1,
            ..LogConfig::default()
        };
        BrokerConfig {
            node_id: 1,
            listen,
            advertised_host: listen.ip().to_string(),
            advertised_port: listen.port(),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], METRICS_PORT))),
            log_dir,
            auto_create_topics_enable: true,
            num_partitions: 1,
            default_replication_factor: 1,
            socket_request_max_bytes: 100 * 1024 * 1024,
            socket_server: SocketServerConfig::default(),
            log_retention_check_interval_ms: 5 * 60 * 1000,
            offsets_topic_num_partitions: 50,
            // Like Kafka's sample dev config: no initial delay, so a lone consumer
            // starts at once. `run --config` keeps Kafka's 3 s default.
            group: crate::group::GroupConfig {
                initial_rebalance_delay_ms: 0,
                ..Default::default()
            },
            log_defaults,
            // Quick heartbeats: a `dev` node killed and restarted takes its id back
            // within about a second.
            cluster: ClusterConfig {
                broker_heartbeat_interval_ms: 500,
                ..ClusterConfig::default()
            },
        }
    }

    /// Checks the settings that only make sense together; run once all are set.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        let c = &mut self.cluster;
        let invalid = |name: &str, value: String, reason: &str| ConfigError::Invalid {
            name: name.to_string(),
            value,
            reason: reason.to_string(),
        };
        if !c.broker && !c.controller {
            return Err(invalid(
                "process.roles",
                String::new(),
                "needs broker, controller or both",
            ));
        }

        let single_dev_voter = c.voters.len() == 1 && c.voters.values().all(String::is_empty);
        if single_dev_voter {
            // `dev` and a lone `run` node: the quorum is this node alone.
            c.voters = BTreeMap::from([(self.node_id, String::new())]);
        }
        if c.controller && !c.voters.contains_key(&self.node_id) {
            let voters = c
                .voters
                .keys()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            return Err(invalid(
                "controller.quorum.voters",
                voters,
                &format!(
                    "node.id {} has process.roles=controller but is not a voter",
                    self.node_id
                ),
            ));
        }
        if !c.controller && c.voters.contains_key(&self.node_id) {
            return Err(invalid(
                "process.roles",
                "broker".into(),
                &format!(
                    "node.id {} is a voter, so it must have the controller role",
                    self.node_id
                ),
            ));
        }
        if (c.voters.len() > 1 || !c.controller) && c.internal_listen.is_none() {
            return Err(invalid(
                "listeners",
                String::new(),
                "a multi-node cluster needs a CONTROLLER://HOST:PORT listener",
            ));
        }
        // As Kafka requires: every frame socket.request.max.bytes allows fits the budget.
        let s = &self.socket_server;
        if s.queued_max_request_bytes > 0
            && (s.queued_max_request_bytes as u64) < self.socket_request_max_bytes as u64
        {
            return Err(invalid(
                "queued.max.request.bytes",
                s.queued_max_request_bytes.to_string(),
                "must be at least socket.request.max.bytes (or -1 for unbounded)",
            ));
        }
        if s.max_connections_per_ip == 0 && s.max_connections_per_ip_overrides.is_empty() {
            return Err(invalid(
                "max.connections.per.ip",
                "0".into(),
                "can be 0 only if max.connections.per.ip.overrides is set",
            ));
        }
        if c.broker_heartbeat_interval_ms >= c.broker_session_timeout_ms {
            return Err(invalid(
                "broker.heartbeat.interval.ms",
                c.broker_heartbeat_interval_ms.to_string(),
                "must be below broker.session.timeout.ms",
            ));
        }
        Ok(())
    }

    /// Reads a Kafka-style properties file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let props = parse_properties(&text)?;
        let mut config = BrokerConfig::dev(
            SocketAddr::from(([127, 0, 0, 1], 9092)),
            PathBuf::from("/var/lib/rill/data"),
        );
        // A deployed broker is not a sandbox: topics are created on purpose.
        config.group.initial_rebalance_delay_ms =
            crate::group::GroupConfig::default().initial_rebalance_delay_ms;
        config.auto_create_topics_enable = false;
        config.cluster.broker_heartbeat_interval_ms =
            ClusterConfig::default().broker_heartbeat_interval_ms;
        let mut metrics_set = false;
        for (name, value) in props {
            metrics_set |= name == "metrics.listen";
            config.set(&name, &value)?;
        }
        if !metrics_set {
            // Beside the Kafka listener, so nodes on 127.0.0.x of one host don't clash.
            config.metrics_listen = Some(SocketAddr::new(config.listen.ip(), METRICS_PORT));
        }
        Ok(config)
    }

    /// Sets `process.roles` from `controller.quorum.voters`: `broker,controller` when this
    /// node is a voter, `broker` otherwise. One pod template serves every ordinal of a
    /// StatefulSet, so the role cannot be written into it per pod; KRaft allows no other
    /// choice anyway (a voter must be a controller, a non-voter cannot be one).
    pub fn set_roles_from_voters(&mut self) {
        self.cluster.broker = true;
        self.cluster.controller = self.cluster.voters.contains_key(&self.node_id);
    }

    /// Applies one `name=value` override.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            name: name.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        match name {
            "node.id" | "broker.id" => self.node_id = parse(name, value)?,
            "process.roles" => {
                let roles: Vec<&str> = value.split(',').map(str::trim).collect();
                if roles.iter().any(|r| *r != "broker" && *r != "controller") {
                    return Err(invalid("expected broker, controller or broker,controller"));
                }
                self.cluster.broker = roles.contains(&"broker");
                self.cluster.controller = roles.contains(&"controller");
            }
            "controller.quorum.voters" => {
                self.cluster.voters = parse_voters(value).map_err(|r| invalid(&r))?;
            }
            "broker.rack" => self.cluster.rack = Some(value.to_string()).filter(|r| !r.is_empty()),
            "replica.lag.time.max.ms" => {
                self.cluster.replica_lag_time_max_ms = parse_at_least(name, value, 1)?
            }
            "broker.session.timeout.ms" => {
                self.cluster.broker_session_timeout_ms = parse_at_least(name, value, 1)?
            }
            "broker.heartbeat.interval.ms" => {
                self.cluster.broker_heartbeat_interval_ms = parse_at_least(name, value, 1)?
            }
            "replica.fetch.max.bytes" => {
                self.cluster.replica_fetch_max_bytes = parse_at_least(name, value, 1)?
            }
            "replica.fetch.wait.max.ms" => {
                self.cluster.replica_fetch_wait_max_ms = parse_at_least(name, value, 0)?
            }
            "auto.leader.rebalance.enable" => {
                self.cluster.auto_leader_rebalance_enable = parse(name, value)?
            }
            "leader.imbalance.check.interval.seconds" => {
                let seconds: i64 = parse_at_least(name, value, 1)?;
                self.cluster.leader_imbalance_check_interval_ms = seconds * 1000;
            }
            "offsets.topic.replication.factor" => {
                self.cluster.offsets_topic_replication_factor = parse_at_least(name, value, 1)?
            }
            "controlled.shutdown.enable" => {
                self.cluster.controlled_shutdown_enable = parse(name, value)?
            }
            // Kafka needs these to name its listeners; Rill's names are fixed
            // (PLAINTEXT for clients, CONTROLLER between nodes), so they are accepted for
            // a Kafka config to carry over, and checked for what Rill supports.
            "controller.listener.names" | "inter.broker.listener.name" => {}
            "listener.security.protocol.map" => {
                if value.split(',').any(|m| !m.trim().ends_with(":PLAINTEXT")) {
                    return Err(invalid("only PLAINTEXT listeners are supported"));
                }
            }
            "listeners" => {
                if let Some(controller) = named_listener(value, "CONTROLLER") {
                    self.cluster.internal_listen = Some(
                        controller
                            .parse()
                            .map_err(|_| invalid("expected CONTROLLER://IP:PORT"))?,
                    );
                }
                let addr = first_listener(value)
                    .ok_or_else(|| invalid("expected PLAINTEXT://HOST:PORT"))?;
                let old_metrics_default = Some(SocketAddr::new(self.listen.ip(), METRICS_PORT));
                self.listen = addr.parse().map_err(|_| invalid("expected an IP:PORT"))?;
                if self.metrics_listen == old_metrics_default {
                    // Metrics stay beside the Kafka listener unless set on their own, so
                    // a `--set listeners=...` after the file moves them too.
                    self.metrics_listen = Some(SocketAddr::new(self.listen.ip(), METRICS_PORT));
                }
                if self.advertised_host.is_empty() || self.advertised_port == 9092 {
                    self.advertised_host = self.listen.ip().to_string();
                    self.advertised_port = self.listen.port();
                }
            }
            "advertised.listeners" => {
                let addr = first_listener(value)
                    .ok_or_else(|| invalid("expected PLAINTEXT://HOST:PORT"))?;
                let (host, port) = addr
                    .rsplit_once(':')
                    .ok_or_else(|| invalid("expected HOST:PORT"))?;
                self.advertised_host = host.to_string();
                self.advertised_port = port.parse().map_err(|_| invalid("bad port"))?;
            }
            "metrics.listen" => {
                self.metrics_listen = if value.is_empty() {
                    None
                } else {
                    Some(value.parse().map_err(|_| invalid("expected IP:PORT"))?)
                }
            }
            "log.dirs" | "log.dir" => {
                let first = value.split(',').next().unwrap_or_default();
                self.log_dir = PathBuf::from(first);
            }
            "auto.create.topics.enable" => self.auto_create_topics_enable = parse(name, value)?,
            "num.partitions" => {
                self.num_partitions = parse_at_least(name, value, 1)?;
            }
            "default.replication.factor" => self.default_replication_factor = parse(name, value)?,
            "socket.request.max.bytes" => {
                self.socket_request_max_bytes = parse_at_least(name, value, 1)?
            }
            "connections.max.idle.ms" => {
                self.socket_server.connections_max_idle_ms = parse(name, value)?
            }
            "max.connections" => {
                self.socket_server.max_connections = parse_at_least(name, value, 0)?
            }
            "max.connections.per.ip" => {
                self.socket_server.max_connections_per_ip = parse_at_least(name, value, 0)?
            }
            "max.connections.per.ip.overrides" => {
                self.socket_server.max_connections_per_ip_overrides =
                    parse_ip_overrides(value).map_err(|r| invalid(&r))?
            }
            "queued.max.request.bytes" => {
                self.socket_server.queued_max_request_bytes = parse(name, value)?
            }
            "offsets.topic.num.partitions" => {
                self.offsets_topic_num_partitions = parse_at_least(name, value, 1)?;
            }
            "group.min.session.timeout.ms" => {
                self.group.min_session_timeout_ms = parse(name, value)?
            }
            "group.max.session.timeout.ms" => {
                self.group.max_session_timeout_ms = parse(name, value)?
            }
            "offsets.retention.minutes" => {
                let minutes: i64 = parse_at_least(name, value, 1)?;
                self.group.offsets_retention_ms = minutes.saturating_mul(60_000);
            }
            "group.initial.rebalance.delay.ms" => {
                self.group.initial_rebalance_delay_ms = parse(name, value)?
            }
            "log.retention.check.interval.ms" => {
                self.log_retention_check_interval_ms = parse(name, value)?
            }
            _ => match broker_to_topic_config(name) {
                Some(topic_name) => {
                    let value = match name {
                        "log.retention.hours" => {
                            (parse::<i64>(name, value)? * 3_600_000).to_string()
                        }
                        "log.retention.minutes" => {
                            (parse::<i64>(name, value)? * 60_000).to_string()
                        }
                        "log.roll.hours" => (parse::<i64>(name, value)? * 3_600_000).to_string(),
                        _ => value.to_string(),
                    };
                    apply_topic_config(&mut self.log_defaults, topic_name, &value)?
                }
                None => return Err(ConfigError::Unknown(name.to_string())),
            },
        }
        Ok(())
    }

    /// The broker-level properties a DescribeConfigs on the broker resource reports.
    pub fn describe(&self) -> Vec<(String, String)> {
        let d = &self.log_defaults;
        vec![
            ("node.id".into(), self.node_id.to_string()),
            ("log.dirs".into(), self.log_dir.display().to_string()),
            (
                "auto.create.topics.enable".into(),
                self.auto_create_topics_enable.to_string(),
            ),
            ("num.partitions".into(), self.num_partitions.to_string()),
            (
                "default.replication.factor".into(),
                self.default_replication_factor.to_string(),
            ),
            (
                "socket.request.max.bytes".into(),
                self.socket_request_max_bytes.to_string(),
            ),
            (
                "connections.max.idle.ms".into(),
                self.socket_server.connections_max_idle_ms.to_string(),
            ),
            (
                "max.connections".into(),
                self.socket_server.max_connections.to_string(),
            ),
            (
                "max.connections.per.ip".into(),
                self.socket_server.max_connections_per_ip.to_string(),
            ),
            (
                "max.connections.per.ip.overrides".into(),
                self.socket_server
                    .max_connections_per_ip_overrides
                    .iter()
                    .map(|(ip, n)| format!("{ip}:{n}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "queued.max.request.bytes".into(),
                self.socket_server.queued_max_request_bytes.to_string(),
            ),
            ("log.segment.bytes".into(), d.segment_bytes.to_string()),
            ("log.roll.ms".into(), d.segment_ms.to_string()),
            ("log.retention.ms".into(), d.retention_ms.to_string()),
            ("log.retention.bytes".into(), d.retention_bytes.to_string()),
            (
                "log.flush.interval.messages".into(),
                d.flush_messages.to_string(),
            ),
            ("log.flush.interval.ms".into(), d.flush_ms.to_string()),
            ("message.max.bytes".into(), d.max_message_bytes.to_string()),
            (
                "log.message.timestamp.before.max.ms".into(),
                d.message_timestamp_before_max_ms.to_string(),
            ),
            (
                "log.message.timestamp.after.max.ms".into(),
                d.message_timestamp_after_max_ms.to_string(),
            ),
            (
                "log.cleanup.policy".into(),
                cleanup_policy_value(d.cleanup_policy).into(),
            ),
            (
                "log.cleaner.delete.retention.ms".into(),
                d.delete_retention_ms.to_string(),
            ),
            (
                "log.cleaner.min.compaction.lag.ms".into(),
                d.min_compaction_lag_ms.to_string(),
            ),
            (
                "log.cleaner.min.cleanable.ratio".into(),
                d.min_cleanable_dirty_ratio.to_string(),
            ),
        ]
    }
}

/// Broker-level names of the topic configs they default (`log.segment.bytes` ->
/// `segment.bytes`), as Kafka pairs them.
fn broker_to_topic_config(name: &str) -> Option<&'static str> {
    Some(match name {
        "log.segment.bytes" => "segment.bytes",
        "log.roll.ms" | "log.roll.hours" => "segment.ms",
        "log.index.size.max.bytes" => "segment.index.bytes",
        "log.index.interval.bytes" => "index.interval.bytes",
        "log.retention.ms" | "log.retention.minutes" | "log.retention.hours" => "retention.ms",
        "log.retention.bytes" => "retention.bytes",
        "log.flush.interval.messages" => "flush.messages",
        "log.flush.interval.ms" => "flush.ms",
        "message.max.bytes" => "max.message.bytes",
        "min.insync.replicas" => "min.insync.replicas",
        "compression.type" => "compression.type",
        "unclean.leader.election.enable" => "unclean.leader.election.enable",
        "log.message.timestamp.type" => "message.timestamp.type",
        "log.message.timestamp.before.max.ms" => "message.timestamp.before.max.ms",
        "log.message.timestamp.after.max.ms" => "message.timestamp.after.max.ms",
        "log.cleanup.policy" => "cleanup.policy",
        "log.cleaner.delete.retention.ms" => "delete.retention.ms",
        "log.cleaner.min.compaction.lag.ms" => "min.compaction.lag.ms",
        "log.cleaner.min.cleanable.ratio" => "min.cleanable.dirty.ratio",
        _ => return None,
    })
}

/// Every topic config Rill understands, in the order DescribeConfigs lists them.
pub const TOPIC_CONFIG_NAMES: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "segment.bytes",
    "segment.ms",
    "segment.index.bytes",
    "index.interval.bytes",
    "retention.ms",
    "retention.bytes",
    "flush.messages",
    "flush.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
    "min.insync.replicas",
    "unclean.leader.election.enable",
    "delete.retention.ms",
    "min.compaction.lag.ms",
    "min.cleanable.dirty.ratio",
];

/// Sets one topic config on a `LogConfig`, validating the value as Kafka would.
pub fn apply_topic_config(
    config: &mut LogConfig,
    name: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    match name {
        "cleanup.policy" => {
            config.cleanup_policy = parse_cleanup_policy(value)
                .ok_or_else(|| invalid("expected delete, compact or compact,delete"))?
        }
        "delete.retention.ms" => {
            config.delete_retention_ms = parse_at_least(name, value, 0)?;
        }
        "min.compaction.lag.ms" => {
            config.min_compaction_lag_ms = parse_at_least(name, value, 0)?;
        }
        "min.cleanable.dirty.ratio" => {
            config.min_cleanable_dirty_ratio = parse(name, value)?;
            if !(0.0..=1.0).contains(&config.min_cleanable_dirty_ratio) {
                return Err(invalid("must be between 0 and 1"));
            }
        }
        "compression.type" => {
            // The broker stores batches as the producer compressed them; recompressing
            // to another codec is not implemented, so only `producer` is honest.
            if value != "producer" {
                return Err(invalid("only compression.type=producer is supported"));
            }
        }
        "min.insync.replicas" => {
            config.min_insync_replicas = parse_at_least(name, value, 1)?;
        }
        "unclean.leader.election.enable" => {
            config.unclean_leader_election_enable = parse(name, value)?
        }
        "segment.bytes" => {
            config.segment_bytes = parse_at_least(name, value, 14)?;
        }
        "segment.ms" => {
            config.segment_ms = parse_at_least(name, value, 1)?;
        }
        "segment.index.bytes" => {
            config.segment_index_bytes = parse_at_least(name, value, 12)?;
        }
        "index.interval.bytes" => config.index_interval_bytes = parse(name, value)?,
        "retention.ms" => {
            config.retention_ms = parse_at_least(name, value, -1)?;
        }
        "retention.bytes" => config.retention_bytes = parse(name, value)?,
        "flush.messages" => {
            config.flush_messages = parse_at_least(name, value, 1)?;
        }
        "flush.ms" => config.flush_ms = parse(name, value)?,
        "max.message.bytes" => config.max_message_bytes = parse(name, value)?,
        "message.timestamp.before.max.ms" => {
            config.message_timestamp_before_max_ms = parse_at_least(name, value, 0)?;
        }
        "message.timestamp.after.max.ms" => {
            config.message_timestamp_after_max_ms = parse_at_least(name, value, 0)?;
        }
        "message.timestamp.type" => {
            config.message_timestamp_type = match value {
                "CreateTime" => TimestampType::CreateTime,
                "LogAppendTime" => TimestampType::LogAppendTime,
                _ => return Err(invalid("expected CreateTime or LogAppendTime")),
            }
        }
        _ => return Err(ConfigError::Unknown(name.to_string())),
    }
    Ok(())
}

/// The value of one topic config as DescribeConfigs reports it.
pub fn topic_config_value(config: &LogConfig, name: &str) -> Option<String> {
    Some(match name {
        "cleanup.policy" => cleanup_policy_value(config.cleanup_policy).to_string(),
        "delete.retention.ms" => config.delete_retention_ms.to_string(),
        "min.compaction.lag.ms" => config.min_compaction_lag_ms.to_string(),
        "min.cleanable.dirty.ratio" => config.min_cleanable_dirty_ratio.to_string(),
        "compression.type" => "producer".to_string(),
        "min.insync.replicas" => config.min_insync_replicas.to_string(),
        "unclean.leader.election.enable" => config.unclean_leader_election_enable.to_string(),
        "segment.bytes" => config.segment_bytes.to_string(),
        "segment.ms" => config.segment_ms.to_string(),
        "segment.index.bytes" => config.segment_index_bytes.to_string(),
        "index.interval.bytes" => config.index_interval_bytes.to_string(),
        "retention.ms" => config.retention_ms.to_string(),
        "retention.bytes" => config.retention_bytes.to_string(),
        "flush.messages" => config.flush_messages.to_string(),
        "flush.ms" => config.flush_ms.to_string(),
        "max.message.bytes" => config.max_message_bytes.to_string(),
        "message.timestamp.before.max.ms" => config.message_timestamp_before_max_ms.to_string(),
        "message.timestamp.after.max.ms" => config.message_timestamp_after_max_ms.to_string(),
        "message.timestamp.type" => match config.message_timestamp_type {
            TimestampType::CreateTime => "CreateTime".to_string(),
            TimestampType::LogAppendTime => "LogAppendTime".to_string(),
        },
        _ => return None,
    })
}

/// `cleanup.policy` is a list: `delete`, `compact`, or both in either order (spaces
/// allowed, as Kafka's list parser does). An empty list is not supported.
fn parse_cleanup_policy(value: &str) -> Option<CleanupPolicy> {
    let (mut delete, mut compact) = (false, false);
    for item in value.split(',').map(str::trim) {
        match item {
            "delete" => delete = true,
            "compact" => compact = true,
            _ => return None,
        }
    }
    match (compact, delete) {
        (false, true) => Some(CleanupPolicy::Delete),
        (true, false) => Some(CleanupPolicy::Compact),
        (true, true) => Some(CleanupPolicy::CompactDelete),
        (false, false) => None,
    }
}

/// `cleanup.policy` as Kafka lists it.
fn cleanup_policy_value(policy: CleanupPolicy) -> &'static str {
    match policy {
        CleanupPolicy::Delete => "delete",
        CleanupPolicy::Compact => "compact",
        CleanupPolicy::CompactDelete => "compact,delete",
    }
}

/// A topic's effective log config: broker defaults overlaid with its overrides.
pub fn effective_log_config(
    defaults: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<LogConfig, ConfigError> {
    let mut config = defaults.clone();
    for (name, value) in overrides {
        apply_topic_config(&mut config, name, value)?;
    }
    Ok(config)
}

/// Parses a number that must not be below `min` (most Kafka configs have such a floor).
fn parse_at_least<T>(name: &str, value: &str, min: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let v: T = parse(name, value)?;
    if v < min {
        return Err(ConfigError::Invalid {
            name: name.to_string(),
            value: value.to_string(),
            reason: format!("must be at least {min}"),
        });
    }
    Ok(v)
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason: format!("not a valid {}", std::any::type_name::<T>()),
    })
}

/// `1@127.0.0.1:19093,2@127.0.0.2:19093` -> {1: "127.0.0.1:19093", 2: ...}
fn parse_voters(value: &str) -> Result<BTreeMap<i32, String>, String> {
    let mut voters = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| format!("{entry:?} is not ID@HOST:PORT"))?;
        let id: i32 = id.parse().map_err(|_| format!("{id:?} is not a node id"))?;
        let (_, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{addr:?} is not HOST:PORT"))?;
        port.parse::<u16>()
            .map_err(|_| format!("{port:?} is not a port"))?;
        if voters.insert(id, addr.to_string()).is_some() {
            return Err(format!("node id {id} is listed twice"));
        }
    }
    if voters.is_empty() {
        return Err("no voters".into());
    }
    Ok(voters)
}

/// `127.0.0.1:200,::1:5` -> {127.0.0.1: 200, ::1: 5}. Kafka also takes host names and
/// resolves them once; Rill takes IP literals only, so no lookup happens at startup.
fn parse_ip_overrides(value: &str) -> Result<BTreeMap<std::net::IpAddr, i32>, String> {
    let mut overrides = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (ip, count) = entry
            .rsplit_once(':')
            .ok_or_else(|| format!("{entry:?} is not IP:COUNT"))?;
        let ip: std::net::IpAddr = ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{ip:?} is not an IP address"))?;
        let count: i32 = count
            .parse()
            .ok()
            .filter(|c| *c >= 0)
            .ok_or_else(|| format!("{count:?} is not a connection count"))?;
        overrides.insert(ip, count);
    }
    Ok(overrides)
}

/// The address of the listener called `name` in a `listeners` value.
fn named_listener<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value
        .split(',')
        .map(str::trim)
        .find_map(|l| l.strip_prefix(name)?.strip_prefix("://"))
}

/// `PLAINTEXT://127.0.0.1:9092,CONTROLLER://...` -> `127.0.0.1:9092` (the client listener).
fn first_listener(value: &str) -> Option<&str> {
    value
        .split(',')
        .map(str::trim)
        .find(|l| l.starts_with("PLAINTEXT://"))
        .or_else(|| {
            value
                .split(',')
                .find(|l| !l.trim().starts_with("CONTROLLER://"))
        })
        .map(|l| l.split_once("://").map_or(l, |(_, addr)| addr))
}

fn parse_properties(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut props = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (name, value) = line.split_once('=').ok_or_else(|| ConfigError::Syntax {
            line: i + 1,
            text: line.to_string(),
        })?;
        props.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_file_sets_kafka_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.properties");
        std::fs::write(
            &path,
            "# comment\nnode.id=3\nlisteners=PLAINTEXT://127.0.0.1:19092\nlog.dirs=/tmp/x\n\
             log.segment.bytes=1048576\nlog.retention.hours=2\nnum.partitions=4\n",
        )
        .unwrap();
        let c = BrokerConfig::from_file(&path).unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.listen, "127.0.0.1:19092".parse().unwrap());
        assert_eq!(c.advertised_port, 19092);
        assert_eq!(c.log_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.log_defaults.segment_bytes, 1048576);
        assert_eq!(c.log_defaults.retention_ms, 2 * 3_600_000);
        assert_eq!(c.num_partitions, 4);
        assert!(!c.auto_create_topics_enable);
    }

    #[test]
    fn kraft_cluster_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.properties");
        std::fs::write(
            &path,
            "node.id=2\nprocess.roles=broker,controller\n\
             controller.quorum.voters=1@127.0.0.1:19093,2@127.0.0.2:19093,3@127.0.0.3:19093\n\
             listeners=PLAINTEXT://127.0.0.2:19092,CONTROLLER://127.0.0.2:19093\n\
             advertised.listeners=PLAINTEXT://127.0.0.2:19092\nlog.dirs=/tmp/n2\n\
             default.replication.factor=3\nmin.insync.replicas=2\nbroker.rack=r1\n",
        )
        .unwrap();
        let mut c = BrokerConfig::from_file(&path).unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen, "127.0.0.2:19092".parse().unwrap());
        assert_eq!(
            c.cluster.internal_listen,
            Some("127.0.0.2:19093".parse().unwrap())
        );
        assert_eq!(c.cluster.voters.len(), 3);
        assert_eq!(c.cluster.voters[&3], "127.0.0.3:19093");
        assert_eq!(c.cluster.rack.as_deref(), Some("r1"));
        assert_eq!(c.default_replication_factor, 3);
        assert_eq!(c.log_defaults.min_insync_replicas, 2);

        let mut bad = c.clone();
        bad.node_id = 4;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("not a voter"), "{err}");
        // A broker-only node is no voter; a voter must have the controller role.
        let mut broker_only = c.clone();
        broker_only.node_id = 4;
        broker_only.set("process.roles", "broker").unwrap();
        broker_only.validate().unwrap();
        let mut voter_without_role = c.clone();
        voter_without_role.set("process.roles", "broker").unwrap();
        let err = voter_without_role.validate().unwrap_err().to_string();
        assert!(err.contains("must have the controller role"), "{err}");
        let mut c2 = c.clone();
        assert!(c2.set("controller.quorum.voters", "1@h:1,1@h:2").is_err());
        assert!(c2.set("controller.quorum.voters", "x@h:1").is_err());
        assert!(c2.set("process.roles", "observer").is_err());
    }

    #[test]
    fn roles_follow_the_voter_set() {
        let mut c = BrokerConfig::dev("127.0.0.1:9092".parse().unwrap(), "d".into());
        c.set("controller.quorum.voters", "0@a:9093,1@b:9093,2@c:9093")
            .unwrap();
        c.set(
            "listeners",
            "PLAINTEXT://127.0.0.9:9092,CONTROLLER://127.0.0.9:9093",
        )
        .unwrap();
        c.set("node.id", "0").unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.9:9644".parse().unwrap()));
        c.set_roles_from_voters();
        assert!(c.cluster.broker && c.cluster.controller);
        c.validate().unwrap();
        c.set("node.id", "3").unwrap();
        c.set_roles_from_voters();
        assert!(c.cluster.broker && !c.cluster.controller);
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_are_rejected_with_the_name() {
        let mut c = BrokerConfig::dev("127.0.0.1:9092".parse().unwrap(), "d".into());
        let err = c.set("num.partitions", "many").unwrap_err().to_string();
        assert!(err.contains("num.partitions"), "{err}");
        assert!(matches!(
            c.set("no.such.thing", "1"),
            Err(ConfigError::Unknown(_))
        ));
        assert!(c.set("num.partitions", "0").is_err());
    }

    #[test]
    fn socket_server_limits_use_kafka_names_and_checks() {
        let mut c = BrokerConfig::dev("127.0.0.1:9092".parse().unwrap(), "d".into());
        let s = &c.socket_server;
        assert_eq!(s.connections_max_idle_ms, 600_000);
        assert_eq!(
            (s.max_connections, s.max_connections_per_ip),
            (i32::MAX, i32::MAX)
        );
        assert_eq!(s.queued_max_request_bytes(), Some(256 * 1024 * 1024));
        c.set("connections.max.idle.ms", "1500").unwrap();
        c.set("max.connections", "10").unwrap();
        c.set("max.connections.per.ip", "3").unwrap();
        c.set("max.connections.per.ip.overrides", "127.0.0.2:7, [::1]:1")
            .unwrap();
        c.set("queued.max.request.bytes", "-1").unwrap();
        c.validate().unwrap();
        let s = &c.socket_server;
        assert_eq!(
            s.connections_max_idle(),
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(s.max_connections, 10);
        assert_eq!(s.max_connections_for("127.0.0.1".parse().unwrap()), 3);
        assert_eq!(s.max_connections_for("127.0.0.2".parse().unwrap()), 7);
        assert_eq!(s.max_connections_for("::1".parse().unwrap()), 1);
        assert_eq!(s.queued_max_request_bytes(), None);
        c.set("connections.max.idle.ms", "-1").unwrap();
        assert_eq!(c.socket_server.connections_max_idle(), None);

        assert!(c.set("max.connections", "-1").is_err());
        assert!(c.set("max.connections.per.ip.overrides", "host:1").is_err());
        assert!(c
            .set("max.connections.per.ip.overrides", "127.0.0.1:-2")
            .is_err());
        // Kafka's cross checks: the budget holds the largest frame; 0 per IP needs overrides.
        c.set("queued.max.request.bytes", "1000").unwrap();
        let err = c.clone().validate().unwrap_err().to_string();
        assert!(err.contains("queued.max.request.bytes"), "{err}");
        c.set("socket.request.max.bytes", "1000").unwrap();
        c.validate().unwrap();
        c.set("max.connections.per.ip.overrides", "").unwrap();
        c.set("max.connections.per.ip", "0").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("max.connections.per.ip"), "{err}");
    }

    #[test]
    fn topic_overrides_apply_over_defaults() {
        let defaults = LogConfig::default();
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "1000".to_string());
        o.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        let c = effective_log_config(&defaults, &o).unwrap();
        assert_eq!(c.retention_ms, 1000);
        assert_eq!(c.message_timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(c.segment_bytes, defaults.segment_bytes);
        o.insert("segment.bytes".to_string(), "-5".to_string());
        assert!(effective_log_config(&defaults, &o).is_err());
    }

    #[test]
    fn timestamp_bounds_have_kafka_defaults_names_and_floors() {
        let d = LogConfig::default();
        assert_eq!(
            topic_config_value(&d, "message.timestamp.before.max.ms").as_deref(),
            Some("9223372036854775807")
        );
        assert_eq!(
            topic_config_value(&d, "message.timestamp.after.max.ms").as_deref(),
            Some("3600000")
        );
        assert!(TOPIC_CONFIG_NAMES.contains(&"message.timestamp.before.max.ms"));
        assert!(TOPIC_CONFIG_NAMES.contains(&"message.timestamp.after.max.ms"));
        let mut c = LogConfig::default();
        apply_topic_config(&mut c, "message.timestamp.after.max.ms", "0").unwrap();
        apply_topic_config(&mut c, "message.timestamp.before.max.ms", "86400000").unwrap();
        assert_eq!(
            (
                c.message_timestamp_before_max_ms,
                c.message_timestamp_after_max_ms
            ),
            (86_400_000, 0)
        );
        assert!(apply_topic_config(&mut c, "message.timestamp.after.max.ms", "-1").is_err());
        assert!(apply_topic_config(&mut c, "message.timestamp.before.max.ms", "soon").is_err());
        // The broker-level names set the defaults every topic starts from.
        let mut b = BrokerConfig::dev("127.0.0.1:9092".parse().unwrap(), "d".into());
        b.set("log.message.timestamp.after.max.ms", "5000").unwrap();
        b.set("log.message.timestamp.before.max.ms", "7000")
            .unwrap();
        assert_eq!(b.log_defaults.message_timestamp_after_max_ms, 5000);
        assert_eq!(b.log_defaults.message_timestamp_before_max_ms, 7000);
        let described = b.describe();
        assert!(described.contains(&(
            "log.message.timestamp.after.max.ms".to_string(),
            "5000".to_string()
        )));
    }

    #[test]
    fn cleanup_policy_and_compaction_configs_round_trip() {
        let mut c = LogConfig::default();
        assert_eq!(topic_config_value(&c, "cleanup.policy").unwrap(), "delete");
        for (value, policy, shown) in [
            ("compact", CleanupPolicy::Compact, "compact"),
            (
                "compact,delete",
                CleanupPolicy::CompactDelete,
                "compact,delete",
            ),
            (
                "delete, compact",
                CleanupPolicy::CompactDelete,
                "compact,delete",
            ),
            ("delete", CleanupPolicy::Delete, "delete"),
        ] {
            apply_topic_config(&mut c, "cleanup.policy", value).unwrap();
            assert_eq!(c.cleanup_policy, policy);
            assert_eq!(topic_config_value(&c, "cleanup.policy").unwrap(), shown);
        }
        assert!(apply_topic_config(&mut c, "cleanup.policy", "").is_err());
        assert!(apply_topic_config(&mut c, "cleanup.policy", "compact,nope").is_err());
        assert_eq!(c.delete_retention_ms, 86_400_000);
        assert_eq!(c.min_compaction_lag_ms, 0);
        assert_eq!(c.min_cleanable_dirty_ratio, 0.5);
        apply_topic_config(&mut c, "delete.retention.ms", "100").unwrap();
        apply_topic_config(&mut c, "min.compaction.lag.ms", "5").unwrap();
        apply_topic_config(&mut c, "min.cleanable.dirty.ratio", "0.01").unwrap();
        assert_eq!(
            topic_config_value(&c, "delete.retention.ms").unwrap(),
            "100"
        );
        assert_eq!(
            topic_config_value(&c, "min.compaction.lag.ms").unwrap(),
            "5"
        );
        assert_eq!(
            topic_config_value(&c, "min.cleanable.dirty.ratio").unwrap(),
            "0.01"
        );
        assert!(apply_topic_config(&mut c, "min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(apply_topic_config(&mut c, "delete.retention.ms", "-1").is_err());
        for name in TOPIC_CONFIG_NAMES {
            assert!(topic_config_value(&c, name).is_some(), "{name}");
        }

        let mut b = BrokerConfig::dev("127.0.0.1:9092".parse().unwrap(), "d".into());
        b.set("log.cleanup.policy", "compact").unwrap();
        b.set("log.cleaner.delete.retention.ms", "7").unwrap();
        b.set("log.cleaner.min.compaction.lag.ms", "8").unwrap();
        b.set("log.cleaner.min.cleanable.ratio", "0.25").unwrap();
        let d = &b.log_defaults;
        assert_eq!(d.cleanup_policy, CleanupPolicy::Compact);
        assert_eq!((d.delete_retention_ms, d.min_compaction_lag_ms), (7, 8));
        assert_eq!(d.min_cleanable_dirty_ratio, 0.25);
    }
}
