//! The spool: where an acknowledged record waits, in a file, until the merger has put it in the
//! log's store.
//!
//! A request's record is written to the current segment with one `write` call before the request
//! is answered, so it survives the process being killed at any point after that (the bytes are in
//! the kernel's page cache; like SQLite's `synchronous = NORMAL`, not a power loss). The merger
//! takes everything spooled so far ([`Spool::take`]), which closes the segment and opens the next;
//! once the batch is committed to the store, segments whose every record is merged are deleted
//! ([`Spool::merged`]). At start, [`Spool::open`] reads what a previous process left and gives
//! back the records that are not in the log yet, in order.
//!
//! A segment is named by the index of its first record (`00000000000000000042.spool`, 20
//! digits so that names sort in index order) and holds frames:
//!
//! ```text
//! index: u64 BE | length: u32 BE | leaf hash: 32 bytes | entry: `length` bytes
//! ```
//!
//! A spool belongs to one log: [`claim`] writes the log's checkpoint key to a file `log` in the
//! directory, and refuses a directory that names another log, so that records spooled for one
//! log (a department, in one database) are never merged into another's.
//!
//! The leaf hash makes every frame self-checking: a frame whose entry does not hash to it (a write
//! cut short by a crash or a full disk) ends what is read of that segment. After a failed write
//! the spool moves to a new segment, so no good frame ever follows a broken one.
//!
//! A merged segment is not always deleted: up to [`KEEP_FREE`] are kept (renamed `….free`) and
//! reused for the next segments, written over from the start. Writing over pages the kernel
//! already holds is cheaper than growing a new file (1.0 against 1.45 µs per record measured
//! alone). What a reused segment held before lies after the new frames; it is never read as
//! records: its frames are older than anything the store lacks (a segment is freed only once
//! every record in it is merged), and they are skipped by index like any merged record.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use civitas_audit::merkle::{Hash, leaf_hash};

const SUFFIX: &str = ".spool";
/// The suffix of a merged segment kept for reuse.
const FREE_SUFFIX: &str = ".free";
/// How many merged segments are kept for reuse.
const KEEP_FREE: usize = 2;
const HEADER: usize = 8 + 4 + 32;

/// A record read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    pub index: u64,
    pub entry: Vec<u8>,
    pub leaf: Hash,
}

/// Records taken for one merge: indexes `first..first + entries.len()`.
#[derive(Debug, Default)]
pub struct Batch {
    pub first: u64,
    pub entries: Vec<Vec<u8>>,
    pub leaves: Vec<Hash>,
}

/// Why the spool cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("audit spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the audit spool {dir} holds records of the log {found}, not of this log ({expected}): \
         set [audit] spool_dir to a directory of this log's own, and start the connector of \
         {found} on this one to merge what it holds"
    )]
    Foreign {
        dir: PathBuf,
        found: String,
        expected: String,
    },
}

/// The file naming the log a spool directory belongs to.
const OWNER_FILE: &str = "log";

/// Makes `dir` (created if missing) the spool of the log `owner` (its checkpoint key): a
/// directory that names no log yet is claimed; one that names another is refused.
pub fn claim(dir: &Path, owner: &str) -> Result<(), SpoolError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(OWNER_FILE);
    match std::fs::read_to_string(&path) {
        Ok(found) if found.trim_end() == owner => Ok(()),
        Ok(found) => Err(SpoolError::Foreign {
            dir: dir.to_owned(),
            found: found.trim_end().to_owned(),
            expected: owner.to_owned(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, format!("{owner}\n")).map_err(io(&path))
        }
        Err(source) => Err(SpoolError::Io { path, source }),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The spool of one log.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The segment being written, or none after a failed write or rotation.
    current: Option<(PathBuf, File)>,
    /// The index the next record gets.
    next: u64,
    /// Records written and not yet taken by the merger.
    pending: Batch,
    /// Segments no longer written to, with the index after their last record.
    closed: Vec<(PathBuf, u64)>,
    /// Merged segments kept for reuse.
    free: Vec<PathBuf>,
}

impl Spool {
    /// Opens the spool in `dir` (created if missing) for a log whose store holds `stored` entries.
    /// Returns the spool, whose next record gets the index after the last recovered one, and the
    /// records a previous process spooled that the store does not hold yet, in index order. They
    /// are also the spool's pending records: the first [`Spool::take`] returns them.
    pub fn open(dir: &Path, stored: u64) -> Result<(Spool, Vec<Spooled>), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut segments = Vec::new();
        for item in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = item.map_err(io(dir))?.path();
            let name = path.file_name().and_then(|name| name.to_str());
            if name.is_some_and(|name| name.ends_with(SUFFIX)) {
                segments.push(path);
            } else if name.is_some_and(|name| name.ends_with(FREE_SUFFIX)) {
                // Kept for reuse by an earlier process: holds nothing to recover.
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        segments.sort();
        let mut recovered: Vec<Spooled> = Vec::new();
        for path in &segments {
            for record in read_segment(path)? {
                let expected = recovered.last().map_or(stored, |last| last.index + 1);
                if record.index < expected {
                    // Already in the store (merged before the segment could be deleted).
                    continue;
                }
                if record.index > expected {
                    tracing::error!(
                        segment = %path.display(),
                        expected,
                        found = record.index,
                        "the audit spool skips indexes; its records are appended in order"
                    );
                }
                recovered.push(record);
            }
        }
        let next = stored + recovered.len() as u64;
        let pending = Batch {
            first: stored,
            entries: recovered.iter().map(|r| r.entry.clone()).collect(),
            leaves: recovered.iter().map(|r| r.leaf).collect(),
        };
        let closed = segments.into_iter().map(|path| (path, next)).collect();
        let spool = Spool {
            dir: dir.to_owned(),
            inner: Mutex::new(Inner {
                current: None,
                next,
                pending,
                closed,
                free: Vec::new(),
            }),
        };
        spool.lock().rotate(&spool.dir)?;
        Ok((spool, recovered))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every change to Inner is completed before anything that could panic: a poisoned
        // spool is still whole.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes a record to the current segment: once this returns, the record is the log's entry
    /// at the returned index, whatever happens to the process.
    pub fn write(&self, entry: Vec<u8>, leaf: Hash) -> Result<u64, SpoolError> {
        let mut inner = self.lock();
        let index = inner.next;
        let mut frame = Vec::with_capacity(HEADER + entry.len());
        frame.extend_from_slice(&index.to_be_bytes());
        let length = u32::try_from(entry.len()).map_err(|_| SpoolError::Io {
            path: self.dir.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "entry too large"),
        })?;
        frame.extend_from_slice(&length.to_be_bytes());
        frame.extend_from_slice(&leaf);
        frame.extend_from_slice(&entry);
        if inner.current.is_none() {
            inner.rotate(&self.dir)?;
        }
        let Some((path, file)) = inner.current.as_mut() else {
            unreachable!("rotate opened a segment");
        };
        if let Err(source) = file.write_all(&frame) {
            // The segment may end in part of this frame: nothing more goes into it.
            let path = path.clone();
            inner.close();
            return Err(SpoolError::Io { path, source });
        }
        inner.next += 1;
        inner.pending.entries.push(entry);
        inner.pending.leaves.push(leaf);
        Ok(index)
    }

    /// The index the next record gets: every record acknowledged so far has a smaller one.
    pub fn next_index(&self) -> u64 {
        self.lock().next
    }

    /// Takes every record written since the last take, moving later records to a new segment.
    pub fn take(&self) -> Batch {
        let mut inner = self.lock();
        let next = inner.next;
        let batch = std::mem::replace(
            &mut inner.pending,
            Batch {
                first: next,
                ..Batch::default()
            },
        );
        if !batch.entries.is_empty() {
            // A failure leaves no current segment; the next write tries again.
            if let Err(error) = inner.rotate(&self.dir) {
                tracing::error!(%error, "cannot start a new audit spool segment");
            }
        }
        batch
    }

    /// Every record before `merged` is in the store: the segments that hold only such records
    /// are kept for reuse (up to [`KEEP_FREE`]) or deleted.
    pub fn merged(&self, merged: u64) {
        let (done, room) = {
            let mut inner = self.lock();
            let (done, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.closed)
                .into_iter()
                .partition(|(_, end)| *end <= merged);
            inner.closed = kept;
            let room = KEEP_FREE.saturating_sub(inner.free.len());
            (done, room)
        };
        let mut freed = Vec::new();
        for (position, (path, _)) in done.into_iter().enumerate() {
            if position < room {
                let free = path.with_extension(&FREE_SUFFIX[1..]);
                if std::fs::rename(&path, &free).is_ok() {
                    freed.push(free);
                    continue;
                }
            }
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(%error, segment = %path.display(), "cannot delete a merged audit spool segment");
            }
        }
        self.lock().free.extend(freed);
    }
}

impl Inner {
    /// Closes the current segment, if any.
    fn close(&mut self) {
        if let Some((path, _)) = self.current.take() {
            self.closed.push((path, self.next));
        }
    }

    /// Closes the current segment and opens a new one, named by the next record's index.
    fn rotate(&mut self, dir: &Path) -> Result<(), SpoolError> {
        self.close();
        let path = dir.join(format!("{:020}{SUFFIX}", self.next));
        // A segment of that name holds no good record at or after `next` (else `next` would
        // be past it): a segment left empty, or broken by its first write. It is replaced.
        self.closed.retain(|(closed, _)| *closed != path);
        // A freed segment is written over from its start; else a new file.
        let reused = self
            .free
            .pop()
            .is_some_and(|free| std::fs::rename(free, &path).is_ok());
        let file = if reused {
            File::options().write(true).open(&path)
        } else {
            File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
        }
        .map_err(io(&path))?;
        self.current = Some((path, file));
        Ok(())
    }
}

/// The good frames of a segment, up to the first that is cut short or does not check.
fn read_segment(path: &Path) -> Result<Vec<Spooled>, SpoolError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(io(path))?;
    let mut records = Vec::new();
    let mut rest = bytes.as_slice();
    while let Some((header, after)) = rest.split_first_chunk::<HEADER>() {
        let index = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
        let length = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
        let leaf: Hash = header[12..].try_into().expect("32 bytes");
        let Some(entry) = after.get(..length) else {
            break;
        };
        if leaf_hash(entry) != leaf {
            break;
        }
        records.push(Spooled {
            index,
            entry: entry.to_vec(),
            leaf,
        });
        rest = &after[length..];
    }
    if !rest.is_empty() {
        tracing::debug!(
            segment = %path.display(),
            bytes = rest.len(),
            "the audit spool segment ends in bytes that are not a whole record (a record cut \
             short, never acknowledged, or what a reused segment held before); they are ignored"
        );
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> (Vec<u8>, Hash) {
        let entry = vec![n; usize::from(n) + 1];
        let leaf = leaf_hash(&entry);
        (entry, leaf)
    }

    /// The names of the files in `dir` that end in `suffix`, sorted.
    fn files(dir: &Path, suffix: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(suffix))
            .collect();
        names.sort();
        names
    }

    fn segments(dir: &Path) -> Vec<String> {
        files(dir, SUFFIX)
    }

    #[test]
    fn records_written_are_recovered_after_the_stored_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, recovered) = Spool::open(dir.path(), 5).unwrap();
        assert!(recovered.is_empty());
        for n in 0..3 {
            let (entry, leaf) = record(n);
            assert_eq!(spool.write(entry, leaf).unwrap(), 5 + u64::from(n));
        }
        let batch = spool.take();
        assert_eq!(batch.first, 5);
        assert_eq!(batch.entries.len(), 3);
        let (entry, leaf) = record(3);
        assert_eq!(spool.write(entry, leaf).unwrap(), 8);
        drop(spool);

        // The store holds 6 of them: 2 more and the one after the take come back, in order.
        let (spool, recovered) = Spool::open(dir.path(), 6).unwrap();
        let indexes: Vec<u64> = recovered.iter().map(|r| r.index).collect();
        assert_eq!(indexes, vec![6, 7, 8]);
        assert_eq!(recovered[2].entry, record(3).0);
        assert_eq!(spool.next_index(), 9);
        let batch = spool.take();
        assert_eq!((batch.first, batch.entries.len()), (6, 3));
        assert_eq!(batch.entries[0], record(1).0);
    }

    #[test]
    fn merged_segments_are_reused_and_what_they_held_is_never_recovered() {
        // Records of one length, so that the frames a reused segment held before line up with
        // the new ones and read as whole, valid frames after them.
        let same = |n: u8| {
            let entry = vec![n; 8];
            let leaf = leaf_hash(&entry);
            (entry, leaf)
        };
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 0).unwrap();
        for n in 0..3 {
            let (entry, leaf) = same(n);
            spool.write(entry, leaf).unwrap();
        }
        let first = spool.take();
        spool.merged(first.first + first.entries.len() as u64);
        assert_eq!(files(dir.path(), FREE_SUFFIX).len(), 1);
        // The next take opens the next segment over the freed one.
        let (entry, leaf) = same(3);
        spool.write(entry, leaf).unwrap();
        let _second = spool.take();
        assert!(files(dir.path(), FREE_SUFFIX).is_empty());
        let reused = dir.path().join(format!("{:020}{SUFFIX}", 4));
        let (entry, leaf) = same(4);
        spool.write(entry, leaf).unwrap();
        drop(spool);
        // It holds the new record, then two older ones, whole.
        let held: Vec<u64> = read_segment(&reused)
            .unwrap()
            .iter()
            .map(|r| r.index)
            .collect();
        assert_eq!(held, vec![4, 1, 2]);

        // A crash: the store holds the first three. Exactly the two unmerged come back.
        let (spool, recovered) = Spool::open(dir.path(), 3).unwrap();
        let indexes: Vec<u64> = recovered.iter().map(|r| r.index).collect();
        assert_eq!(indexes, vec![3, 4]);
        assert_eq!(recovered[0].entry, same(3).0);
        assert_eq!(recovered[1].entry, same(4).0);
        assert_eq!(spool.next_index(), 5);

        // Free segments left by a process are deleted at start; no more than KEEP_FREE kept.
        let (entry, leaf) = record(3);
        spool.write(entry, leaf).unwrap();
        for n in 0..4 {
            let (entry, leaf) = record(n);
            spool.write(entry, leaf).unwrap();
            let _ = spool.take();
        }
        spool.merged(spool.next_index());
        assert_eq!(files(dir.path(), FREE_SUFFIX).len(), KEEP_FREE);
        drop(spool);
        let (_spool, recovered) = Spool::open(dir.path(), 10).unwrap();
        assert!(recovered.is_empty());
        assert!(files(dir.path(), FREE_SUFFIX).is_empty());
    }

    #[test]
    fn merged_segments_go_and_later_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 0).unwrap();
        let (entry, leaf) = record(1);
        spool.write(entry.clone(), leaf).unwrap();
        spool.write(entry.clone(), leaf).unwrap();
        let first = spool.take();
        spool.write(entry, leaf).unwrap();
        let _second = spool.take();
        assert_eq!(segments(dir.path()).len(), 3);
        spool.merged(first.first + first.entries.len() as u64);
        assert_eq!(
            segments(dir.path()),
            vec![
                "00000000000000000002.spool".to_owned(),
                "00000000000000000003.spool".to_owned()
            ]
        );
        spool.merged(3);
        assert_eq!(segments(dir.path()), vec!["00000000000000000003.spool"]);
    }

    #[test]
    fn a_spool_belongs_to_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        claim(&spool, "civitas/transport+0a1b2c3d+AAAA").unwrap();
        claim(&spool, "civitas/transport+0a1b2c3d+AAAA").unwrap();
        let refused = claim(&spool, "civitas/parking+4e5f6a7b+BBBB").unwrap_err();
        assert!(matches!(
            &refused,
            SpoolError::Foreign { found, .. } if found == "civitas/transport+0a1b2c3d+AAAA"
        ));
        assert!(
            refused
                .to_string()
                .contains("civitas/parking+4e5f6a7b+BBBB")
        );
        // A directory spooled to before logs were named is claimed by the first to open it.
        let (old, _) = Spool::open(&dir.path().join("old"), 0).unwrap();
        drop(old);
        claim(&dir.path().join("old"), "civitas/parking+4e5f6a7b+BBBB").unwrap();
    }

    #[test]
    fn a_torn_frame_ends_its_segment_only() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 0).unwrap();
        for n in 0..2 {
            let (entry, leaf) = record(n);
            spool.write(entry, leaf).unwrap();
        }
        drop(spool);
        let path = dir.path().join(format!("{:020}{SUFFIX}", 0));
        let mut bytes = std::fs::read(&path).unwrap();
        // A third frame, cut short; then one whose entry does not match its leaf hash.
        let (entry, leaf) = record(9);
        let mut frame = 2u64.to_be_bytes().to_vec();
        frame.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        frame.extend_from_slice(&leaf);
        frame.extend_from_slice(&entry);
        let mut forged = frame.clone();
        *forged.last_mut().unwrap() ^= 1;
        bytes.extend_from_slice(&forged);
        bytes.extend_from_slice(&frame[..frame.len() - 3]);
        std::fs::write(&path, bytes).unwrap();
        let (_spool, recovered) = Spool::open(dir.path(), 0).unwrap();
        assert_eq!(recovered.len(), 2);
        assert_eq!(recovered[1].entry, record(1).0);
    }
}
