//! The partitions this broker hosts, and the topic lifecycle around them: create,
//! delete, add partitions, change configs. Metadata goes to the `MetadataStore` first;
//! logs follow it, so a crash between the two is repaired on the next start.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::{effective_log_config, BrokerConfig, ConfigError};
use crate::log::{Log, LogConfig, LogError};
use crate::metadata::{MetadataError, MetadataStore, TopicRecord};
use crate::partition::Partition;

/// Kafka has no hard cap, but a request for millions of partitions is a mistake, not a
/// plan: refuse it up front instead of exhausting file descriptors half way.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    #[error("invalid topic name '{name}': {reason}")]
    InvalidTopic { name: String, reason: String },
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    #[error("topic '{0}' is internal and cannot be changed this way")]
    InternalTopic(String),
    #[error(transparent)]
    Storage(#[from] LogError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// Kafka's rule: 1..=249 chars of [a-zA-Z0-9._-], and not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |reason: &str| TopicError::InvalidTopic {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are not allowed"));
    }
    if name.len() > 249 {
        return Err(invalid("longer than 249 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(invalid(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

pub struct ReplicaManager {
    config: BrokerConfig,
    metadata: Mutex<MetadataStore>,
    partitions: RwLock<HashMap<(String, i32), Arc<Partition>>>,
    /// Woken after every append so long-polling fetches can look again.
    appended: Notify,
}

impl ReplicaManager {
    pub fn open(config: BrokerConfig) -> Result<Self, TopicError> {
        std::fs::create_dir_all(&config.log_dir).map_err(LogError::from)?;
        let metadata = MetadataStore::open(&config.log_dir, config.node_id)?;
        let mut partitions = HashMap::new();
        let now = now_ms();
        for topic in metadata.topics() {
            let log_config = effective_log_config(&config.log_defaults, &topic.configs)?;
            for p in 0..topic.partitions {
                let log = Log::open(
                    &partition_dir(&config, &topic.name, p),
                    log_config.clone(),
                    now,
                )?;
                partitions.insert(
                    (topic.name.clone(), p),
                    Arc::new(Partition::new(topic.name.clone(), topic.id, p, log)),
                );
            }
        }
        Ok(ReplicaManager {
            config,
            metadata: Mutex::new(metadata),
            partitions: RwLock::new(partitions),
            appended: Notify::new(),
        })
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn cluster_id(&self) -> String {
        self.metadata.lock().cluster_id().to_string()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .get(&(topic.to_string(), index))
            .cloned()
    }

    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    pub fn topic(&self, name: &str) -> Option<TopicRecord> {
        self.metadata.lock().topic(name).cloned()
    }

    /// The name of the topic with this id: what produce and fetch v13+ need, without
    /// copying the topic's configs.
    pub fn topic_name_by_id(&self, id: Uuid) -> Option<String> {
        self.metadata.lock().topic_by_id(id).map(|t| t.name.clone())
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<TopicRecord> {
        self.metadata.lock().topic_by_id(id).cloned()
    }

    pub fn topics(&self) -> Vec<TopicRecord> {
        self.metadata.lock().topics().cloned().collect()
    }

    pub fn appended(&self) -> &Notify {
        &self.appended
    }

    pub fn notify_appended(&self) {
        self.appended.notify_waiters();
    }

    /// The effective log config of a topic (defaults plus its overrides).
    pub fn topic_log_config(&self, topic: &TopicRecord) -> Result<LogConfig, ConfigError> {
        effective_log_config(&self.config.log_defaults, &topic.configs)
    }

    /// CreateTopics for one topic. `partitions`/`replication_factor` of -1 take the
    /// broker defaults, as in Kafka.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicRecord, TopicError> {
        validate_topic_name(name)?;
        let partitions = if partitions == -1 {
            self.config.num_partitions
        } else {
            partitions
        };
        if partitions < 1 {
            return Err(TopicError::InvalidPartitions(format!(
                "number of partitions must be at least 1, got {partitions}"
            )));
        }
        if partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err(TopicError::InvalidPartitions(format!(
                "number of partitions {partitions} exceeds the limit of {MAX_PARTITIONS_PER_TOPIC} per topic"
            )));
        }
        let replication_factor = if replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            replication_factor
        };
        if replication_factor < 1 {
            return Err(TopicError::InvalidReplicationFactor(format!(
                "replication factor must be at least 1, got {replication_factor}"
            )));
        }
        if replication_factor > 1 {
            return Err(TopicError::InvalidReplicationFactor(format!(
                "replication factor {replication_factor} is larger than the 1 available broker"
            )));
        }
        let log_config = effective_log_config(&self.config.log_defaults, &configs)?;
        let mut metadata = self.metadata.lock();
        if metadata.topic(name).is_some() {
            return Err(TopicError::TopicAlreadyExists(name.to_string()));
        }
        let record = TopicRecord {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            configs,
        };
        if validate_only {
            return Ok(record);
        }
        metadata.put_topic(record.clone())?;
        self.open_partitions(&record, 0, &log_config)?;
        Ok(record)
    }

    /// DeleteTopics: the metadata goes first, then the partitions and their files.
    pub fn delete_topic(&self, name: &str) -> Result<TopicRecord, TopicError> {
        // Deleting `__consumer_offsets` would silently drop every committed offset.
        if name == crate::group::OFFSETS_TOPIC {
            return Err(TopicError::InternalTopic(name.to_string()));
        }
        let record = self
            .metadata
            .lock()
            .remove_topic(name)?
            .ok_or_else(|| TopicError::UnknownTopic(name.to_string()))?;
        for p in 0..record.partitions {
            let removed = self.partitions.write().remove(&(name.to_string(), p));
            let dir = partition_dir(&self.config, name, p);
            match removed.map(wait_for_sole_owner) {
                Some(Ok(partition)) => partition.delete()?,
                // A request still holds it: its file handles stay valid after unlink.
                _ => match std::fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(LogError::from(e).into()),
                },
            }
        }
        Ok(record)
    }

    /// CreatePartitions: grow a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<TopicRecord, TopicError> {
        let mut metadata = self.metadata.lock();
        let mut record = metadata
            .topic(name)
            .cloned()
            .ok_or_else(|| TopicError::UnknownTopic(name.to_string()))?;
        if count <= record.partitions {
            return Err(TopicError::InvalidPartitions(format!(
                "topic currently has {} partitions, {count} would not be an increase",
                record.partitions
            )));
        }
        if count > MAX_PARTITIONS_PER_TOPIC {
            return Err(TopicError::InvalidPartitions(format!(
                "number of partitions {count} exceeds the limit of {MAX_PARTITIONS_PER_TOPIC} per topic"
            )));
        }
        if validate_only {
            return Ok(record);
        }
        let first_new = record.partitions;
        record.partitions = count;
        metadata.put_topic(record.clone())?;
        let log_config = effective_log_config(&self.config.log_defaults, &record.configs)?;
        self.open_partitions(&record, first_new, &log_config)?;
        Ok(record)
    }

    /// Replaces a topic's config overrides (the result of an incremental alter).
    pub fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let log_config = effective_log_config(&self.config.log_defaults, &configs)?;
        let mut metadata = self.metadata.lock();
        let mut record = metadata
            .topic(name)
            .cloned()
            .ok_or_else(|| TopicError::UnknownTopic(name.to_string()))?;
        if validate_only {
            return Ok(());
        }
        record.configs = configs;
        metadata.put_topic(record.clone())?;
        for p in 0..record.partitions {
            if let Some(partition) = self.partition(name, p) {
                partition.set_config(log_config.clone());
            }
        }
        Ok(())
    }

    /// Background work for every partition: time-based flush and roll, and retention
    /// when `retention` is set.
    pub fn tick(&self, retention: bool) {
        let now = now_ms();
        for partition in self.all_partitions() {
            match partition.tick(now, retention) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    topic = %partition.topic,
                    partition = partition.index,
                    segments = n,
                    "retention deleted segments"
                ),
                Err(e) => tracing::error!(
                    topic = %partition.topic,
                    partition = partition.index,
                    error = %e,
                    "background log maintenance failed"
                ),
            }
        }
    }

    /// Clean shutdown: every log is flushed and closed with its clean-shutdown marker.
    pub fn shutdown(&self) {
        let partitions: Vec<_> = self.partitions.write().drain().map(|(_, p)| p).collect();
        for partition in partitions {
            let (topic, index) = (partition.topic.clone(), partition.index);
            let result = match wait_for_sole_owner(partition) {
                Ok(p) => p.close(),
                Err(p) => p.flush(),
            };
            if let Err(e) = result {
                tracing::error!(%topic, partition = index, error = %e, "closing the log failed");
            }
        }
    }

    fn open_partitions(
        &self,
        record: &TopicRecord,
        from: i32,
        log_config: &LogConfig,
    ) -> Result<(), TopicError> {
        let now = now_ms();
        for p in from..record.partitions {
            let log = Log::open(
                &partition_dir(&self.config, &record.name, p),
                log_config.clone(),
                now,
            )?;
            self.partitions.write().insert(
                (record.name.clone(), p),
                Arc::new(Partition::new(record.name.clone(), record.id, p, log)),
            );
        }
        Ok(())
    }
}

fn partition_dir(config: &BrokerConfig, topic: &str, partition: i32) -> PathBuf {
    config.log_dir.join(format!("{topic}-{partition}"))
}

/// In-flight requests hold a partition briefly; give them a moment to let go.
fn wait_for_sole_owner(mut partition: Arc<Partition>) -> Result<Partition, Arc<Partition>> {
    for _ in 0..100 {
        match Arc::try_unwrap(partition) {
            Ok(p) => return Ok(p),
            Err(shared) => partition = shared,
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(partition)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_created_grown_and_deleted_but_internal_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::dev("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        let rm = ReplicaManager::open(config.clone()).unwrap();
        let t = rm
            .create_topic("orders", 2, 1, BTreeMap::new(), false)
            .unwrap();
        assert_eq!(t.partitions, 2);
        assert!(dir.path().join("orders-1").is_dir());
        assert!(matches!(
            rm.create_topic("orders", 1, 1, BTreeMap::new(), false),
            Err(TopicError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            rm.create_topic("bad", 0, 1, BTreeMap::new(), false),
            Err(TopicError::InvalidPartitions(_))
        ));
        assert!(matches!(
            rm.create_topic(
                "bad",
                MAX_PARTITIONS_PER_TOPIC + 1,
                1,
                BTreeMap::new(),
                false
            ),
            Err(TopicError::InvalidPartitions(_))
        ));
        assert!(matches!(
            rm.create_topic("bad", 1, 3, BTreeMap::new(), false),
            Err(TopicError::InvalidReplicationFactor(_))
        ));
        assert_eq!(
            rm.create_partitions("orders", 3, false).unwrap().partitions,
            3
        );
        assert!(rm.partition("orders", 2).is_some());
        assert!(matches!(
            rm.create_partitions("orders", 3, false),
            Err(TopicError::InvalidPartitions(_))
        ));
        rm.create_topic(crate::group::OFFSETS_TOPIC, 1, 1, BTreeMap::new(), false)
            .unwrap();
        assert!(matches!(
            rm.delete_topic(crate::group::OFFSETS_TOPIC),
            Err(TopicError::InternalTopic(_))
        ));
        assert_eq!(rm.delete_topic("orders").unwrap().partitions, 3);
        assert!(!dir.path().join("orders-0").exists());
        assert!(rm.partition("orders", 0).is_none());
        rm.shutdown();
        // Reopened: the internal topic is still there, the deleted one is not.
        let rm = ReplicaManager::open(config).unwrap();
        assert!(rm.topic(crate::group::OFFSETS_TOPIC).is_some());
        assert!(rm.topic("orders").is_none());
        rm.shutdown();
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "has space", "slash/y", "ü"] {
            assert!(
                matches!(
                    validate_topic_name(bad),
                    Err(TopicError::InvalidTopic { .. })
                ),
                "{bad:?} accepted"
            );
        }
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }
}
