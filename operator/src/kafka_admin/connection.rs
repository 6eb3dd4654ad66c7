//! One connection to one broker: ApiVersions on open, then one request at a time
//! with its own correlation id, whole frames in and out, each bounded by the request
//! timeout. A connection that failed mid-request is dropped by its owner, never reused.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey,
    ApiVersionsRequest, ApiVersionsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, ElectLeadersRequest, ElectLeadersResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, MetadataRequest,
    MetadataResponse, RequestHeader, ResponseHeader, UnregisterBrokerRequest,
    UnregisterBrokerResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::{AdminError, KafkaError};

/// Admin responses are small; anything bigger is a broken stream.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// ApiVersions v3 is the first flexible version (KIP-511); brokers that do not know it
/// answer UNSUPPORTED_VERSION in v0, and v0 is then asked.
const API_VERSIONS_FIRST_TRY: i16 = 3;

/// A request this client sends, with its API key and response type. The crate's own
/// `Request` trait exists only with its `broker` feature, which the operator leaves off.
pub(super) trait AdminRequest: Encodable + HeaderVersion + Message {
    const KEY: ApiKey;
    /// Kafka's name of the API: `CreateTopics`.
    const NAME: &'static str;
    type Response: Decodable + HeaderVersion;
}

macro_rules! admin_requests {
    ($($key:ident: $request:ty => $response:ty;)*) => {
        $(impl AdminRequest for $request {
            const KEY: ApiKey = ApiKey::$key;
            const NAME: &'static str = stringify!($key);
            type Response = $response;
        })*
    };
}

admin_requests! {
    ApiVersions: ApiVersionsRequest => ApiVersionsResponse;
    Metadata: MetadataRequest => MetadataResponse;
    DescribeCluster: DescribeClusterRequest => DescribeClusterResponse;
    CreateTopics: CreateTopicsRequest => CreateTopicsResponse;
    DeleteTopics: DeleteTopicsRequest => DeleteTopicsResponse;
    CreatePartitions: CreatePartitionsRequest => CreatePartitionsResponse;
    DescribeConfigs: DescribeConfigsRequest => DescribeConfigsResponse;
    IncrementalAlterConfigs: IncrementalAlterConfigsRequest => IncrementalAlterConfigsResponse;
    AlterPartitionReassignments: AlterPartitionReassignmentsRequest => AlterPartitionReassignmentsResponse;
    ListPartitionReassignments: ListPartitionReassignmentsRequest => ListPartitionReassignmentsResponse;
    ElectLeaders: ElectLeadersRequest => ElectLeadersResponse;
    UnregisterBroker: UnregisterBrokerRequest => UnregisterBrokerResponse;
}

pub(super) struct Connection {
    addr: String,
    stream: TcpStream,
    client_id: StrBytes,
    timeout: Duration,
    next_correlation_id: i32,
    /// API key -> the broker's (min, max) version.
    versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    pub(super) async fn open(
        addr: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Self, AdminError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(AdminError::Io {
                    addr: addr.to_string(),
                    source,
                })
            }
            Err(_) => {
                return Err(AdminError::Timeout {
                    addr: addr.to_string(),
                    api: "connect",
                    after: timeout,
                })
            }
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            addr: addr.to_string(),
            stream,
            client_id: StrBytes::from_string(client_id.to_string()),
            timeout,
            next_correlation_id: 1,
            versions: HashMap::new(),
        };
        conn.negotiate_versions().await?;
        Ok(conn)
    }

    pub(super) fn addr(&self) -> &str {
        &self.addr
    }

    async fn negotiate_versions(&mut self) -> Result<(), AdminError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("rill-operator"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut body = self.exchange(&request, API_VERSIONS_FIRST_TRY).await?;
        // Both encodings open with the error code; an old broker's refusal is in v0.
        let refused = body.len() >= 2
            && i16::from_be_bytes([body[0], body[1]]) == ResponseError::UnsupportedVersion.code();
        let version = if refused {
            body = self.exchange(&ApiVersionsRequest::default(), 0).await?;
            0
        } else {
            API_VERSIONS_FIRST_TRY
        };
        let response = ApiVersionsResponse::decode(&mut body, version)
            .map_err(|e| self.protocol(format!("undecodable ApiVersions v{version}: {e}")))?;
        if let Some(e) = KafkaError::from_code(response.error_code, None) {
            return Err(AdminError::Kafka {
                api: "ApiVersions",
                resource: self.addr.clone(),
                error: e,
            });
        }
        self.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(())
    }

    /// The highest version both this broker and the crate know.
    pub(super) fn version_for<R: AdminRequest>(&self) -> Result<i16, AdminError> {
        let api = R::NAME;
        let client = R::VERSIONS;
        let Some(&(min, max)) = self.versions.get(&(R::KEY as i16)) else {
            return Err(AdminError::UnsupportedVersion {
                addr: self.addr.clone(),
                api,
                broker_min: -1,
                broker_max: -1,
                client_min: client.min,
                client_max: client.max,
            });
        };
        let high = max.min(client.max);
        if high < min.max(client.min) {
            return Err(AdminError::UnsupportedVersion {
                addr: self.addr.clone(),
                api,
                broker_min: min,
                broker_max: max,
                client_min: client.min,
                client_max: client.max,
            });
        }
        Ok(high)
    }

    /// Sends `request` at `version` (from `version_for`) and decodes the answer.
    pub(super) async fn send<R: AdminRequest>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, AdminError> {
        let api = R::NAME;
        let mut body = self.exchange(request, version).await?;
        <R::Response as Decodable>::decode(&mut body, version)
            .map_err(|e| self.protocol(format!("undecodable {api} v{version} response: {e}")))
    }

    /// One request out, its response body (after the response header) back.
    async fn exchange<R: AdminRequest>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<Bytes, AdminError> {
        let api = R::NAME;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = self.encode(request, version, correlation_id)?;
        let timeout = self.timeout;
        let mut reply = match tokio::time::timeout(timeout, self.round_trip(&frame)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(AdminError::Timeout {
                    addr: self.addr.clone(),
                    api,
                    after: timeout,
                })
            }
        };
        let header = ResponseHeader::decode(
            &mut reply,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .map_err(|e| self.protocol(format!("undecodable {api} response header: {e}")))?;
        if header.correlation_id != correlation_id {
            return Err(self.protocol(format!(
                "{api} answered with correlation id {}, expected {correlation_id}",
                header.correlation_id
            )));
        }
        Ok(reply)
    }

    fn encode<R: AdminRequest>(
        &self,
        request: &R,
        version: i16,
        correlation_id: i32,
    ) -> Result<BytesMut, AdminError> {
        let api = R::NAME;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0); // size, patched below
        header
            .encode(&mut buf, R::header_version(version))
            .and_then(|()| request.encode(&mut buf, version))
            .map_err(|e| self.protocol(format!("cannot encode {api} v{version}: {e}")))?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        Ok(buf)
    }

    async fn round_trip(&mut self, frame: &[u8]) -> Result<Bytes, AdminError> {
        self.stream.write_all(frame).await.map_err(|e| self.io(e))?;
        let size = self.stream.read_i32().await.map_err(|e| self.io(e))?;
        if size < 0 || size as usize > MAX_RESPONSE_BYTES {
            return Err(self.protocol(format!("response frame of {size} bytes")));
        }
        let mut body = BytesMut::zeroed(size as usize);
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|e| self.io(e))?;
        Ok(body.freeze())
    }

    fn io(&self, source: std::io::Error) -> AdminError {
        AdminError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    fn protocol(&self, detail: String) -> AdminError {
        AdminError::Protocol {
            addr: self.addr.clone(),
            detail,
        }
    }
}
