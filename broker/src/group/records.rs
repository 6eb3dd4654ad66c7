//! The records of `__consumer_offsets`, in Apache Kafka's own layout so that Kafka's
//! tooling can read them: offset commits (key version 1, value version 3) and group
//! metadata (key version 2, value version 3). A null value is a tombstone.

use bytes::{Buf, BufMut, Bytes, BytesMut};

#[derive(Debug, thiserror::Error)]
#[error("malformed __consumer_offsets record: {0}")]
pub struct RecordError(String);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RecordKey {
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
    },
    GroupMetadata {
        group: String,
    },
}

impl RecordKey {
    pub fn group(&self) -> &str {
        match self {
            RecordKey::OffsetCommit { group, .. } | RecordKey::GroupMetadata { group } => group,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetCommitValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetadataValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp: i64,
    pub members: Vec<MemberMetadata>,
}

pub fn encode_key(key: &RecordKey) -> Bytes {
    let mut b = BytesMut::new();
    match key {
        RecordKey::OffsetCommit {
            group,
            topic,
            partition,
        } => {
            b.put_i16(1);
            put_string(&mut b, group);
            put_string(&mut b, topic);
            b.put_i32(*partition);
        }
        RecordKey::GroupMetadata { group } => {
            b.put_i16(2);
            put_string(&mut b, group);
        }
    }
    b.freeze()
}

pub fn decode_key(mut b: &[u8]) -> Result<RecordKey, RecordError> {
    let version = get_i16(&mut b)?;
    match version {
        0 | 1 => Ok(RecordKey::OffsetCommit {
            group: get_string(&mut b)?,
            topic: get_string(&mut b)?,
            partition: get_i32(&mut b)?,
        }),
        2 => Ok(RecordKey::GroupMetadata {
            group: get_string(&mut b)?,
        }),
        v => Err(RecordError(format!("unknown key version {v}"))),
    }
}

pub fn encode_offset_commit(v: &OffsetCommitValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    b.put_i64(v.offset);
    b.put_i32(v.leader_epoch);
    put_string(&mut b, &v.metadata);
    b.put_i64(v.commit_timestamp);
    b.freeze()
}

pub fn decode_offset_commit(mut b: &[u8]) -> Result<OffsetCommitValue, RecordError> {
    let version = get_i16(&mut b)?;
    let offset = get_i64(&mut b)?;
    let leader_epoch = if version >= 3 { get_i32(&mut b)? } else { -1 };
    let metadata = get_string(&mut b)?;
    let commit_timestamp = get_i64(&mut b)?;
    Ok(OffsetCommitValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

pub fn encode_group_metadata(v: &GroupMetadataValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    put_string(&mut b, &v.protocol_type);
    b.put_i32(v.generation);
    put_nullable_string(&mut b, v.protocol.as_deref());
    put_nullable_string(&mut b, v.leader.as_deref());
    b.put_i64(v.current_state_timestamp);
    b.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_string(&mut b, &m.member_id);
        put_nullable_string(&mut b, m.group_instance_id.as_deref());
        put_string(&mut b, &m.client_id);
        put_string(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        b.put_i32(m.subscription.len() as i32);
        b.put_slice(&m.subscription);
        b.put_i32(m.assignment.len() as i32);
        b.put_slice(&m.assignment);
    }
    b.freeze()
}

pub fn decode_group_metadata(mut b: &[u8]) -> Result<GroupMetadataValue, RecordError> {
    let version = get_i16(&mut b)?;
    if !(0..=4).contains(&version) {
        return Err(RecordError(format!(
            "unknown group metadata version {version}"
        )));
    }
    let protocol_type = get_string(&mut b)?;
    let generation = get_i32(&mut b)?;
    let protocol = get_nullable_string(&mut b)?;
    let leader = get_nullable_string(&mut b)?;
    let current_state_timestamp = if version >= 2 { get_i64(&mut b)? } else { -1 };
    let count = get_i32(&mut b)?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = get_string(&mut b)?;
        let group_instance_id = if version >= 3 {
            get_nullable_string(&mut b)?
        } else {
            None
        };
        let client_id = get_string(&mut b)?;
        let client_host = get_string(&mut b)?;
        let rebalance_timeout_ms = if version >= 1 { get_i32(&mut b)? } else { -1 };
        let session_timeout_ms = get_i32(&mut b)?;
        let subscription = get_bytes(&mut b)?;
        let assignment = get_bytes(&mut b)?;
        members.push(MemberMetadata {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp,
        members,
    })
}

/// The topics a consumer subscribed to, read from its ConsumerProtocolSubscription
/// (version i16, then an array of topic names). Used to refuse OffsetDelete on topics
/// a live group still consumes.
pub fn subscribed_topics(mut subscription: &[u8]) -> Vec<String> {
    let mut topics = Vec::new();
    if get_i16(&mut subscription).is_err() {
        return topics;
    }
    let Ok(count) = get_i32(&mut subscription) else {
        return topics;
    };
    for _ in 0..count.max(0) {
        match get_string(&mut subscription) {
            Ok(t) => topics.push(t),
            Err(_) => break,
        }
    }
    topics
}

fn put_string(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_nullable_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(b, s),
        None => b.put_i16(-1),
    }
}

fn need(b: &[u8], n: usize) -> Result<(), RecordError> {
    if b.len() < n {
        Err(RecordError(format!(
            "needed {n} more bytes, had {}",
            b.len()
        )))
    } else {
        Ok(())
    }
}

fn get_i16(b: &mut &[u8]) -> Result<i16, RecordError> {
    need(b, 2)?;
    Ok(b.get_i16())
}

fn get_i32(b: &mut &[u8]) -> Result<i32, RecordError> {
    need(b, 4)?;
    Ok(b.get_i32())
}

fn get_i64(b: &mut &[u8]) -> Result<i64, RecordError> {
    need(b, 8)?;
    Ok(b.get_i64())
}

fn get_nullable_string(b: &mut &[u8]) -> Result<Option<String>, RecordError> {
    let len = get_i16(b)?;
    if len < 0 {
        return Ok(None);
    }
    need(b, len as usize)?;
    let s =
        String::from_utf8(b[..len as usize].to_vec()).map_err(|e| RecordError(e.to_string()))?;
    b.advance(len as usize);
    Ok(Some(s))
}

fn get_string(b: &mut &[u8]) -> Result<String, RecordError> {
    Ok(get_nullable_string(b)?.unwrap_or_default())
}

fn get_bytes(b: &mut &[u8]) -> Result<Bytes, RecordError> {
    let len = get_i32(b)?;
    if len < 0 {
        return Ok(Bytes::new());
    }
    need(b, len as usize)?;
    let out = Bytes::copy_from_slice(&b[..len as usize]);
    b.advance(len as usize);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let k = RecordKey::OffsetCommit {
            group: "g".into(),
            topic: "t".into(),
            partition: 7,
        };
        assert_eq!(decode_key(&encode_key(&k)).unwrap(), k);
        let k = RecordKey::GroupMetadata { group: "g".into() };
        assert_eq!(decode_key(&encode_key(&k)).unwrap(), k);
        let v = OffsetCommitValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp: 1000,
        };
        assert_eq!(decode_offset_commit(&encode_offset_commit(&v)).unwrap(), v);
        let g = GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp: 9,
            members: vec![MemberMetadata {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300000,
                session_timeout_ms: 45000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(
            decode_group_metadata(&encode_group_metadata(&g)).unwrap(),
            g
        );
    }

    #[test]
    fn the_key_layout_is_kafkas() {
        // version 1, "g", "t", partition 7
        assert_eq!(
            encode_key(&RecordKey::OffsetCommit {
                group: "g".into(),
                topic: "t".into(),
                partition: 7
            })
            .as_ref(),
            &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7]
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let full = encode_offset_commit(&OffsetCommitValue {
            offset: 1,
            leader_epoch: 1,
            metadata: "abc".into(),
            commit_timestamp: 1,
        });
        for n in 0..full.len() {
            assert!(decode_offset_commit(&full[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn subscription_topics_are_read() {
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i32(2);
        put_string(&mut b, "a");
        put_string(&mut b, "bb");
        b.put_i32(-1);
        assert_eq!(
            subscribed_topics(&b),
            vec!["a".to_string(), "bb".to_string()]
        );
        assert!(subscribed_topics(&[0]).is_empty());
    }
}
