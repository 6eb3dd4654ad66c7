//! What a log dir knows about itself (`meta.properties`: its node id), the topic view
//! handlers use, and atomic file writes. Cluster metadata itself is the Raft quorum's
//! image (`crate::cluster`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata i/o at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("log dir {dir} belongs to node.id {found}, but this broker is node.id {expected}")]
    NodeIdClash {
        dir: PathBuf,
        found: i32,
        expected: i32,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    #[serde(default)]
    pub replication_factor: i16,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// A log dir's identity, from `meta.properties`.
pub struct MetaProperties {
    cluster_id: String,
}

impl MetaProperties {
    /// Reads (or writes, on first start) `meta.properties` in `log_dir`, refusing a dir
    /// formatted for another node id.
    pub fn open(log_dir: &Path, node_id: i32) -> Result<Self, MetadataError> {
        fs::create_dir_all(log_dir).map_err(|source| io_err(log_dir, source))?;
        let cluster_id = read_or_format_meta_properties(log_dir, node_id)?;
        Ok(MetaProperties { cluster_id })
    }

    /// The id written when the dir was formatted. The cluster's own id lives in the
    /// metadata image; this one only identifies the directory.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }
}

/// Kafka keeps `meta.properties` in each log dir; we do too, so a log dir handed to the
/// wrong node is refused instead of silently served.
fn read_or_format_meta_properties(log_dir: &Path, node_id: i32) -> Result<String, MetadataError> {
    let path = log_dir.join("meta.properties");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mut cluster_id = None;
            let mut found_node = None;
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    match k.trim() {
                        "cluster.id" => cluster_id = Some(v.trim().to_string()),
                        "node.id" => found_node = v.trim().parse::<i32>().ok(),
                        _ => {}
                    }
                }
            }
            let corrupt = |reason: &str| MetadataError::Corrupt {
                path: path.clone(),
                reason: reason.to_string(),
            };
            let found = found_node.ok_or_else(|| corrupt("no node.id"))?;
            if found != node_id {
                return Err(MetadataError::NodeIdClash {
                    dir: log_dir.to_path_buf(),
                    found,
                    expected: node_id,
                });
            }
            cluster_id.ok_or_else(|| corrupt("no cluster.id"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cluster_id = cluster_id_from(Uuid::new_v4());
            let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
            write_atomically(&path, text.as_bytes())?;
            Ok(cluster_id)
        }
        Err(source) => Err(io_err(&path, source)),
    }
}

/// A fresh cluster id in Kafka's format.
pub fn new_cluster_id() -> String {
    cluster_id_from(Uuid::new_v4())
}

/// Kafka's cluster ids are URL-safe base64 of a UUID without padding (22 chars).
fn cluster_id_from(uuid: Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid.as_bytes();
    let mut out = String::with_capacity(22);
    let mut bits: u32 = 0;
    let mut nbits = 0;
    for &b in bytes {
        bits = (bits << 8) | b as u32;
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

/// Write to a temp file, fsync, rename over, fsync the directory: a crash leaves either
/// the old or the new file, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), MetadataError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn io_err(path: &Path, source: std::io::Error) -> MetadataError {
    MetadataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dir_keeps_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = MetaProperties::open(dir.path(), 1)
            .unwrap()
            .cluster_id()
            .to_string();
        assert_eq!(id.len(), 22);
        assert_eq!(
            MetaProperties::open(dir.path(), 1).unwrap().cluster_id(),
            id
        );
    }

    #[test]
    fn a_log_dir_of_another_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        MetaProperties::open(dir.path(), 1).unwrap();
        let err = MetaProperties::open(dir.path(), 2).err().unwrap();
        assert!(matches!(
            err,
            MetadataError::NodeIdClash {
                found: 1,
                expected: 2,
                ..
            }
        ));
    }
}
