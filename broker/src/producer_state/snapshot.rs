//! Producer-state snapshot files: `<partition dir>/<20-digit offset>.snapshot`, Kafka's
//! name. A snapshot at offset N holds the state of every batch below N, so a restart
//! loads it and replays only the batch headers from N to the log end.
//!
//! The format is ours: one header line `rill-producer-snapshot 1 <crc32c hex>` and a
//! JSON body the CRC-32C covers. JSON keeps it debuggable with `cat`; the CRC catches a
//! torn or damaged file, which is then ignored (the log is the truth, the snapshot only
//! a shortcut). Files are written to a temp name, synced and renamed.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::entry::ProducerEntry;

const MAGIC: &str = "rill-producer-snapshot";
const VERSION: u32 = 1;
const EXTENSION: &str = "snapshot";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("producer snapshot i/o at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("producer snapshot {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// One producer in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotProducer {
    pub producer_id: i64,
    #[serde(flatten)]
    pub entry: ProducerEntry,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The log end offset the state is complete up to (exclusive).
    pub offset: i64,
    pub producers: Vec<SnapshotProducer>,
}

pub fn file_name(offset: i64) -> String {
    format!("{offset:020}.{EXTENSION}")
}

fn offset_of(file_name: &str) -> Option<i64> {
    let stem = file_name.strip_suffix(".snapshot")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    // Serializing plain structs of integers cannot fail.
    let body = serde_json::to_vec(snapshot).unwrap_or_default();
    let mut out = format!("{MAGIC} {VERSION} {:08x}\n", crc32c::crc32c(&body)).into_bytes();
    out.extend_from_slice(&body);
    out
}

pub fn decode(path: &Path, bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|e| corrupt(e.to_string()))?;
    let body = &bytes[newline + 1..];
    let mut fields = header.split(' ');
    if fields.next() != Some(MAGIC) {
        return Err(corrupt(format!("bad header {header:?}")));
    }
    let version = fields.next().and_then(|v| v.parse::<u32>().ok());
    if version != Some(VERSION) {
        return Err(corrupt(format!("unsupported version in {header:?}")));
    }
    let crc = fields
        .next()
        .and_then(|c| u32::from_str_radix(c, 16).ok())
        .ok_or_else(|| corrupt(format!("no CRC in {header:?}")))?;
    let computed = crc32c::crc32c(body);
    if crc != computed {
        return Err(corrupt(format!(
            "CRC-32C mismatch: stored {crc:08x}, computed {computed:08x}"
        )));
    }
    serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))
}

/// Writes `snapshot` into `dir` atomically; returns its path.
pub fn write(dir: &Path, snapshot: &Snapshot) -> Result<PathBuf, SnapshotError> {
    let path = dir.join(file_name(snapshot.offset));
    // Not `<offset>.tmp`: that name could pass for another subsystem's temp file.
    let tmp = dir.join(format!("{}.tmp", file_name(snapshot.offset)));
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&encode(snapshot)).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(path)
}

pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let snapshot = decode(path, &bytes)?;
    if offset_of(&path.file_name().unwrap_or_default().to_string_lossy()) != Some(snapshot.offset) {
        return Err(SnapshotError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("holds offset {}, not its name's", snapshot.offset),
        });
    }
    Ok(snapshot)
}

/// The snapshot files of `dir` as (offset, path), oldest first. Leftover temp files
/// of an interrupted write are removed on the way.
pub fn list(dir: &Path) -> Result<Vec<(i64, PathBuf)>, SnapshotError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(offset) = offset_of(&name) {
            out.push((offset, entry.path()));
        } else if name.strip_suffix(".tmp").and_then(offset_of).is_some() {
            remove(&entry.path())?;
        }
    }
    out.sort_unstable();
    Ok(out)
}

pub fn remove(path: &Path) -> Result<(), SnapshotError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

/// Deletes all but the newest `keep` snapshots.
pub fn retain_latest(dir: &Path, keep: usize) -> Result<(), SnapshotError> {
    let all = list(dir)?;
    let excess = all.len().saturating_sub(keep);
    for (_, path) in &all[..excess] {
        remove(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::producer_state::entry::BatchMetadata;

    fn sample(offset: i64) -> Snapshot {
        Snapshot {
            offset,
            producers: vec![SnapshotProducer {
                producer_id: 1000,
                entry: ProducerEntry {
                    epoch: 2,
                    batches: VecDeque::from([BatchMetadata {
                        first_seq: 0,
                        last_seq: 4,
                        first_offset: 10,
                        last_offset: 14,
                        timestamp: 123,
                    }]),
                },
            }],
        }
    }

    #[test]
    fn write_read_round_trip_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &sample(15)).unwrap();
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            "00000000000000000015.snapshot"
        );
        assert_eq!(read(&path).unwrap(), sample(15));
        write(dir.path(), &sample(40)).unwrap();
        write(dir.path(), &sample(30)).unwrap();
        fs::write(
            dir.path().join("00000000000000000050.snapshot.tmp"),
            b"half",
        )
        .unwrap();
        let offsets: Vec<i64> = list(dir.path()).unwrap().iter().map(|e| e.0).collect();
        assert_eq!(offsets, vec![15, 30, 40]);
        assert!(!dir
            .path()
            .join("00000000000000000050.snapshot.tmp")
            .exists());
        retain_latest(dir.path(), 2).unwrap();
        let offsets: Vec<i64> = list(dir.path()).unwrap().iter().map(|e| e.0).collect();
        assert_eq!(offsets, vec![30, 40]);
    }

    #[test]
    fn damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &sample(15)).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(read(&path), Err(SnapshotError::Corrupt { .. })));
        fs::write(&path, b"").unwrap();
        assert!(matches!(read(&path), Err(SnapshotError::Corrupt { .. })));
        // A snapshot renamed to another offset is not trusted.
        let other = write(dir.path(), &sample(20)).unwrap();
        let renamed = dir.path().join(file_name(21));
        fs::rename(other, &renamed).unwrap();
        assert!(matches!(read(&renamed), Err(SnapshotError::Corrupt { .. })));
    }
}
