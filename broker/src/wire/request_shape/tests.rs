use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::{encode_request_header_into_buffer, StrBytes};

use super::*;
use crate::wire::api_versions;

fn versions(s: &RequestShape) -> impl Iterator<Item = i16> {
    s.min..=s.max
}

fn frame(key: ApiKey, version: i16, body: &[u8]) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("rill-test")));
    let mut out = BytesMut::new();
    encode_request_header_into_buffer(&mut out, &header).unwrap();
    out.extend_from_slice(body);
    out.to_vec()
}

/// Each shape, version by version, against the crate: a sample built from the shape
/// (0, 1 and 2 elements per array) decodes, re-encodes to the same bytes, and the
/// walk takes exactly all of it. A field missing, extra, out of order or of the
/// wrong type in a shape makes one of the three fail.
#[test]
fn every_shape_round_trips_through_the_crate_decoder_in_every_version() {
    let mut checked = 0;
    for s in shapes() {
        for version in versions(s) {
            for width in 0..=2 {
                let body = sample::body(s, version, width, version as u8);
                let ctx = format!("{:?} v{version} width {width}", s.key);
                let used =
                    walk::check_body(s, version, &body).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                assert_eq!(used, body.len(), "{ctx}: walk stopped early");
                let decoded = RequestKind::decode(s.key, &mut Bytes::from(body.clone()), version)
                    .unwrap_or_else(|e| panic!("{ctx}: crate refused the sample: {e}"));
                let mut encoded = BytesMut::new();
                decoded.encode(&mut encoded, version).unwrap();
                assert_eq!(
                    encoded.to_vec(),
                    body,
                    "{ctx}: crate re-encoded differently"
                );
                check(s.key, version, &frame(s.key, version, &body))
                    .unwrap_or_else(|e| panic!("{ctx}: whole frame: {e}"));
                checked += 1;
            }
        }
    }
    assert!(checked > 400, "{checked} samples");
}

#[test]
fn every_advertised_api_and_version_has_a_shape() {
    for (key, min, max) in api_versions::advertised() {
        for version in min..=max {
            assert!(
                shape(key, version).is_some(),
                "{key:?} v{version} has no shape"
            );
        }
    }
}

/// The frames from the issue: Metadata v1 and v12 asking for 0x7fffffff topics.
#[test]
fn huge_array_counts_are_refused_before_decoding() {
    let v1 = hex("000300010000000100007fffffff");
    let err = check(ApiKey::Metadata, 1, &v1).unwrap_err();
    assert!(
        matches!(
            err,
            RequestError::Shape(ShapeError::ArrayTooLong {
                field: "topics",
                count: 0x7fffffff,
                ..
            })
        ),
        "{err}"
    );
    let v12 = hex("0003000c00000001000000ffffffff0f");
    let err = check(ApiKey::Metadata, 12, &v12).unwrap_err();
    assert!(
        matches!(
            err,
            RequestError::Shape(ShapeError::ArrayTooLong {
                field: "topics",
                ..
            })
        ),
        "{err}"
    );
}

#[test]
fn a_count_is_judged_by_the_smallest_element_it_could_be() {
    // Metadata v12: each topic is at least a uuid (16), a compact name (1) and its
    // tagged fields (1). Two elements announced with 20 bytes left is one too many.
    let mut body = vec![3]; // compact count 2
    body.extend_from_slice(&[0; 20]);
    let shape = shape(ApiKey::Metadata, 12).unwrap();
    let err = walk::check_body(shape, 12, &body).unwrap_err();
    assert_eq!(
        err,
        ShapeError::ArrayTooLong {
            field: "topics",
            count: 2,
            min_size: 18,
            left: 20
        }
    );
}

#[test]
fn lengths_past_the_end_negative_lengths_and_long_varints_are_refused() {
    let shape = shape(ApiKey::Heartbeat, 0).unwrap();
    // group_id of 100 bytes with 3 there.
    let body = [0, 100, b'a', b'b', b'c'];
    assert!(matches!(
        walk::check_body(shape, 0, &body),
        Err(ShapeError::Truncated {
            field: "group_id",
            needed: 97
        })
    ));
    let body = [0xff, 0xfe];
    assert!(matches!(
        walk::check_body(shape, 0, &body),
        Err(ShapeError::NegativeLength {
            field: "group_id",
            len: -2
        })
    ));
    let shape = super::shape(ApiKey::Heartbeat, 4).unwrap();
    let body = [0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
    assert!(matches!(
        walk::check_body(shape, 4, &body),
        Err(ShapeError::Varint { field: "group_id" })
    ));
}

#[test]
fn a_known_tagged_field_must_fill_the_size_it_announces() {
    // Fetch's tag 0 is the cluster id, a compact string: announcing 5 bytes for a
    // 3-byte string would put the decoder and the walk out of step.
    let shape = shape(ApiKey::Fetch, 12).unwrap();
    let mut body = sample::body(shape, 12, 0, 1);
    assert_eq!(
        body.pop(),
        Some(0),
        "the request's own tagged fields come last"
    );
    body.extend_from_slice(&[1, 0, 5, 3, b'a', b'b', 0, 0]);
    assert_eq!(
        walk::check_body(shape, 12, &body),
        Err(ShapeError::TagSize {
            field: "FetchRequest",
            tag: 0,
            size: 5,
            used: 3
        })
    );
    // Told the truth, the same tag passes; an unknown tag is only skipped.
    let n = body.len();
    body[n - 6] = 3;
    body.truncate(n - 2);
    assert_eq!(walk::check_body(shape, 12, &body), Ok(body.len()));
    body[n - 7] = 9;
    assert_eq!(walk::check_body(shape, 12, &body), Ok(body.len()));
}

#[test]
fn every_truncation_of_a_sample_is_refused_or_stops_inside_it() {
    for s in shapes() {
        for version in versions(s) {
            let body = sample::body(s, version, 2, 3);
            for cut in 0..body.len() {
                if let Ok(used) = walk::check_body(s, version, &body[..cut]) {
                    assert!(used <= cut, "{:?} v{version}", s.key);
                }
            }
        }
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The request fuzzer's seed corpus (`fuzz/corpus/request/`) is one frame per API
/// and version served. `RILL_WRITE_SEEDS=1 cargo test -p rill-broker seed_corpus`
/// writes it anew.
#[test]
fn seed_corpus_is_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/request");
    let write = std::env::var_os("RILL_WRITE_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for s in shapes() {
        for version in versions(s) {
            let frame = sample::frame(s, version, 1, version as u8);
            let payload = &frame[4..];
            check(s.key, version, payload).unwrap();
            let path = dir.join(format!("{:?}-v{version}", s.key));
            if write {
                std::fs::write(&path, &frame).unwrap();
            } else {
                let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!(
                        "{}: {e}; run RILL_WRITE_SEEDS=1 cargo test -p rill-broker seed_corpus",
                        path.display()
                    )
                });
                assert_eq!(on_disk, frame, "{} is stale", path.display());
            }
        }
    }
}
