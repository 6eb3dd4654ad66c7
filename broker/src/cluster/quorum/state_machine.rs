//! The Raft state machine: committed metadata commands applied to the shared
//! [`MetadataImage`], and snapshots of that image.
//!
//! The image itself is not persisted on every apply; the snapshot is. `snapshot.json` in
//! the quorum directory holds `{meta, image}` (meta carries the last applied log id and
//! membership) and is replaced atomically. At start it is loaded before openraft replays
//! the log after it, so purged entries are never needed again.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::files::{blocking, read_json, write_atomic};
use super::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::cluster::{CommandResult, MetadataImage};

const SNAPSHOT_FILE: &str = "snapshot.json";

/// What `snapshot.json` and a transferred snapshot hold.
#[derive(Serialize, Deserialize)]
struct SnapshotDoc {
    meta: SnapshotMeta,
    image: MetadataImage,
}

/// The snapshot on disk, shared by the state machine and its (spawned) builders. The lock
/// is held across the file write so a late builder cannot replace a newer snapshot; it is
/// never held across an await.
#[derive(Default)]
struct SnapshotSlot {
    current: Option<SnapshotMeta>,
}

pub struct StateMachine {
    dir: PathBuf,
    image: Arc<RwLock<MetadataImage>>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    applied_tx: watch::Sender<u64>,
    snapshot: Arc<Mutex<SnapshotSlot>>,
    /// Makes snapshot ids unique when two snapshots cover the same log id.
    snapshot_seq: Arc<AtomicU64>,
}

pub struct SnapshotBuilder {
    dir: PathBuf,
    image: MetadataImage,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshot: Arc<Mutex<SnapshotSlot>>,
    snapshot_seq: Arc<AtomicU64>,
}

fn snapshot_err(
    meta: Option<&SnapshotMeta>,
    e: &(impl std::error::Error + 'static),
) -> StorageError {
    StorageIOError::write_snapshot(meta.map(|m| m.signature()), e).into()
}

impl StateMachine {
    /// Opens the state machine in `dir`: the image becomes the stored snapshot's image, or
    /// an empty one when there is none (the log replay rebuilds the rest). Blocking.
    pub fn open(
        dir: &Path,
        image: Arc<RwLock<MetadataImage>>,
        applied_tx: watch::Sender<u64>,
    ) -> io::Result<StateMachine> {
        std::fs::create_dir_all(dir)?;
        let doc: Option<SnapshotDoc> = read_json(&dir.join(SNAPSHOT_FILE))?;
        let (last_applied, membership, current) = match doc {
            Some(doc) => {
                *image.write() = doc.image;
                (
                    doc.meta.last_log_id,
                    doc.meta.last_membership.clone(),
                    Some(doc.meta),
                )
            }
            None => {
                *image.write() = MetadataImage::default();
                (None, StoredMembership::default(), None)
            }
        };
        applied_tx.send_replace(last_applied.map_or(0, |id| id.index));
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            image,
            last_applied,
            membership,
            applied_tx,
            snapshot: Arc::new(Mutex::new(SnapshotSlot { current })),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The membership recorded by the stored snapshot or applied since.
    pub fn membership(&self) -> &StoredMembership {
        &self.membership
    }
}

/// Writes `doc` as the current snapshot unless a newer one is already there; returns the
/// bytes either way (they are what the caller hands to openraft).
fn store_snapshot(
    dir: &Path,
    slot: &Mutex<SnapshotSlot>,
    doc: &SnapshotDoc,
) -> io::Result<Vec<u8>> {
    let bytes = serde_json::to_vec(doc).map_err(io::Error::other)?;
    let mut slot = slot.lock();
    let newer_stored = slot
        .current
        .as_ref()
        .is_some_and(|cur| cur.last_log_id > doc.meta.last_log_id);
    if !newer_stored {
        blocking(|| write_atomic(&dir.join(SNAPSHOT_FILE), &bytes))?;
        slot.current = Some(doc.meta.clone());
    }
    Ok(bytes)
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match self.last_applied {
            Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
            None => format!("none-{seq}"),
        };
        let doc = SnapshotDoc {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            image: std::mem::take(&mut self.image),
        };
        let bytes = store_snapshot(&self.dir, &self.snapshot, &doc)
            .map_err(|e| snapshot_err(Some(&doc.meta), &e))?;
        tracing::info!(snapshot = %doc.meta, "built metadata snapshot");
        Ok(Snapshot {
            meta: doc.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        {
            let mut image = self.image.write();
            for entry in entries {
                let index = entry.log_id.index;
                let result = match entry.payload {
                    EntryPayload::Normal(command) => image.apply(index, &command),
                    EntryPayload::Blank => CommandResult::default(),
                    EntryPayload::Membership(membership) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), membership);
                        CommandResult::default()
                    }
                };
                // Blank and membership entries occupy log indexes too: keeping the image's
                // applied index on every entry lets brokers compare it with log indexes
                // (and with `applied()`) without knowing what each entry was.
                image.applied_index = index;
                self.last_applied = Some(entry.log_id);
                results.push(result);
            }
        }
        if let Some(last) = self.last_applied {
            self.applied_tx.send_replace(last.index);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        // A copy taken between applies, so the snapshot matches `last_applied` exactly
        // while applying continues.
        SnapshotBuilder {
            dir: self.dir.clone(),
            image: self.image.read().clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshot: self.snapshot.clone(),
            snapshot_seq: self.snapshot_seq.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let received: SnapshotDoc = serde_json::from_slice(snapshot.get_ref()).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), &e))
        })?;
        // The meta openraft passes is authoritative; stored with the image it describes.
        let doc = SnapshotDoc {
            meta: meta.clone(),
            image: received.image,
        };
        store_snapshot(&self.dir, &self.snapshot, &doc)
            .map_err(|e| snapshot_err(Some(meta), &e))?;
        let mut image = doc.image;
        image.applied_index = meta.last_log_id.map_or(0, |id| id.index);
        *self.image.write() = image;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.applied_tx
            .send_replace(meta.last_log_id.map_or(0, |id| id.index));
        tracing::info!(snapshot = %meta, "installed metadata snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let slot = self.snapshot.lock();
        let Some(meta) = slot.current.clone() else {
            return Ok(None);
        };
        let bytes = blocking(|| std::fs::read(self.dir.join(SNAPSHOT_FILE))).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), &e))
        })?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
