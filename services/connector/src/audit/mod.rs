//! The connector's audit log (issue 4): every authorization decision as a [`Record`], appended to
//! an RFC 9162 Merkle tree kept in the store and signed in C2SP checkpoints.
//!
//! A request encodes its record and hashes it into a leaf itself ([`AuditLog::append`]). With a
//! [`spool`] (`[audit] spool_dir`; by default beside a SQLite database file, or in the settings
//! file's folder) it writes both to
//! the spool and is answered; the **merger** stores what was spooled, at most one batch per
//! merge wait (`[audit] merge_wait_ms`), and readers of the log wait for it
//! ([`AuditLog::settled`]).
//!
//! Without a spool, a request queues its record and leaf with a oneshot acknowledgement and waits. If no writer is running, that request starts
//! one, as a task on its own worker thread. The writer takes what is waiting (up to
//! [`MAX_BATCH`] records), computes the new subtree hashes against its in-memory frontier of the
//! tree, writes entries and hashes with one `audit_append` (one transaction), and only then
//! acknowledges: a request whose record is not committed is not served. It goes on while records
//! wait, so under load commits are grouped: whatever arrived while one batch was being written
//! goes into the next, and the cost of a commit is shared by many requests. A lone request is
//! written at once, with no hop to another thread.
//! The **checkpointer** signs a checkpoint of the tree every `checkpoint_interval_ms` when it
//! grew, so the maximum merge delay is about one interval plus one batch (plus the merge wait
//! with a spool).
//!
//! The log's key is an Ed25519 seed: from `[audit] key_file` (64 hex digits), or generated at
//! first start and kept in the store so restarts keep it. The pseudonymizer's secret is derived
//! from the seed (SHA-256 of a fixed label and the seed) and is never the seed itself.
//!
//! **Witnesses.** The checkpointer submits every checkpoint to the witnesses it is given (C2SP
//! tlog-witness, `civitas_audit::witness`) and stores their cosignatures, which are served with
//! the checkpoint. The other way round, the service witnesses the logs it is told to watch
//! (`routes::witness`), cosigning with a key derived from the log's seed under another label.
//!
//! One connector process appends to a log at a time; another writer is detected by the store
//! (`AuditConflict`) and makes the writer reload its view of the tree.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use civitas_audit::checkpoint::CosignatureVerifier;
use civitas_audit::merkle::{self, Hash, HashReader, Subtree, leaf_hash, node_hash};
use civitas_audit::note::{SEED_LEN, Signer, Verifier};
use civitas_audit::record::{Pseudonymizer, Record};
use civitas_store::Store;
use tokio::sync::{oneshot, watch};

mod checkpointer;
pub mod proofs;
pub mod spool;

use checkpointer::{Checkpointer, Cosigners};
use spool::Spool;

use crate::clock::Clock;
use crate::settings::AuditSettings;

/// The most records the appender writes in one append.
pub const MAX_BATCH: usize = 1000;

/// Records waiting to be written; appenders wait when this many are queued.
const QUEUE: usize = 4 * MAX_BATCH;

/// With a spool, records that may be spooled and not yet merged; requests wait for room beyond.
/// Room for more than one merge wait (`[audit] merge_wait_ms`, 1 s by default) of records at
/// full speed (about 12,000 a second on two cores); at most some 30 MB of entries.
const SPOOL_ROOM: usize = 32 * MAX_BATCH;

/// How long a reader of the log waits for the records acknowledged before its request to be
/// merged ([`AuditLog::settled`]).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The label the witness key's seed is derived under.
const WITNESS_LABEL: &[u8] = b"civitas audit witness v1\n";

/// The label the pseudonymizer's secret is derived under.
const PSEUDONYM_LABEL: &[u8] = b"civitas audit pseudonyms v1\n";

/// Why the audit log cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read the audit key file {path}: {source}")]
    KeyFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the audit key file {0} must hold 64 hexadecimal digits (a 32-byte seed)")]
    BadKeyFile(std::path::PathBuf),
    #[error("cannot generate the audit key: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] civitas_store::Error),
    #[error(transparent)]
    Audit(#[from] civitas_audit::Error),
    #[error("the stored audit log {log} lacks the hash of subtree {level}/{index}")]
    MissingHash { log: String, level: u8, index: u64 },
    #[error("{0:?} is not a verifier key (origin+keyid+base64)")]
    BadKey(String),
    #[error(transparent)]
    Proof(#[from] proofs::ProofError),
    #[error("cannot build the HTTP client for the log's witnesses: {0}")]
    WitnessClient(reqwest::Error),
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
}

/// A witness this log submits its checkpoints to.
#[derive(Clone, Debug)]
pub struct Witness {
    /// The witnessing service's base URL.
    pub url: String,
    /// Its cosignature key.
    pub verifier: CosignatureVerifier,
}

/// Why a record was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the audit appender has stopped")]
    Stopped,
    #[error("the record cannot be encoded: {0}")]
    Encode(civitas_audit::Error),
    #[error("the audit log could not be written")]
    Store,
}

type Ack = oneshot::Sender<Result<u64, AppendError>>;

/// A record on its way into the log: its entry, the entry's leaf hash, and where the request
/// waits to hear that it is stored.
struct Queued {
    entry: Vec<u8>,
    leaf: Hash,
    ack: Ack,
}

/// The department's audit log: where records go, and what readers of the log need.
pub struct AuditLog {
    name: String,
    origin: String,
    intake: Intake,
    /// The stored tree's size and root, as the appender or merger last wrote it.
    head: watch::Receiver<(u64, Hash)>,
    pseudonymizer: Pseudonymizer,
    verifier: Verifier,
    store: Store,
    /// Cosigns the checkpoints of the logs this service watches.
    witness_signer: Signer,
    /// The logs this service watches, by origin.
    watched: HashMap<String, Verifier>,
    /// One witnessing decision at a time (each reads and replaces the remembered checkpoint).
    witnessing: tokio::sync::Mutex<()>,
    /// Starts the task that submits this log's checkpoints to a witness.
    cosigners: Cosigners,
    /// Stops the spool's merger (see [`AuditLog::closer`]).
    closing: Arc<Closing>,
}

/// How the spool's merger is stopped: told, then awaited.
#[derive(Debug, Default)]
struct Closing {
    stop: tokio::sync::Notify,
    merger: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Stops a log's spool merger once its service has stopped serving: what is spooled is merged
/// first. Without it the merger runs as long as the process (which is what a real stop is).
#[derive(Debug, Clone)]
pub struct Closer(Arc<Closing>);

impl Closer {
    /// Merges what is spooled and stops the merger; returns once it has.
    pub async fn close(self) {
        self.0.stop.notify_one();
        let merger = self
            .0
            .merger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(merger) = merger {
            let _ = merger.await;
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log of `department`: loads or creates its key, loads the tree's frontier, and
    /// starts the appender and checkpoint tasks (on the current Tokio runtime).
    pub async fn start(
        department: &str,
        settings: &AuditSettings,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<AuditLog, SetupError> {
        let name = department.to_owned();
        let origin = format!("civitas/{department}");
        let seed = match &settings.key_file {
            Some(path) => read_seed(path)?,
            None => store.audit_key_seed(&name, &random_seed()?).await?,
        };
        let signer = Signer::from_seed(&origin, &seed)?;
        let verifier = signer.verifier();
        let pseudonymizer = Pseudonymizer::new(&pseudonym_secret(&seed));
        let witness_signer = Signer::from_seed(
            &format!("{origin}/witness"),
            &derived_seed(WITNESS_LABEL, &seed),
        )?;
        let mut watched = HashMap::new();
        for vkey in &settings.watch {
            let log = Verifier::from_vkey(vkey).map_err(|_| SetupError::BadKey(vkey.clone()))?;
            watched.insert(log.name().to_owned(), log);
        }
        let mut witnesses = Vec::new();
        for witness in &settings.witnesses {
            witnesses.push(Witness {
                url: witness.url.trim_end_matches('/').to_owned(),
                verifier: CosignatureVerifier::from_vkey(&witness.vkey)
                    .map_err(|_| SetupError::BadKey(witness.vkey.clone()))?,
            });
        }
        let tree = Tree::load(&store, &name).await?;
        let latest = store.audit_latest_checkpoint(&name).await?;
        let interval = Duration::from_millis(settings.checkpoint_interval_ms.max(1));
        let (published, checkpoints) = watch::channel(latest.clone());
        let cosigners = Cosigners::new(
            store.clone(),
            name.clone(),
            verifier.clone(),
            checkpoints,
            interval,
        )?;
        for witness in witnesses {
            cosigners.spawn(witness);
        }
        let (heads, head) = watch::channel((tree.size, tree.root()));
        let mut appender = Appender {
            store: store.clone(),
            log: name.clone(),
            tree,
            heads,
        };
        let closing = Arc::new(Closing::default());
        let intake = match &settings.spool_dir {
            Some(dir) => {
                spool::claim(dir, &verifier.to_vkey())?;
                let (spool, recovered) = Spool::open(dir, appender.tree.size)?;
                if !recovered.is_empty() {
                    tracing::info!(
                        log = %name,
                        records = recovered.len(),
                        "merging the audit records a previous process spooled"
                    );
                    let batch = spool.take();
                    for (entries, leaves) in batch
                        .entries
                        .chunks(MAX_BATCH)
                        .zip(batch.leaves.chunks(MAX_BATCH))
                    {
                        appender.write_batch(entries, leaves).await?;
                    }
                }
                spool.merged(appender.tree.size);
                let spooled = Arc::new(Spooled {
                    spool,
                    room: tokio::sync::Semaphore::new(SPOOL_ROOM),
                    wait: Duration::from_millis(settings.merge_wait_ms),
                    wake: tokio::sync::Notify::new(),
                    hurry: tokio::sync::Notify::new(),
                });
                let merger =
                    tokio::spawn(Arc::clone(&spooled).merge(appender, Arc::clone(&closing)));
                *closing
                    .merger
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(merger);
                Intake::Spool(spooled)
            }
            None => Intake::Commit(Arc::new(AppendQueue {
                waiting: std::sync::Mutex::new(Waiting::default()),
                room: tokio::sync::Semaphore::new(QUEUE),
                appender: tokio::sync::Mutex::new(appender),
            })),
        };
        let checkpointer = Checkpointer {
            store: store.clone(),
            log: name.clone(),
            origin: origin.clone(),
            signer,
            clock,
            signed: latest.map(|(size, _)| size),
            interval,
            published,
        };
        tokio::spawn(checkpointer.run(head.clone()));
        Ok(AuditLog {
            name,
            origin,
            intake,
            head,
            pseudonymizer,
            verifier,
            store,
            witness_signer,
            watched,
            witnessing: tokio::sync::Mutex::new(()),
            cosigners,
            closing,
        })
    }

    /// What stops this log's spool merger once the service has stopped (see [`Closer`]).
    pub fn closer(&self) -> Closer {
        Closer(Arc::clone(&self.closing))
    }

    /// The log's name in the store.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log's origin, the first line of its checkpoints.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The key its checkpoints are signed with.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The key this service cosigns other logs' checkpoints with.
    pub fn witness_signer(&self) -> &Signer {
        &self.witness_signer
    }

    /// The key of the watched log `origin`, if this service watches it.
    pub fn watched(&self, origin: &str) -> Option<&Verifier> {
        self.watched.get(origin)
    }

    /// Adds a witness to submit checkpoints to (for witnesses whose address is known only once
    /// they listen, as in `civitas up`); it gets the latest checkpoint at once.
    pub fn add_witness(&self, witness: Witness) {
        self.cosigners.spawn(witness);
    }

    /// Held while a witnessing decision reads and replaces what was witnessed.
    pub(crate) fn witnessing(&self) -> &tokio::sync::Mutex<()> {
        &self.witnessing
    }

    /// The latest checkpoint with the cosignatures stored for it: its size and note.
    pub async fn latest_cosigned_checkpoint(
        &self,
    ) -> Result<Option<(u64, String)>, civitas_store::Error> {
        let Some((size, mut note)) = self.store.audit_latest_checkpoint(&self.name).await? else {
            return Ok(None);
        };
        for line in self.store.audit_cosignatures(&self.name, size).await? {
            note.push_str(&line);
        }
        Ok(Some((size, note)))
    }

    /// Where the log is kept (read by the `/audit/v1` routes).
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Turns identifiers that could name a person into keyed hashes.
    pub fn pseudonymizer(&self) -> &Pseudonymizer {
        &self.pseudonymizer
    }

    /// Appends `record` and waits until it is durably queued: written to the spool, or without
    /// one, committed to the store. Returns its index in the log.
    pub async fn append(&self, record: Record) -> Result<u64, AppendError> {
        // Encoded and hashed here, on the request's worker, so that the writer only extends the
        // tree and writes.
        let entry = record.to_entry().map_err(|error| {
            tracing::error!(%error, "an audit record cannot be encoded");
            AppendError::Encode(error)
        })?;
        let leaf = leaf_hash(&entry);
        let queue = match &self.intake {
            Intake::Spool(spooled) => return spooled.append(entry, leaf).await,
            Intake::Commit(queue) => queue,
        };
        // Held until the record is written: at most QUEUE records wait at once.
        let _room = queue
            .room
            .acquire()
            .await
            .map_err(|_| AppendError::Stopped)?;
        let (ack, stored) = oneshot::channel();
        let lead = {
            let mut waiting = queue.lock_waiting();
            waiting.records.push(Queued { entry, leaf, ack });
            !std::mem::replace(&mut waiting.writing, true)
        };
        if lead {
            // No writer is running: this request starts one, on its own worker thread, so that
            // a lone request's record costs no hop to another thread. It is a task of its own,
            // so that it finishes even if this request is dropped.
            tokio::spawn(Arc::clone(queue).write_all());
        }
        stored.await.map_err(|_| AppendError::Stopped)?
    }

    /// Waits until every record acknowledged before this call is in the store, so that a reader
    /// of the log sees them (at most [`SETTLE_TIMEOUT`]; a store that fails for longer than
    /// that is reported by the merger, and the reader gets what is stored).
    pub async fn settled(&self) {
        let Intake::Spool(spooled) = &self.intake else {
            return;
        };
        let target = spooled.spool.next_index();
        spooled.hurry.notify_one();
        let mut head = self.head.clone();
        let _ =
            tokio::time::timeout(SETTLE_TIMEOUT, head.wait_for(|(size, _)| *size >= target)).await;
    }
}

/// How a request's record reaches the store.
enum Intake {
    /// The request waits for the commit that stores its record.
    Commit(Arc<AppendQueue>),
    /// The request waits for its record to be written to the spool; the merger stores it.
    Spool(Arc<Spooled>),
}

/// The spool and its merger's wake-up call.
struct Spooled {
    spool: Spool,
    /// One permit per record that may be spooled and not yet merged.
    room: tokio::sync::Semaphore,
    /// How long the merger lets records gather after the first one arrives.
    wait: Duration,
    /// Records were spooled.
    wake: tokio::sync::Notify,
    /// A reader waits for the records spooled so far: merge them now.
    hurry: tokio::sync::Notify,
}

impl Spooled {
    async fn append(&self, entry: Vec<u8>, leaf: Hash) -> Result<u64, AppendError> {
        // Returned by the merger once the record is stored: at most SPOOL_ROOM records wait.
        self.room
            .acquire()
            .await
            .map_err(|_| AppendError::Stopped)?
            .forget();
        match self.spool.write(entry, leaf) {
            Ok(index) => {
                self.wake.notify_one();
                Ok(index)
            }
            Err(error) => {
                self.room.add_permits(1);
                tracing::error!(%error, "an audit record could not be spooled");
                Err(AppendError::Store)
            }
        }
    }

    /// Stores what is spooled, at most once per merge wait, until the process ends or the log is
    /// closed (then what is spooled is stored first). A batch that cannot be stored is tried
    /// again (its records are acknowledged: they must not be lost), while new requests wait for
    /// room once [`SPOOL_ROOM`] records are pending.
    async fn merge(self: Arc<Self>, mut appender: Appender, closing: Arc<Closing>) {
        let mut last = false;
        loop {
            tokio::select! {
                () = self.wake.notified() => {
                    tokio::select! {
                        () = tokio::time::sleep(self.wait) => {}
                        () = self.hurry.notified() => {}
                        () = closing.stop.notified() => last = true,
                    }
                }
                () = closing.stop.notified() => last = true,
            }
            let batch = self.spool.take();
            let count = batch.entries.len();
            let mut backoff = Duration::from_millis(10);
            let mut offset = 0;
            while offset < count {
                // After a failed write, the reloaded tree says what the store holds: a commit
                // whose answer was lost is not written twice.
                let stored = appender.tree.size.saturating_sub(batch.first);
                if stored > offset as u64 {
                    offset = usize::try_from(stored).map_or(count, |stored| stored.min(count));
                    continue;
                }
                let end = (offset + MAX_BATCH).min(count);
                match appender
                    .write_batch(&batch.entries[offset..end], &batch.leaves[offset..end])
                    .await
                {
                    Ok(()) => offset = end,
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            self.spool.merged(appender.tree.size);
            self.room.add_permits(count);
            if last {
                return;
            }
        }
    }
}

/// Records waiting to be written, and the writer's state.
struct AppendQueue {
    waiting: std::sync::Mutex<Waiting>,
    room: tokio::sync::Semaphore,
    /// Taken by the one writer running at a time.
    appender: tokio::sync::Mutex<Appender>,
}

#[derive(Default)]
struct Waiting {
    records: Vec<Queued>,
    /// Whether a writer is running; it writes everything queued before it stops.
    writing: bool,
}

impl AppendQueue {
    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // The lock is never held across a panic that matters: a poisoned queue is still whole.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes batches of what is waiting until nothing is: group commit without a timer, so a
    /// lone request is written at once and, under load, whatever arrived while one batch was
    /// being written goes in the next, sharing the cost of its commit.
    async fn write_all(self: Arc<Self>) {
        let mut appender = self.appender.lock().await;
        loop {
            // Requests ready to run on this thread go first, so that records they are about to
            // queue join this batch instead of waiting for the next.
            tokio::task::yield_now().await;
            let batch: Vec<Queued> = {
                let mut waiting = self.lock_waiting();
                if waiting.records.is_empty() {
                    waiting.writing = false;
                    return;
                }
                let count = waiting.records.len().min(MAX_BATCH);
                waiting.records.drain(..count).collect()
            };
            appender.append(batch).await;
        }
    }
}

/// The seed in a key file: 64 hex digits, surrounding whitespace ignored.
fn read_seed(path: &std::path::Path) -> Result<[u8; SEED_LEN], SetupError> {
    let text = std::fs::read_to_string(path).map_err(|source| SetupError::KeyFile {
        path: path.to_owned(),
        source,
    })?;
    parse_hex_seed(text.trim()).ok_or_else(|| SetupError::BadKeyFile(path.to_owned()))
}

fn parse_hex_seed(hex: &str) -> Option<[u8; SEED_LEN]> {
    if hex.len() != 2 * SEED_LEN || !hex.is_ascii() {
        return None;
    }
    let mut seed = [0; SEED_LEN];
    for (byte, pair) in seed.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(seed)
}

fn random_seed() -> Result<[u8; SEED_LEN], SetupError> {
    use ring::rand::SecureRandom;
    let mut seed = [0; SEED_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| SetupError::Random("the system random source failed".to_owned()))?;
    Ok(seed)
}

/// The pseudonymizer's secret: SHA-256 of a fixed label and the seed.
fn pseudonym_secret(seed: &[u8; SEED_LEN]) -> [u8; 32] {
    derived_seed(PSEUDONYM_LABEL, seed)
}

/// SHA-256 of `label` and `seed`: a secret for another purpose, from which the seed cannot be
/// recovered.
fn derived_seed(label: &[u8], seed: &[u8; SEED_LEN]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(label);
    context.update(seed);
    let mut secret = [0; 32];
    secret.copy_from_slice(context.finish().as_ref());
    secret
}

/// The checkpoint key (vkey) and witness cosignature key (vkey) of the log of `department` whose
/// seed is `seed`: what other services are configured with to watch it and to submit to it.
pub fn public_keys(
    department: &str,
    seed: &[u8; SEED_LEN],
) -> Result<(String, String), SetupError> {
    let origin = format!("civitas/{department}");
    let log = Signer::from_seed(&origin, seed)?.verifier().to_vkey();
    let witness = Signer::from_seed(
        &format!("{origin}/witness"),
        &derived_seed(WITNESS_LABEL, seed),
    )?;
    Ok((log, CosignatureVerifier::of(&witness).to_vkey()))
}

/// Reads a key file: the seed of an audit log.
pub fn read_key_file(path: &std::path::Path) -> Result<[u8; SEED_LEN], SetupError> {
    read_seed(path)
}

/// The appender's view of the tree: its size and frontier hashes.
struct Tree {
    size: u64,
    frontier: HashMap<Subtree, Hash>,
}

impl HashReader for Tree {
    fn read_hashes(&self, subtrees: &[Subtree]) -> Result<Vec<Hash>, civitas_audit::Error> {
        proofs::read_known(&self.frontier, subtrees)
    }
}

impl Tree {
    /// The stored tree's size and frontier.
    async fn load(store: &Store, log: &str) -> Result<Tree, SetupError> {
        let size = store.audit_size(log).await?;
        let subtrees = merkle::frontier(size);
        let hashes = proofs::stored_hashes(store, log, &subtrees).await?;
        let mut map = HashMap::new();
        for (subtree, hash) in subtrees.into_iter().zip(hashes) {
            let hash = hash.ok_or_else(|| SetupError::MissingHash {
                log: log.to_owned(),
                level: subtree.level,
                index: subtree.index,
            })?;
            map.insert(subtree, hash);
        }
        Ok(Tree {
            size,
            frontier: map,
        })
    }

    /// The root (RFC 9162 §2.1.1) from the frontier: the subtrees folded from the right.
    fn root(&self) -> Hash {
        let mut subtrees = merkle::frontier(self.size).into_iter().rev();
        let Some(last) = subtrees.next() else {
            return merkle::EMPTY_ROOT;
        };
        let mut root = self.frontier.get(&last).copied().unwrap_or_default();
        for subtree in subtrees {
            let left = self.frontier.get(&subtree).copied().unwrap_or_default();
            root = node_hash(&left, &root);
        }
        root
    }

    /// The tree after `added` (from `append_hashes`) is stored.
    fn grown(&self, new_size: u64, added: &[(Subtree, Hash)]) -> Tree {
        let mut known: HashMap<Subtree, Hash> = self.frontier.clone();
        known.extend(added.iter().copied());
        let frontier = merkle::frontier(new_size)
            .into_iter()
            .filter_map(|subtree| known.get(&subtree).map(|hash| (subtree, *hash)))
            .collect();
        Tree {
            size: new_size,
            frontier,
        }
    }
}

struct Appender {
    store: Store,
    log: String,
    tree: Tree,
    heads: watch::Sender<(u64, Hash)>,
}

impl Appender {
    async fn append(&mut self, batch: Vec<Queued>) {
        let mut entries = Vec::with_capacity(batch.len());
        let mut leaves = Vec::with_capacity(batch.len());
        let mut acks = Vec::with_capacity(batch.len());
        for queued in batch {
            entries.push(queued.entry);
            leaves.push(queued.leaf);
            acks.push(queued.ack);
        }
        let first = self.tree.size;
        match self.write_batch(&entries, &leaves).await {
            Ok(()) => {
                for (index, ack) in (first..).zip(acks) {
                    let _ = ack.send(Ok(index));
                }
            }
            Err(_) => {
                for ack in acks {
                    let _ = ack.send(Err(AppendError::Store));
                }
            }
        }
    }

    /// Stores a batch and publishes the new head; on failure, reloads its view of the tree.
    async fn write_batch(
        &mut self,
        entries: &[Vec<u8>],
        leaves: &[Hash],
    ) -> Result<(), SetupError> {
        match self.write(entries, leaves).await {
            Ok(grown) => {
                self.tree = grown;
                let _ = self.heads.send((self.tree.size, self.tree.root()));
                Ok(())
            }
            Err(error) => {
                tracing::error!(error = %error, log = %self.log, "audit append failed");
                // Another writer, or a failed commit: start again from what is stored.
                match Tree::load(&self.store, &self.log).await {
                    Ok(tree) => self.tree = tree,
                    Err(error) => tracing::error!(%error, "cannot reload the audit log"),
                }
                Err(error)
            }
        }
    }

    async fn write(&self, entries: &[Vec<u8>], leaves: &[Hash]) -> Result<Tree, SetupError> {
        let added = merkle::append_hashes(&self.tree, self.tree.size, leaves)?;
        // Only the stored levels (`proofs::is_stored_level`); the frontier keeps every level.
        let hashes: Vec<(u8, u64, [u8; 32])> = added
            .iter()
            .filter(|(subtree, _)| proofs::is_stored_level(subtree.level))
            .map(|(subtree, hash)| (subtree.level, subtree.index, *hash))
            .collect();
        // Boxed: the store's future is large, and the writer task that awaits this is spawned
        // (its future copied) each time a request finds the log idle.
        Box::pin(
            self.store
                .audit_append(&self.log, self.tree.size, entries, &hashes),
        )
        .await?;
        let new_size = self.tree.size + entries.len() as u64;
        Ok(self.tree.grown(new_size, &added))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_seeds_are_read_strictly() {
        let check = |text: &str, expected: Option<[u8; 32]>| {
            assert_eq!(parse_hex_seed(text), expected, "{text:?}");
        };
        check(&"ab".repeat(32), Some([0xab; 32]));
        check(&"AB".repeat(32), Some([0xab; 32]));
        check(&"ab".repeat(31), None);
        check(&"zz".repeat(32), None);
        check(&"é".repeat(32), None);
    }

    #[test]
    fn the_pseudonym_secret_is_not_the_seed() {
        let seed = [7; 32];
        assert_ne!(pseudonym_secret(&seed), seed);
        assert_eq!(pseudonym_secret(&seed), pseudonym_secret(&seed));
        assert_ne!(pseudonym_secret(&seed), pseudonym_secret(&[8; 32]));
    }

    #[test]
    fn frontier_roots_match_the_memory_tree() {
        let mut memory = merkle::MemoryTree::new();
        let mut tree = Tree {
            size: 0,
            frontier: HashMap::new(),
        };
        assert_eq!(tree.root(), merkle::EMPTY_ROOT);
        for size in 1..=300u64 {
            let leaf = leaf_hash(&size.to_be_bytes());
            memory.append_leaf_hash(leaf);
            let added = merkle::append_hashes(&tree, tree.size, &[leaf]).expect("appends");
            tree = tree.grown(size, &added);
            assert_eq!(tree.root(), memory.root(size).expect("root"), "size {size}");
        }
    }
}
