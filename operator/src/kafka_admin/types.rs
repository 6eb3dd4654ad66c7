//! What the admin calls return, in Kafka's terms and free of wire types.

use std::collections::BTreeMap;
use std::fmt;

use super::error::KafkaError;

/// A topic id as Kafka prints it (`kafka-topics.sh --describe`): URL-safe base64 of
/// the 16 bytes, without padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub [u8; 16]);

impl TopicId {
    /// `None` for the all-zero id, which Kafka uses for "no id".
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(TopicId(bytes))
    }

    /// The RFC 4122 text form, for comparing with tools that print UUIDs.
    pub fn hyphenated(&self) -> String {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::with_capacity(22);
        for chunk in self.0.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        f.write_str(&out)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Only DescribeCluster v2+ reports fenced brokers; Metadata lists unfenced ones.
    pub is_fenced: bool,
}

impl BrokerInfo {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// DescribeCluster: who is in the cluster and who is the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: String,
    /// -1 when the broker knows no controller.
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
}

/// Metadata: brokers, controller and topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    /// -1 when the broker knows no controller.
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicMetadata>,
}

impl ClusterMetadata {
    pub fn topic(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// (topic, partition) -> replicas of every partition listed, internal topics
    /// included. During a reassignment Kafka lists the target replicas, then those leaving.
    pub fn assignments(&self) -> BTreeMap<(String, i32), Vec<i32>> {
        self.partitions()
            .map(|(t, p)| ((t.name.clone(), p.partition), p.replicas.clone()))
            .collect()
    }

    /// (topic, partition) -> leader id (-1: none).
    pub fn leaders(&self) -> BTreeMap<(String, i32), i32> {
        self.partitions()
            .map(|(t, p)| ((t.name.clone(), p.partition), p.leader))
            .collect()
    }

    fn partitions(&self) -> impl Iterator<Item = (&TopicMetadata, &PartitionMetadata)> {
        self.topics
            .iter()
            .filter(|t| t.error.is_none())
            .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    /// `None` before Metadata v10, or when the broker sent the zero id.
    pub topic_id: Option<TopicId>,
    pub is_internal: bool,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionMetadata>,
    /// A topic-level error code (the partitions are then usually empty).
    pub error: Option<KafkaError>,
}

impl TopicMetadata {
    /// As `kafka-topics.sh` reports it: the replica count of the first partition.
    pub fn replication_factor(&self) -> i16 {
        self.partitions
            .first()
            .map_or(0, |p| p.replicas.len() as i16)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: i32,
    /// -1 when there is no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    /// LEADER_NOT_AVAILABLE and the like.
    pub error: Option<KafkaError>,
}

/// What CreateTopics answered (counts from v5, the id from v7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    pub topic_id: Option<TopicId>,
    pub partitions: i32,
    pub replication_factor: i16,
}

/// One partition to move (`replicas` = the target list) or, with `None`, whose
/// ongoing reassignment to cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignmentTarget {
    pub topic: String,
    pub partition: i32,
    pub replicas: Option<Vec<i32>>,
}

/// What UnregisterBroker came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unregistered {
    /// The quorum forgot the broker.
    Done,
    /// It was not registered (already unregistered, or never was).
    NotRegistered,
    /// The brokers do not serve UnregisterBroker (yet): the broker stays registered, fenced.
    Unsupported,
}

/// The outcome of a preferred-leader election for one partition; `None`: elected (or
/// already the leader: ELECTION_NOT_NEEDED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionResult {
    pub topic: String,
    pub partition: i32,
    pub error: Option<KafkaError>,
}

/// An ongoing reassignment as ListPartitionReassignments reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_id_prints_like_kafka_and_like_a_uuid() {
        let id = TopicId([
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]);
        // java: Base64.getUrlEncoder().withoutPadding() of the same bytes.
        assert_eq!(id.to_string(), "ABEiM0RVZneImaq7zN3u_w");
        assert_eq!(id.hyphenated(), "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(TopicId::from_bytes([0; 16]), None);
        assert_eq!(TopicId::from_bytes([1; 16]), Some(TopicId([1; 16])));
    }
}
