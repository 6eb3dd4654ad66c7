//! Producer ids for InitProducerId, unique across restarts and (later) across brokers.
//!
//! Ids are handed out from blocks, as Kafka does (KIP-730): a broker reserves a block
//! of [`BLOCK_SIZE`] ids from the owner of the id space, then serves InitProducerId
//! from memory. A restart abandons the rest of the block, which costs nothing but ids.
//! Today the owner is a file in the broker's metadata dir; with the Raft quorum it is
//! the quorum (Kafka's AllocateProducerIds), behind the same [`ProducerIdBlockSource`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::metadata::{write_atomically, MetadataError};

/// Kafka's block size.
pub const BLOCK_SIZE: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error(transparent)]
    Storage(#[from] MetadataError),
    #[error("producer id file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the producer id space is exhausted")]
    Exhausted,
    #[error("no producer id block from the controller: {0}")]
    Unavailable(String),
}

/// A contiguous range of ids reserved for this broker: `first..first + size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub first: i64,
    pub size: i64,
}

/// Whoever owns the id space and hands out disjoint blocks durably: a block returned
/// once is never returned again, to this broker or another, even after a crash.
/// Reserving one may wait for the quorum: it is awaited, never blocked on.
pub trait ProducerIdBlockSource: Send + Sync {
    fn next_block(&self) -> BoxFuture<'_, Result<ProducerIdBlock, ProducerIdError>>;
}

#[derive(Debug, Serialize, Deserialize)]
struct IdsFile {
    version: u32,
    /// The first id of the next block to reserve.
    next_block_start: i64,
}

/// Single-node owner: `<log.dirs>/meta/producer-ids`, rewritten atomically before a
/// block is handed out so no id is issued twice.
pub struct LocalBlockSource {
    path: PathBuf,
    next_block_start: Mutex<Option<i64>>,
}

impl LocalBlockSource {
    /// Nothing is read until the first block is asked for: a broker that never sees
    /// an idempotent producer never touches the file.
    pub fn new(path: PathBuf) -> Self {
        LocalBlockSource {
            path,
            next_block_start: Mutex::new(None),
        }
    }

    fn read(&self) -> Result<i64, ProducerIdError> {
        let corrupt = |reason: String| ProducerIdError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let file: IdsFile =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                if file.next_block_start < 0 {
                    return Err(corrupt(format!(
                        "negative next_block_start {}",
                        file.next_block_start
                    )));
                }
                Ok(file.next_block_start)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(MetadataError::Io {
                path: self.path.clone(),
                source,
            }
            .into()),
        }
    }
}

impl LocalBlockSource {
    fn reserve(&self) -> Result<ProducerIdBlock, ProducerIdError> {
        let mut next = self.next_block_start.lock();
        let first = match *next {
            Some(n) => n,
            None => self.read()?,
        };
        let end = first
            .checked_add(BLOCK_SIZE)
            .ok_or(ProducerIdError::Exhausted)?;
        let file = IdsFile {
            version: 1,
            next_block_start: end,
        };
        // Plain integers always serialize.
        let bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        write_atomically(&self.path, &bytes)?;
        *next = Some(end);
        Ok(ProducerIdBlock {
            first,
            size: BLOCK_SIZE,
        })
    }
}

impl ProducerIdBlockSource for LocalBlockSource {
    fn next_block(&self) -> BoxFuture<'_, Result<ProducerIdBlock, ProducerIdError>> {
        // The file is written and synced where blocking is allowed.
        Box::pin(async move { tokio::task::block_in_place(|| self.reserve()) })
    }
}

/// Hands out producer ids from the current block, fetching the next when it runs out.
pub struct ProducerIdManager {
    source: Arc<dyn ProducerIdBlockSource>,
    /// Next id to hand out and the end (exclusive) of the current block. An async
    /// lock: it is held while the next block is reserved, and requests queue on it
    /// without holding a runtime worker.
    current: tokio::sync::Mutex<(i64, i64)>,
}

impl ProducerIdManager {
    pub fn new(source: Arc<dyn ProducerIdBlockSource>) -> Self {
        ProducerIdManager {
            source,
            current: tokio::sync::Mutex::new((0, 0)),
        }
    }

    /// The single-node manager over `<log_dir>/meta/producer-ids`.
    pub fn local(log_dir: &Path) -> Self {
        ProducerIdManager::new(Arc::new(LocalBlockSource::new(
            log_dir.join("meta").join("producer-ids"),
        )))
    }

    pub async fn generate(&self) -> Result<i64, ProducerIdError> {
        let mut current = self.current.lock().await;
        if current.0 >= current.1 {
            let block = self.source.next_block().await?;
            *current = (block.first, block.first + block.size);
        }
        let id = current.0;
        current.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use futures::executor::block_on;

    use super::*;

    #[test]
    fn ids_are_unique_across_blocks_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("meta")).unwrap();
        let mut seen = HashSet::new();
        let m = ProducerIdManager::local(dir.path());
        for _ in 0..(BLOCK_SIZE + 5) {
            assert!(seen.insert(block_on(m.generate()).unwrap()));
        }
        assert_eq!(seen.iter().min(), Some(&0));
        // A restart skips the rest of the reserved block.
        let m = ProducerIdManager::local(dir.path());
        let id = block_on(m.generate()).unwrap();
        assert_eq!(id, 2 * BLOCK_SIZE);
        assert!(seen.insert(id));
    }

    #[test]
    fn a_damaged_id_file_is_an_error_not_a_reset_to_zero() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("meta")).unwrap();
        std::fs::write(dir.path().join("meta/producer-ids"), b"{not json").unwrap();
        let m = ProducerIdManager::local(dir.path());
        assert!(matches!(
            block_on(m.generate()),
            Err(ProducerIdError::Corrupt { .. })
        ));
    }
}
