//! The durable Raft log of the metadata quorum.
//!
//! Layout in the quorum directory:
//! - `raft-log`: entries, each framed as `[len: u32 LE][crc32c(payload): u32 LE][payload]`
//!   with the payload the JSON of an openraft entry, in index order without holes;
//! - `vote.json`: the last vote, replaced atomically before `save_vote` returns;
//! - `purged.json`: the last purged log id, written before the log file is rewritten so
//!   a crash in between only leaves entries that reopening drops again;
//! - `committed.json`: the last committed log id, a restart hint written without fsync
//!   (openraft treats it as optional; a lost or torn one reads as absent).
//!
//! Every entry is also kept in memory: the metadata log is small because snapshots bound
//! it, and replication reads it from many tasks at once.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{EntryPayload, LogState, OptionalSend, RaftLogReader, StorageIOError};
use parking_lot::RwLock;

use super::files::{blocking, read_json, sync_dir, write_json_atomic, write_replace_unsynced};
use super::types::{Entry, LogId, StorageError, StoredMembership, TypeConfig, Vote};

const LOG_FILE: &str = "raft-log";
const VOTE_FILE: &str = "vote.json";
const PURGED_FILE: &str = "purged.json";
const COMMITTED_FILE: &str = "committed.json";
const LOCK_FILE: &str = "lock";

const FRAME_HEADER: usize = 8;
/// Larger frames are taken for garbage: a torn length field must not make reopening
/// allocate gigabytes.
const MAX_FRAME: usize = 256 << 20;

type Entries = Arc<RwLock<BTreeMap<u64, Entry>>>;

pub struct LogStore {
    dir: PathBuf,
    /// Holds an exclusive lock on the directory's lock file for as long as the store is
    /// open: two members writing one log would corrupt it.
    _lock: File,
    file: File,
    /// Length of the valid part of the log file: the next frame is written here.
    file_len: u64,
    /// Where each present entry's frame starts in the log file, so `truncate` can cut
    /// the file at the first removed entry.
    offsets: BTreeMap<u64, u64>,
    entries: Entries,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

/// Read handle for replication tasks; shares the in-memory entries with the store.
#[derive(Clone)]
pub struct LogReader {
    entries: Entries,
}

fn encode_frame(out: &mut Vec<u8>, entry: &Entry) -> io::Result<()> {
    let payload = serde_json::to_vec(entry).map_err(io::Error::other)?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&len| len as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::other(format!("log entry of {} bytes", payload.len())))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Decodes frames from the start of `buf`, stopping at the first one that is cut short,
/// fails its checksum, does not parse, or does not follow its predecessor's index: what
/// follows such a frame was never acknowledged (appends are flushed in order), so it is
/// the torn tail of an interrupted write. Returns the entries with their frame offsets
/// and the length of the valid prefix.
fn decode_frames(buf: &[u8]) -> (Vec<(u64, Entry)>, u64) {
    let mut entries: Vec<(u64, Entry)> = Vec::new();
    let mut pos = 0usize;
    while buf.len() - pos >= FRAME_HEADER {
        let len = u32::from_le_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]]);
        if len > MAX_FRAME || buf.len() - pos - FRAME_HEADER < len {
            break;
        }
        let payload = &buf[pos + FRAME_HEADER..pos + FRAME_HEADER + len];
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let Ok(entry) = serde_json::from_slice::<Entry>(payload) else {
            break;
        };
        if entries
            .last()
            .is_some_and(|(_, prev)| entry.log_id.index != prev.log_id.index + 1)
        {
            break;
        }
        entries.push((pos as u64, entry));
        pos += FRAME_HEADER + len;
    }
    (entries, pos as u64)
}

fn lock_dir(dir: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "{} is in use by another metadata quorum member",
                dir.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl LogStore {
    /// Opens (creating if needed) the log in `dir`, recovering every entry and cutting a
    /// torn or corrupt tail off the log file. Blocking.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let lock = lock_dir(dir)?;
        let vote: Option<Vote> = read_json(&dir.join(VOTE_FILE))?;
        let last_purged: Option<LogId> = read_json(&dir.join(PURGED_FILE))?;
        // Only a hint: unreadable means unknown, and openraft re-learns it from the leader.
        let committed: Option<LogId> = read_json(&dir.join(COMMITTED_FILE)).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring unreadable committed log id");
            None
        });

        let path = dir.join(LOG_FILE);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if !existed {
            sync_dir(dir)?;
        }
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let (decoded, valid_len) = decode_frames(&buf);
        if valid_len < buf.len() as u64 {
            tracing::warn!(
                path = %path.display(),
                valid_len,
                file_len = buf.len(),
                "cutting torn or corrupt tail off the metadata log"
            );
            file.set_len(valid_len)?;
            file.sync_all()?;
        }

        let first_kept = last_purged.map_or(0, |id| id.index + 1);
        let mut offsets = BTreeMap::new();
        let mut entries = BTreeMap::new();
        for (offset, entry) in decoded {
            // Entries up to the purge point stay in the file when a crash came between
            // recording the purge and rewriting the file.
            if entry.log_id.index >= first_kept {
                offsets.insert(entry.log_id.index, offset);
                entries.insert(entry.log_id.index, entry);
            }
        }
        if let Some(&first) = entries.keys().next().filter(|&&first| first != first_kept) {
            return Err(invalid(format!(
                "{}: log starts at index {first} but the last purged index is {:?}",
                path.display(),
                last_purged.map(|id| id.index)
            )));
        }

        Ok(LogStore {
            dir: dir.to_path_buf(),
            _lock: lock,
            file,
            file_len: valid_len,
            offsets,
            entries: Arc::new(RwLock::new(entries)),
            vote,
            committed,
            last_purged,
        })
    }

    /// The membership of the last membership entry still in the log, if any: the one
    /// openraft will take as effective at start.
    pub fn last_membership(&self) -> Option<StoredMembership> {
        self.entries
            .read()
            .values()
            .rev()
            .find_map(|entry| match &entry.payload {
                EntryPayload::Membership(m) => {
                    Some(StoredMembership::new(Some(entry.log_id), m.clone()))
                }
                _ => None,
            })
    }

    fn write_frames(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, self.file_len)?;
        self.file.sync_data()
    }

    fn cut_file(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_data()
    }

    /// Rewrites the log file with only the frames from `start` on (the entries kept after a
    /// purge): copy them to a temporary file, flush, rename over, flush the directory.
    fn rewrite_from(&mut self, start: u64) -> io::Result<()> {
        let mut kept = vec![0u8; (self.file_len - start) as usize];
        self.file.read_exact_at(&mut kept, start)?;
        let path = self.dir.join(LOG_FILE);
        super::files::write_atomic(&path, &kept)?;
        self.file = OpenOptions::new().read(true).write(true).open(&path)?;
        self.file_len = kept.len() as u64;
        for offset in self.offsets.values_mut() {
            *offset -= start;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn vote_for_test(&self) -> Option<Vote> {
        self.vote
    }
}

fn read_range<RB: RangeBounds<u64>>(entries: &Entries, range: RB) -> Vec<Entry> {
    entries
        .read()
        .range(range)
        .map(|(_, e)| e.clone())
        .collect()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last = self.entries.read().values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: self.last_purged,
            last_log_id: last.or(self.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            entries: self.entries.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let path = self.dir.join(VOTE_FILE);
        blocking(|| write_json_atomic(&path, vote)).map_err(|e| StorageIOError::write_vote(&e))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if committed == self.committed {
            return Ok(());
        }
        let path = self.dir.join(COMMITTED_FILE);
        let bytes = serde_json::to_vec(&committed).map_err(|e| StorageIOError::write(&e))?;
        blocking(|| write_replace_unsynced(&path, &bytes))
            .map_err(|e| StorageIOError::write(&e))?;
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        for entry in &entries {
            offsets.push((entry.log_id.index, self.file_len + buf.len() as u64));
            encode_frame(&mut buf, entry).map_err(|e| StorageIOError::write_logs(&e))?;
        }
        // Flushed before the callback: openraft counts the entries as durable (votes for
        // them, acknowledges them to the leader) once it fires.
        if let Err(e) = blocking(|| self.write_frames(&buf)) {
            let err = StorageIOError::write_logs(&e);
            callback.log_io_completed(Err(e));
            return Err(err.into());
        }
        self.file_len += buf.len() as u64;
        self.offsets.extend(offsets);
        {
            let mut map = self.entries.write();
            for entry in entries {
                map.insert(entry.log_id.index, entry);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let index = log_id.index;
        let Some(&cut) = self.offsets.range(index..).next().map(|(_, off)| off) else {
            return Ok(());
        };
        blocking(|| self.cut_file(cut)).map_err(|e| StorageIOError::write_logs(&e))?;
        self.file_len = cut;
        self.offsets.split_off(&index);
        self.entries.write().split_off(&index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        if self.last_purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        let path = self.dir.join(PURGED_FILE);
        blocking(|| write_json_atomic(&path, &log_id))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.last_purged = Some(log_id);

        let keep_from = log_id.index + 1;
        let start = self
            .offsets
            .range(keep_from..)
            .next()
            .map_or(self.file_len, |(_, &off)| off);
        self.entries.write().retain(|&index, _| index >= keep_from);
        self.offsets = self.offsets.split_off(&keep_from);
        if start > 0 {
            blocking(|| self.rewrite_from(start)).map_err(|e| StorageIOError::write_logs(&e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::Write;

    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, EntryPayload, Membership};
    use tokio::sync::watch;

    use super::*;
    use crate::cluster::quorum::state_machine::StateMachine;
    use crate::cluster::{Command, MetadataImage};

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn normal(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(Command::InitCluster {
                cluster_id: format!("c{index}"),
                unclean_leader_election_enable: false,
            }),
        }
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        store.entries.read().keys().copied().collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_and_vote_survive_reopen_and_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            store.save_vote(&Vote::new(3, 2)).await.unwrap();
            let membership = Entry {
                log_id: log_id(1, 0),
                payload: EntryPayload::Membership(Membership::new(
                    vec![BTreeSet::from([1, 2, 3])],
                    None,
                )),
            };
            store.blocking_append([membership]).await.unwrap();
            store
                .blocking_append((1..=5).map(|i| normal(1, i)))
                .await
                .unwrap();
            store.save_committed(Some(log_id(1, 4))).await.unwrap();
        }

        // A torn write: a frame header promising more bytes than follow.
        let log_path = dir.path().join(LOG_FILE);
        let good_len = std::fs::metadata(&log_path).unwrap().len();
        {
            let mut f = OpenOptions::new().append(true).open(&log_path).unwrap();
            f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{', b'"'])
                .unwrap();
        }

        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&log_path).unwrap().len(), good_len);
        assert_eq!(store.vote_for_test(), Some(Vote::new(3, 2)));
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 4)));
        assert_eq!(indexes(&store), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(
            store
                .last_membership()
                .unwrap()
                .voter_ids()
                .collect::<BTreeSet<_>>(),
            BTreeSet::from([1, 2, 3])
        );
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 5)));
        assert_eq!(state.last_purged_log_id, None);

        // A corrupt (checksum-failing) last frame is cut too, and appends continue after.
        drop(store);
        let mut bytes = std::fs::read(&log_path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&log_path, &bytes).unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![0, 1, 2, 3, 4]);
        store
            .blocking_append([normal(2, 5), normal(2, 6)])
            .await
            .unwrap();
        drop(store);
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(store.entries.read()[&6].log_id, log_id(2, 6));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn truncate_and_purge_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            store
                .blocking_append((0..10).map(|i| normal(1, i)))
                .await
                .unwrap();
            // A conflict from index 7: the new leader's entries replace the old ones.
            store.truncate(log_id(1, 7)).await.unwrap();
            store
                .blocking_append((7..9).map(|i| normal(2, i)))
                .await
                .unwrap();
            store.purge(log_id(1, 3)).await.unwrap();
            assert_eq!(indexes(&store), vec![4, 5, 6, 7, 8]);
            // Appends after a rewrite land at the right place.
            store.blocking_append([normal(2, 9)]).await.unwrap();
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![4, 5, 6, 7, 8, 9]);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
        assert_eq!(state.last_log_id, Some(log_id(2, 9)));
        assert_eq!(store.entries.read()[&7].log_id, log_id(2, 7));
        store.truncate(log_id(2, 8)).await.unwrap();
        // Purging past the end (a snapshot newer than the log) leaves an empty log.
        store.purge(log_id(3, 20)).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert!(indexes(&store).is_empty());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(3, 20)));
        assert_eq!(state.last_log_id, Some(log_id(3, 20)));
        store.blocking_append([normal(3, 21)]).await.unwrap();
        drop(store);
        assert_eq!(indexes(&LogStore::open(dir.path()).unwrap()), vec![21]);
    }

    #[test]
    fn a_directory_is_opened_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        let err = LogStore::open(dir.path())
            .err()
            .expect("second open must fail");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(store);
        LogStore::open(dir.path()).unwrap();
    }

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().unwrap();
            let log = LogStore::open(dir.path()).unwrap();
            let image = Arc::new(RwLock::new(MetadataImage::default()));
            let (tx, _rx) = watch::channel(0);
            let sm = StateMachine::open(dir.path(), image, tx).unwrap();
            Ok((dir, log, sm))
        }
    }

    /// openraft's own conformance suite for log stores and state machines.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder).unwrap();
    }
}
