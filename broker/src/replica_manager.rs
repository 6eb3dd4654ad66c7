//! The partitions this broker hosts, and the topic lifecycle around them: create,
//! delete, add partitions, change configs. Changes are proposed to the metadata quorum;
//! every broker then makes its partitions match the image (`apply_image`), so a crash
//! between the two is repaired when the image is applied on the next start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::cluster::command::NewTopic;
use crate::cluster::image::TopicImage;
use crate::cluster::node::{ClusterError, ClusterNode};
use crate::cluster::placement::{self, BrokerSlot};
use crate::cluster::{Command, MetadataImage};
use crate::config::{effective_log_config, BrokerConfig, ConfigError};
use crate::log::{Log, LogConfig, LogError};
use crate::metadata::{MetadataError, TopicRecord};
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
    #[error(transparent)]
    Cluster(#[from] ClusterError),
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
    cluster: Arc<ClusterNode>,
    partitions: RwLock<HashMap<(String, i32), Arc<Partition>>>,
    /// Topic configs the open logs were given, to notice changes in the image.
    topic_configs: Mutex<HashMap<String, BTreeMap<String, String>>>,
    /// Woken after every append and high-watermark move so long-polling fetches (of
    /// consumers and followers) can look again.
    appended: Arc<Notify>,
    /// Stray partition directories are removed once, after the first image.
    swept: std::sync::atomic::AtomicBool,
}

/// What applying an image changed for one partition hosted here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub topic: String,
    pub partition: i32,
    /// Leads it now (false: follows, or no longer hosted).
    pub leader: bool,
}

impl ReplicaManager {
    /// Opens nothing yet: partitions come from the metadata image (`apply_image`).
    pub fn open(config: BrokerConfig, cluster: Arc<ClusterNode>) -> Result<Self, TopicError> {
        std::fs::create_dir_all(&config.log_dir).map_err(LogError::from)?;
        Ok(ReplicaManager {
            config,
            cluster,
            partitions: RwLock::new(HashMap::new()),
            topic_configs: Mutex::new(HashMap::new()),
            appended: Arc::new(Notify::new()),
            swept: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn cluster(&self) -> &Arc<ClusterNode> {
        &self.cluster
    }

    pub fn cluster_id(&self) -> String {
        self.cluster.image().cluster_id.clone().unwrap_or_default()
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
        self.cluster.image().topics.get(name).map(topic_record)
    }

    /// The name of the topic with this id: what produce and fetch v13+ need, without
    /// copying the topic's configs.
    pub fn topic_name_by_id(&self, id: Uuid) -> Option<String> {
        self.cluster.image().topic_by_id(id).map(|t| t.name.clone())
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<TopicRecord> {
        self.cluster.image().topic_by_id(id).map(topic_record)
    }

    pub fn topics(&self) -> Vec<TopicRecord> {
        self.cluster
            .image()
            .topics
            .values()
            .map(topic_record)
            .collect()
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
    /// broker defaults, as in Kafka. Replicas are placed over the active brokers.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicRecord, TopicError> {
        self.create_topic_with(
            name,
            partitions,
            replication_factor,
            None,
            configs,
            validate_only,
        )
        .await
    }

    /// CreateTopics with an optional manual assignment (replica lists by partition,
    /// checked by the caller); without one, replicas are placed over active brokers.
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        assignments: Option<Vec<Vec<i32>>>,
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
        effective_log_config(&self.config.log_defaults, &configs)?;
        if self.cluster.image().topics.contains_key(name) {
            return Err(TopicError::TopicAlreadyExists(name.to_string()));
        }
        let assignments = match assignments {
            Some(a) => a,
            None => self.place(name, 0, partitions, replication_factor)?,
        };
        let record = TopicRecord {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor,
            configs: configs.clone(),
        };
        if validate_only {
            return Ok(record);
        }
        let command = Command::CreateTopics {
            topics: vec![NewTopic {
                name: name.to_string(),
                topic_id: record.id,
                assignments,
                configs,
            }],
        };
        self.cluster.propose(command).await?;
        Ok(record)
    }

    /// Replica lists for new partitions over the active brokers, starting the leaders
    /// at a place that depends on the topic so small topics do not all lead on one
    /// broker.
    fn place(
        &self,
        name: &str,
        first: i32,
        count: i32,
        replication_factor: i16,
    ) -> Result<Vec<Vec<i32>>, TopicError> {
        let brokers: Vec<BrokerSlot> = self
            .cluster
            .image()
            .active_brokers()
            .map(|b| BrokerSlot {
                broker_id: b.broker_id,
                rack: b.rack.clone(),
            })
            .collect();
        let start = name
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        placement::assign(&brokers, first, count, replication_factor as i32, start)
            .map_err(|e| TopicError::InvalidReplicationFactor(e.to_string()))
    }

    /// The number of brokers that may host replicas now.
    pub fn active_broker_count(&self) -> usize {
        self.cluster.image().active_brokers().count()
    }

    /// DeleteTopics: the metadata goes first; every replica deletes its files when it
    /// applies the change.
    pub async fn delete_topic(&self, name: &str) -> Result<TopicRecord, TopicError> {
        // Deleting `__consumer_offsets` would silently drop every committed offset.
        if name == crate::group::OFFSETS_TOPIC {
            return Err(TopicError::InternalTopic(name.to_string()));
        }
        let record = self
            .topic(name)
            .ok_or_else(|| TopicError::UnknownTopic(name.to_string()))?;
        self.cluster
            .propose(Command::DeleteTopic {
                name: name.to_string(),
            })
            .await?;
        Ok(record)
    }

    /// CreatePartitions: grow a topic to `count` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<TopicRecord, TopicError> {
        let (record, replication_factor) = {
            let image = self.cluster.image();
            let t = image
                .topics
                .get(name)
                .ok_or_else(|| TopicError::UnknownTopic(name.to_string()))?;
            let rf = t
                .partitions
                .first()
                .map_or(1, |p| (p.replicas.len() - p.removing.len()).max(1) as i16);
            (topic_record(t), rf)
        };
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
        let assignments = self.place(
            name,
            record.partitions,
            count - record.partitions,
            replication_factor,
        )?;
        if validate_only {
            return Ok(record);
        }
        self.cluster
            .propose(Command::CreatePartitions {
                topic: name.to_string(),
                assignments,
            })
            .await?;
        Ok(TopicRecord {
            partitions: count,
            ..record
        })
    }

    /// Replaces a topic's config overrides (the result of an incremental alter).
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        effective_log_config(&self.config.log_defaults, &configs)?;
        let record = self
            .topic(name)
            .ok_or_else(|| TopicError::UnknownTopic(name.to_string()))?;
        if validate_only {
            return Ok(());
        }
        let mut changes: BTreeMap<String, Option<String>> = record
            .configs
            .keys()
            .filter(|k| !configs.contains_key(*k))
            .map(|k| (k.clone(), None))
            .collect();
        changes.extend(configs.into_iter().map(|(k, v)| (k, Some(v))));
        self.cluster
            .propose(Command::AlterTopicConfigs {
                topic: name.to_string(),
                configs: changes,
            })
            .await?;
        Ok(())
    }

    /// Makes the hosted partitions what the image says: opens logs for new replicas,
    /// gives each its role, applies config changes, deletes what is no longer hosted
    /// here. Returns the role changes.
    pub fn apply_image(&self, image: &MetadataImage) -> Vec<Transition> {
        let now = now_ms();
        let me = self.config.node_id;
        let mut wanted: HashSet<(String, i32)> = HashSet::new();
        let mut transitions = Vec::new();
        for topic in image.topics.values() {
            let log_config = match effective_log_config(&self.config.log_defaults, &topic.configs) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(topic = %topic.name, error = %e, "invalid topic config in metadata; using defaults");
                    self.config.log_defaults.clone()
                }
            };
            let configs_changed = self
                .topic_configs
                .lock()
                .insert(topic.name.clone(), topic.configs.clone())
                .is_some_and(|old| old != topic.configs);
            for (i, state) in topic.partitions.iter().enumerate() {
                if !state.replicas.contains(&me) {
                    continue;
                }
                let key = (topic.name.clone(), i as i32);
                wanted.insert(key.clone());
                let existing = self.partitions.read().get(&key).cloned();
                let partition = match existing {
                    Some(p) if p.topic_id == topic.topic_id => {
                        if configs_changed {
                            p.set_config(log_config.clone());
                        }
                        p
                    }
                    other => {
                        if other.is_some() {
                            // Same name, new id: the topic was deleted and created again.
                            self.remove_partition(&key);
                        }
                        match self.open_partition(
                            &topic.name,
                            topic.topic_id,
                            i as i32,
                            &log_config,
                        ) {
                            Ok(p) => p,
                            Err(e) => {
                                tracing::error!(topic = %topic.name, partition = i, error = %e, "cannot open partition");
                                continue;
                            }
                        }
                    }
                };
                if partition.apply_state(state, now) {
                    transitions.push(Transition {
                        topic: topic.name.clone(),
                        partition: i as i32,
                        leader: state.leader == me,
                    });
                }
            }
        }
        let gone: Vec<(String, i32)> = self
            .partitions
            .read()
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.remove_partition(&key);
            transitions.push(Transition {
                topic: key.0.clone(),
                partition: key.1,
                leader: false,
            });
        }
        self.topic_configs
            .lock()
            .retain(|name, _| image.topics.contains_key(name));
        if !self.swept.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.sweep_strays(&wanted);
        }
        self.notify_appended();
        transitions
    }

    fn open_partition(
        &self,
        topic: &str,
        topic_id: Uuid,
        index: i32,
        log_config: &LogConfig,
    ) -> Result<Arc<Partition>, TopicError> {
        let log = Log::open(
            &partition_dir(&self.config, topic, index),
            log_config.clone(),
            now_ms(),
        )?;
        let partition = Arc::new(Partition::new(
            topic.to_string(),
            topic_id,
            index,
            log,
            self.config.node_id,
            self.appended.clone(),
        ));
        self.partitions
            .write()
            .insert((topic.to_string(), index), partition.clone());
        Ok(partition)
    }

    /// Stops hosting a partition and deletes its files at once. Requests and fetchers
    /// still holding it keep valid file handles (unlinked files stay readable) and can
    /// no longer change it (`Partition::resign`). Waiting here for them to let go would
    /// hold up the whole metadata image, and with it every other partition's role change:
    /// a broker that keeps leading in an epoch the controller has ended accepts writes
    /// that the new leader never sees.
    fn remove_partition(&self, key: &(String, i32)) {
        let removed = self.partitions.write().remove(key);
        if let Some(partition) = &removed {
            partition.resign();
        }
        drop(removed);
        let dir = partition_dir(&self.config, &key.0, key.1);
        let result = match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(TopicError::from(LogError::from(e))),
        };
        match result {
            Ok(()) => tracing::info!(topic = %key.0, partition = key.1, "partition removed"),
            Err(e) => {
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "cannot delete partition files")
            }
        }
    }

    /// Partition directories of topics deleted (or moved away) while this broker was
    /// down: nothing refers to them any more.
    fn sweep_strays(&self, wanted: &HashSet<(String, i32)>) {
        let Ok(entries) = std::fs::read_dir(&self.config.log_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some((topic, index)) = name.rsplit_once('-') else {
                continue;
            };
            let Ok(index) = index.parse::<i32>() else {
                continue;
            };
            if topic.starts_with("__cluster_metadata")
                || validate_topic_name(topic).is_err()
                || !entry.path().is_dir()
                || wanted.contains(&(topic.to_string(), index))
            {
                continue;
            }
            tracing::info!(dir = %entry.path().display(), "removing partition no longer hosted here");
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::error!(dir = %entry.path().display(), error = %e, "cannot remove stray partition");
            }
        }
    }

    /// Follower partitions by the broker that leads them.
    pub fn followers_by_leader(&self) -> HashMap<i32, Vec<Arc<Partition>>> {
        let mut out: HashMap<i32, Vec<Arc<Partition>>> = HashMap::new();
        for p in self.all_partitions() {
            if let Some((leader, ..)) = p.follower_position() {
                out.entry(leader).or_default().push(p);
            }
        }
        out
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
}

fn topic_record(t: &TopicImage) -> TopicRecord {
    TopicRecord {
        name: t.name.clone(),
        id: t.topic_id,
        partitions: t.partitions.len() as i32,
        replication_factor: t
            .partitions
            .first()
            .map_or(0, |p| (p.replicas.len() - p.removing.len()) as i16),
        configs: t.configs.clone(),
    }
}

fn partition_dir(config: &BrokerConfig, topic: &str, partition: i32) -> PathBuf {
    config.log_dir.join(format!("{topic}-{partition}"))
}

/// At shutdown, in-flight requests hold a partition briefly; give them a moment to let
/// go so the log closes with its clean-shutdown marker.
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

    /// Tests run on their own thread, which has entered the runtime.
    fn wait<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Handle::current().block_on(f)
    }

    #[test]
    fn topics_are_created_grown_and_deleted_but_internal_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::dev("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        let cluster = crate::cluster::testing::SingleNode::start(config.clone());
        let rm = cluster.replicas.clone();
        let t = wait(rm.create_topic("orders", 2, 1, BTreeMap::new(), false)).unwrap();
        assert_eq!(t.partitions, 2);
        assert!(dir.path().join("orders-1").is_dir());
        assert!(matches!(
            wait(rm.create_topic("orders", 1, 1, BTreeMap::new(), false)),
            Err(TopicError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            wait(rm.create_topic("bad", 0, 1, BTreeMap::new(), false)),
            Err(TopicError::InvalidPartitions(_))
        ));
        assert!(matches!(
            wait(rm.create_topic(
                "bad",
                MAX_PARTITIONS_PER_TOPIC + 1,
                1,
                BTreeMap::new(),
                false
            )),
            Err(TopicError::InvalidPartitions(_))
        ));
        assert!(matches!(
            wait(rm.create_topic("bad", 1, 3, BTreeMap::new(), false)),
            Err(TopicError::InvalidReplicationFactor(_))
        ));
        assert_eq!(
            wait(rm.create_partitions("orders", 3, false))
                .unwrap()
                .partitions,
            3
        );
        assert!(rm.partition("orders", 2).is_some());
        assert!(matches!(
            wait(rm.create_partitions("orders", 3, false)),
            Err(TopicError::InvalidPartitions(_))
        ));
        wait(rm.create_topic(crate::group::OFFSETS_TOPIC, 1, 1, BTreeMap::new(), false)).unwrap();
        assert!(matches!(
            wait(rm.delete_topic(crate::group::OFFSETS_TOPIC)),
            Err(TopicError::InternalTopic(_))
        ));
        assert_eq!(wait(rm.delete_topic("orders")).unwrap().partitions, 3);
        assert!(!dir.path().join("orders-0").exists());
        assert!(rm.partition("orders", 0).is_none());
        drop(rm);
        cluster.stop();
        // Reopened: the internal topic is still there, the deleted one is not.
        let cluster = crate::cluster::testing::SingleNode::start(config);
        let rm = cluster.replicas.clone();
        assert!(rm.topic(crate::group::OFFSETS_TOPIC).is_some());
        assert!(rm.partition(crate::group::OFFSETS_TOPIC, 0).is_some());
        assert!(rm.topic("orders").is_none());
        drop(rm);
        cluster.stop();
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
