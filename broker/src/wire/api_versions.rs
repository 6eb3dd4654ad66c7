//! ApiVersions (KIP-511) and the table of what this broker really serves.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

/// Every API and version range the broker handles. Each range is within what the
/// kafka-protocol crate can decode; `dispatch` rejects anything outside it.
const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    // v10 of both: the crate's decoders stop at v9 (as Kafka 4.1 advertises).
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::UnregisterBroker, 0, 0),
];

/// The supported range of an API, clamped to what the crate decodes.
pub fn supported_versions(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| {
            let crate_range = key.valid_versions();
            (min.max(crate_range.min), max.min(crate_range.max))
        })
}

pub fn is_supported(key: ApiKey, version: i16) -> bool {
    supported_versions(key).is_some_and(|(min, max)| (min..=max).contains(&version))
}

/// Every API and the version range ApiVersions advertises for it.
pub fn advertised() -> impl Iterator<Item = (ApiKey, i16, i16)> {
    SUPPORTED
        .iter()
        .filter_map(|&(key, _, _)| supported_versions(key).map(|(min, max)| (key, min, max)))
}

fn api_keys() -> Vec<ApiVersion> {
    advertised()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

pub fn handle(_request: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// KIP-511: a client asking for a version we do not know gets error 35 and our
/// ranges, encoded as v0 so that any client can read it.
pub fn unsupported_version() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_ranges_are_within_the_crate_and_non_empty() {
        for v in api_keys() {
            let key = ApiKey::try_from(v.api_key).unwrap();
            let crate_range = key.valid_versions();
            assert!(v.min_version <= v.max_version, "{key:?}");
            assert!(
                v.min_version >= crate_range.min && v.max_version <= crate_range.max,
                "{key:?}"
            );
        }
        assert_eq!(supported_versions(ApiKey::ApiVersions), Some((0, 4)));
        assert!(is_supported(ApiKey::Fetch, 12));
        assert!(!is_supported(ApiKey::Fetch, 3));
        assert!(!is_supported(ApiKey::AddPartitionsToTxn, 0));
        assert_eq!(supported_versions(ApiKey::UnregisterBroker), Some((0, 0)));
    }
}
