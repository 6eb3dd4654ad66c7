//! "Authorized operations" (KIP-430) in Metadata, DescribeCluster and DescribeGroups.
//! Without an authorizer Kafka allows everything and reports every operation its ACL
//! model defines for the resource type (AclEntry.supportedOperations), as a bit field
//! of `AclOperation` codes. Clients show these (DescribeTopics, DescribeCluster), and
//! librdkafka's admin tests compare them with what Kafka reports.

/// `AclOperation` codes (Kafka's `org.apache.kafka.common.acl.AclOperation`).
const READ: u8 = 3;
const WRITE: u8 = 4;
const CREATE: u8 = 5;
const DELETE: u8 = 6;
const ALTER: u8 = 7;
const DESCRIBE: u8 = 8;
const CLUSTER_ACTION: u8 = 9;
const DESCRIBE_CONFIGS: u8 = 10;
const ALTER_CONFIGS: u8 = 11;
const IDEMPOTENT_WRITE: u8 = 12;

const TOPIC: &[u8] = &[
    READ,
    WRITE,
    CREATE,
    DESCRIBE,
    DELETE,
    ALTER,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
];
const GROUP: &[u8] = &[READ, DESCRIBE, DELETE, DESCRIBE_CONFIGS, ALTER_CONFIGS];
const CLUSTER: &[u8] = &[
    CREATE,
    CLUSTER_ACTION,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
    IDEMPOTENT_WRITE,
    ALTER,
    DESCRIBE,
];

fn bit_field(operations: &[u8]) -> i32 {
    operations.iter().fold(0, |field, &op| field | (1 << op))
}

pub fn topic() -> i32 {
    bit_field(TOPIC)
}

pub fn group() -> i32 {
    bit_field(GROUP)
}

pub fn cluster() -> i32 {
    bit_field(CLUSTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bit fields: topic READ..ALTER_CONFIGS without CLUSTER_ACTION (9); the e2e
    /// test compares what clients see with Kafka's answer.
    #[test]
    fn every_operation_of_the_resource_type_is_reported() {
        assert_eq!(topic(), 0b1101_1111_1000);
        assert_eq!(group(), 0b1101_0100_1000);
        assert_eq!(cluster(), 0b1_1111_1010_0000);
    }
}
