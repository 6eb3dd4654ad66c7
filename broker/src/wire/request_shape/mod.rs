//! Checks a request frame's lengths and counts against the bytes it really has before
//! the kafka-protocol crate decodes it. The crate sizes a `Vec` from an array count
//! on the wire before reading one element (0x7fffffff topics in an 18-byte Metadata
//! request asked for 154 GB and aborted the process); Kafka's generated readers
//! refuse such counts, and so does this walk, with each API's request layout
//! (`apis.rs`) for every version the broker accepts.

mod apis;
pub mod sample;
mod schema;
mod walk;

use kafka_protocol::messages::ApiKey;

pub use schema::RequestShape;
pub use walk::{ShapeError, MAX_ARRAY_ELEMENTS};

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no request layout for {key:?} v{version}")]
    UnknownVersion { key: ApiKey, version: i16 },
    #[error(transparent)]
    Shape(#[from] ShapeError),
}

/// The layout of `key`'s request at `version`, if the broker serves that version.
pub fn shape(key: ApiKey, version: i16) -> Option<&'static RequestShape> {
    apis::SHAPES
        .iter()
        .find(|s| s.key == key && s.covers(version))
}

/// Checks a whole request frame (header and body, without the size prefix).
pub fn check(key: ApiKey, version: i16, frame: &[u8]) -> Result<(), RequestError> {
    let shape = shape(key, version).ok_or(RequestError::UnknownVersion { key, version })?;
    let header = walk::check_header(key.request_header_version(version), frame)?;
    walk::check_body(shape, version, &frame[header..])?;
    Ok(())
}

/// Every shape: the seed corpus and the tests walk them all.
pub fn shapes() -> &'static [RequestShape] {
    apis::SHAPES
}

#[cfg(test)]
mod tests;
