//! The auditor: checks everything a log publishes against its signed checkpoint, and against what
//! the auditor saw of it before.
//!
//! [`verify`] reads a log through a [`Source`] (paths relative to the log's base: `checkpoint`,
//! then C2SP tlog-tiles paths) and, in this order:
//!
//! 1. opens the checkpoint: signed by the log's key, of the expected origin, cosigned by enough
//!    known witnesses (C2SP signed-note, tlog-checkpoint, tlog-cosignature);
//! 2. if it remembers a checkpoint of the log ([`State`]), refuses a smaller tree (a rollback or a
//!    replayed checkpoint), and proves from the tiles that the new tree extends the remembered
//!    one (RFC 9162 §2.1.4), fetching only the few tiles the proof needs: a log that rewrote its
//!    history is caught here;
//! 3. fetches every tile of the tree and checks all of them against the checkpoint's root, from
//!    the top down: the partial tiles on the right edge hash to the root, and every full tile
//!    hashes to its hash in the tile above it;
//! 4. fetches every entry bundle, checks that each entry's leaf hash is the one its level 0 tile
//!    lists (so every entry is proven included), and hands it to the caller's own check.
//!
//! Checking a tree of `n` entries reads each tile and bundle once and hashes about `2n` times,
//! holding at most one level 0 tile and `n / 256` upper hashes in memory.
//!
//! The state an auditor keeps is the last checkpoint it verified. A checkpoint is checked to
//! extend that one, which extended the one before, so the log stays consistent with every
//! checkpoint the auditor has ever verified.
//!
//! ```
//! use std::collections::HashMap;
//!
//! use civitas_audit::auditor::{Policy, verify};
//! use civitas_audit::checkpoint::{Checkpoint, CosignatureVerifier, cosign, sign_checkpoint};
//! use civitas_audit::merkle::MemoryTree;
//! use civitas_audit::note::Signer;
//! use civitas_audit::tiles::{encode_bundle, tile_bytes, tiles_for_size};
//!
//! // A log of three entries, served from memory.
//! let entries = [&b"alice read Spot:1"[..], b"bob read Spot:2", b"carol was refused"];
//! let mut tree = MemoryTree::new();
//! entries.iter().for_each(|entry| _ = tree.append(entry));
//! let mut served = HashMap::new();
//! for tile in tiles_for_size(3).into_iter().flat_map(|level| level.tiles()) {
//!     served.insert(tile.path(), tile_bytes(&tree, tile)?);
//! }
//! served.insert("tile/entries/000.p/3".to_owned(), encode_bundle(entries)?);
//! let log = Signer::from_seed("civitas.example/broker", &[1; 32])?;
//! let witness = Signer::from_seed("civitas.example/connector", &[2; 32])?;
//! let checkpoint = Checkpoint::new("civitas.example/broker", 3, tree.root(3)?)?;
//! let note = cosign(&sign_checkpoint(&checkpoint, &log), &witness, 1_700_000_000)?;
//! served.insert("checkpoint".to_owned(), note.into_bytes());
//!
//! let policy = Policy {
//!     log: log.verifier(),
//!     origin: "civitas.example/broker".to_owned(),
//!     witnesses: vec![CosignatureVerifier::of(&witness)],
//!     required_witnesses: 1,
//! };
//! let (report, state) = verify(&mut served, &policy, None, |_, _| Ok(()))?;
//! assert_eq!(report.entries_checked, 3);
//!
//! // The next run remembers this checkpoint: a log that drops an entry is caught.
//! let mut rolled_back = served.clone();
//! let smaller = Checkpoint::new("civitas.example/broker", 2, tree.root(2)?)?;
//! let note = cosign(&sign_checkpoint(&smaller, &log), &witness, 1_700_000_060)?;
//! rolled_back.insert("checkpoint".to_owned(), note.into_bytes());
//! let error = verify(&mut rolled_back, &policy, Some(&state), |_, _| Ok(())).unwrap_err();
//! assert_eq!(error.to_string(), "checkpoint size 2 is older than the remembered 3 (rollback)");
//! # Ok::<(), civitas_audit::Error>(())
//! ```

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use crate::Error;
use crate::checkpoint::{
    Cosignature, CosignatureVerifier, open_checkpoint, open_checkpoint_with_witnesses,
};
use crate::merkle::{self, HASH_LEN, Hash, Subtree, leaf_hash, node_hash, verify_consistency};
use crate::note::Verifier;
use crate::tiles::{EntryBundle, TILE_HEIGHT, TILE_WIDTH, Tile, TileHashReader, tiles_for_size};

/// The path of a log's checkpoint, relative to its base.
pub const CHECKPOINT_PATH: &str = "checkpoint";

/// Where an auditor reads a log from: the log's checkpoint and its C2SP tlog-tiles resources.
pub trait Source {
    /// The bytes at `path`, relative to the log's base: [`CHECKPOINT_PATH`], a tile path
    /// `tile/<L>/<N>[.p/<W>]` or an entry bundle path `tile/entries/<N>[.p/<W>]`.
    ///
    /// Returns `Ok(None)` when the log does not serve the path (HTTP 404), and an error, such as
    /// [`Error::Fetch`], when it cannot be fetched at all.
    fn get(&mut self, path: &str) -> Result<Option<Vec<u8>>, Error>;
}

impl<S: Source + ?Sized> Source for &mut S {
    fn get(&mut self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        (**self).get(path)
    }
}

/// A log held in memory, by path.
impl Source for HashMap<String, Vec<u8>> {
    fn get(&mut self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(HashMap::get(self, path).cloned())
    }
}

/// What an auditor requires of a log's checkpoints.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The log's key: every checkpoint must be signed by it.
    pub log: Verifier,
    /// The log's origin, the first line of its checkpoints.
    pub origin: String,
    /// The witnesses whose cosignatures count.
    pub witnesses: Vec<CosignatureVerifier>,
    /// How many of `witnesses` must have cosigned a checkpoint.
    pub required_witnesses: usize,
}

/// What an auditor remembers of a log between runs: the last checkpoint it verified, whose tree
/// every later checkpoint must extend.
///
/// It is made by [`verify`] and kept as JSON ([`State::to_json`], [`State::from_json`]). The
/// checkpoint note is kept whole, signatures included, so the state is evidence: should the log
/// later show a tree that does not extend it, the log's own signature proves the fork.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    origin: String,
    size: u64,
    root: Hash,
    checkpoint: String,
}

/// The JSON form of a [`State`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    origin: String,
    size: u64,
    root: String,
    checkpoint: String,
}

impl State {
    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The size of the tree last verified.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the tree last verified.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The signed checkpoint note last verified, cosignatures included.
    pub fn checkpoint(&self) -> &str {
        &self.checkpoint
    }

    /// The state as a JSON object: `origin`, `size`, `root` (standard base64, as in
    /// checkpoints) and `checkpoint` (the note's text), pretty-printed, ending in a newline.
    pub fn to_json(&self) -> String {
        let json = serde_json::json!({
            "origin": self.origin,
            "size": self.size,
            "root": BASE64.encode(self.root),
            "checkpoint": self.checkpoint,
        });
        format!("{json:#}\n")
    }

    /// The state saved by [`State::to_json`], for the log `policy` describes.
    ///
    /// Returns [`Error::StateUnreadable`] for anything but that JSON object, and
    /// [`Error::StateRejected`] for the state of another origin, whose checkpoint the log's key
    /// did not sign, or whose size and root are not those of its checkpoint.
    pub fn from_json(json: &str, policy: &Policy) -> Result<Self, Error> {
        let file: StateFile =
            serde_json::from_str(json).map_err(|error| Error::StateUnreadable {
                reason: error.to_string(),
            })?;
        let root = BASE64
            .decode(&file.root)
            .ok()
            .and_then(|root| Hash::try_from(root).ok())
            .ok_or_else(|| Error::StateUnreadable {
                reason: format!("{:?} is not a base64 SHA-256 root hash", file.root),
            })?;
        let state = State {
            origin: file.origin,
            size: file.size,
            root,
            checkpoint: file.checkpoint,
        };
        state.check(policy)?;
        Ok(state)
    }

    /// Checks that the state is one of the log `policy` describes.
    fn check(&self, policy: &Policy) -> Result<(), Error> {
        let rejected = |reason: String| Error::StateRejected { reason };
        if self.origin != policy.origin {
            return Err(rejected(format!(
                "it is of the log {:?}, not {:?}",
                self.origin, policy.origin
            )));
        }
        let checkpoint = open_checkpoint(&self.checkpoint, &policy.log, &policy.origin)
            .map_err(|error| rejected(format!("its checkpoint: {error}")))?;
        if checkpoint.size() != self.size || *checkpoint.root() != self.root {
            return Err(rejected(
                "its size and root are not those of its checkpoint".to_owned(),
            ));
        }
        Ok(())
    }
}

/// What [`verify`] checked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The log's origin.
    pub origin: String,
    /// The size of the verified tree.
    pub size: u64,
    /// The root of the verified tree.
    pub root: Hash,
    /// The number of entries proven included and handed to the entry check.
    pub entries_checked: u64,
    /// The known witnesses whose cosignatures verified.
    pub cosigned_by: Vec<Cosignature>,
    /// The size of the remembered tree that the verified tree was proven to extend.
    pub extends: Option<u64>,
}

/// Verifies the log that `source` serves against `policy` and, if given, the `state` of an
/// earlier run; hands each entry, once proven included, to `entry_check` with its index.
///
/// Returns what was checked and the state to remember for the next run, or the first problem
/// found, as an error whose message names it and where it is: [`Error::CheckpointRejected`],
/// [`Error::Rollback`], [`Error::Fork`], [`Error::TilesRootMismatch`], [`Error::TileMismatch`],
/// [`Error::EntryMismatch`], [`Error::EntryRejected`], [`Error::NotServed`] for a resource the
/// tree needs that the log does not serve, [`Error::BadResource`] for one that is malformed;
/// [`Error::StateRejected`] for a state of another log; and whatever `source` returns.
pub fn verify<S, F>(
    source: &mut S,
    policy: &Policy,
    state: Option<&State>,
    mut entry_check: F,
) -> Result<(Report, State), Error>
where
    S: Source + ?Sized,
    F: FnMut(u64, &[u8]) -> Result<(), String>,
{
    if let Some(state) = state {
        state.check(policy)?;
    }
    let note = fetch(source, CHECKPOINT_PATH)?;
    let note = String::from_utf8(note).map_err(|_| Error::CheckpointNotUtf8)?;
    let (checkpoint, cosigned_by) = open_checkpoint_with_witnesses(
        &note,
        &policy.log,
        &policy.origin,
        &policy.witnesses,
        policy.required_witnesses,
    )
    .map_err(|problem| Error::CheckpointRejected {
        problem: Box::new(problem),
    })?;
    let (size, root) = (checkpoint.size(), *checkpoint.root());
    if let Some(state) = state {
        check_extends(source, state, size, &root)?;
    }
    let entries_checked = check_tree(source, size, &root, &mut entry_check)?;
    let report = Report {
        origin: policy.origin.clone(),
        size,
        root,
        entries_checked,
        cosigned_by,
        extends: state.map(State::size),
    };
    let state = State {
        origin: policy.origin.clone(),
        size,
        root,
        checkpoint: note,
    };
    Ok((report, state))
}

/// Checks that the tree of `size` leaves with root `root` extends the remembered one, from the
/// tiles of a consistency proof.
fn check_extends<S: Source + ?Sized>(
    source: &mut S,
    state: &State,
    size: u64,
    root: &Hash,
) -> Result<(), Error> {
    let remembered = state.size;
    if size < remembered {
        return Err(Error::Rollback { size, remembered });
    }
    let fork = Error::Fork { size, remembered };
    if size == remembered {
        return if *root == state.root {
            Ok(())
        } else {
            Err(fork)
        };
    }
    // The old root is computed from the same tiles as the proof; once the proof shows it to be
    // the old root of the signed tree, a difference from the remembered root is a fork, and not
    // merely a bad tile.
    let mut tiles = FetchedTiles::new(size);
    let proof = tiles.read(source, |reader| {
        merkle::consistency_proof(reader, remembered, size)
    })?;
    let old_root = tiles.read(source, |reader| merkle::root(reader, remembered))?;
    if verify_consistency(remembered, size, &old_root, root, &proof).is_err() {
        return Err(Error::TilesRootMismatch { tiles: tiles.paths });
    }
    if old_root != state.root {
        return Err(fork);
    }
    Ok(())
}

/// Tiles fetched on demand into a [`TileHashReader`].
struct FetchedTiles {
    reader: TileHashReader,
    paths: Vec<String>,
}

impl FetchedTiles {
    fn new(tree_size: u64) -> Self {
        FetchedTiles {
            reader: TileHashReader::new(tree_size),
            paths: Vec::new(),
        }
    }

    /// Runs `compute` on the tiles, fetching those it reports missing until it needs no more.
    fn read<S, T>(
        &mut self,
        source: &mut S,
        compute: impl Fn(&TileHashReader) -> Result<T, Error>,
    ) -> Result<T, Error>
    where
        S: Source + ?Sized,
    {
        loop {
            match compute(&self.reader) {
                Err(Error::MissingTiles { tiles }) => {
                    for tile in &tiles {
                        let path = tile.path();
                        if self.paths.contains(&path) {
                            // A loaded tile reported missing: fetching again would not help.
                            return Err(Error::MissingTiles { tiles });
                        }
                        let bytes = fetch_tile(source, *tile)?;
                        self.reader
                            .insert(*tile, bytes)
                            .map_err(|problem| bad_resource(&path, problem))?;
                        self.paths.push(path);
                    }
                }
                other => return other,
            }
        }
    }
}

/// Fetches every tile and entry bundle of the tree of `size` leaves and checks them against its
/// `root`; returns the number of entries checked.
fn check_tree<S, F>(
    source: &mut S,
    size: u64,
    root: &Hash,
    entry_check: &mut F,
) -> Result<u64, Error>
where
    S: Source + ?Sized,
    F: FnMut(u64, &[u8]) -> Result<(), String>,
{
    let levels = tiles_for_size(size);

    // The partial tiles, one per level at most, hold the right edge of the tree: the root is
    // computed from them alone, so they are checked first.
    let mut partials = Vec::with_capacity(levels.len());
    let mut edge = FetchedTiles::new(size);
    for level in &levels {
        let partial = match level.partial() {
            Some(tile) => {
                let bytes = fetch_tile(source, tile)?;
                edge.reader
                    .insert(tile, bytes.clone())
                    .map_err(|problem| bad_resource(&tile.path(), problem))?;
                edge.paths.push(tile.path());
                Some(bytes)
            }
            None => None,
        };
        partials.push(partial);
    }
    if merkle::root(&edge.reader, size)? != *root {
        return Err(Error::TilesRootMismatch { tiles: edge.paths });
    }

    // Then every full tile, top down: each is the subtree of one hash of the level above, which
    // is already checked. The top level has fewer than 256 hashes, so no full tile.
    let mut above: Vec<Hash> = Vec::new();
    for (level, partial) in levels.iter().zip(&mut partials).skip(1).rev() {
        let mut hashes = Vec::new();
        for tile in level.tiles() {
            let bytes = checked_tile(source, tile, partial, &above, size)?;
            hashes.extend_from_slice(bytes.as_chunks::<HASH_LEN>().0);
        }
        above = hashes;
    }

    // Last, level 0 with the entries it lists.
    let (Some(bottom), Some(bottom_partial)) = (levels.first(), partials.first_mut()) else {
        return Ok(0);
    };
    for tile in bottom.tiles() {
        let bytes = checked_tile(source, tile, bottom_partial, &above, size)?;
        check_entries(source, tile, &bytes, entry_check)?;
    }
    Ok(size)
}

/// Checks the entry bundle of the level 0 `tile` against the tile's `hashes`, and hands each
/// entry to `entry_check`.
fn check_entries<S, F>(
    source: &mut S,
    tile: Tile,
    hashes: &[u8],
    entry_check: &mut F,
) -> Result<(), Error>
where
    S: Source + ?Sized,
    F: FnMut(u64, &[u8]) -> Result<(), String>,
{
    let bundle = EntryBundle::new(tile.index(), tile.width())?;
    let path = bundle.path();
    let bytes = fetch(source, &path)?;
    let entries = bundle
        .decode(&bytes)
        .map_err(|problem| bad_resource(&path, problem))?;
    let first = tile.index() * u64::from(TILE_WIDTH);
    for ((index, entry), hash) in (first..)
        .zip(&entries)
        .zip(hashes.as_chunks::<HASH_LEN>().0)
    {
        if leaf_hash(entry) != *hash {
            return Err(Error::EntryMismatch {
                index,
                tile: tile.path(),
            });
        }
        entry_check(index, entry).map_err(|reason| Error::EntryRejected { index, reason })?;
    }
    Ok(())
}

/// The bytes of `tile`, checked: a partial tile is the one already checked against the root
/// (`partial`), a full tile is fetched and checked against its hash in the level above.
fn checked_tile<S: Source + ?Sized>(
    source: &mut S,
    tile: Tile,
    partial: &mut Option<Vec<u8>>,
    above: &[Hash],
    size: u64,
) -> Result<Vec<u8>, Error> {
    if tile.is_partial()
        && let Some(bytes) = partial.take()
    {
        return Ok(bytes);
    }
    let bytes = fetch_tile(source, tile)?;
    check_full_tile(tile, &bytes, above, size)?;
    Ok(bytes)
}

/// Checks that the full `tile` hashes to its hash in the level above, `above`.
fn check_full_tile(tile: Tile, bytes: &[u8], above: &[Hash], size: u64) -> Result<(), Error> {
    let expected = usize::try_from(tile.index())
        .ok()
        .and_then(|position| above.get(position));
    if expected == Some(&subtree_hash(bytes)) {
        return Ok(());
    }
    let subtree = Subtree {
        level: (tile.level() + 1) * TILE_HEIGHT,
        index: tile.index(),
    };
    Err(Error::TileMismatch {
        tile: tile.path(),
        parent: Tile::holding(subtree, size)
            .map_or_else(|_| "the level above".to_owned(), |parent| parent.path()),
        position: (tile.index() % u64::from(TILE_WIDTH)) as u16,
    })
}

/// The hash of the complete subtree whose leaves are the hashes in `bytes`, a power of two of
/// them.
fn subtree_hash(bytes: &[u8]) -> Hash {
    let mut level: Vec<Hash> = bytes.as_chunks::<HASH_LEN>().0.to_vec();
    while level.len() > 1 {
        level = level
            .as_chunks::<2>()
            .0
            .iter()
            .map(|[left, right]| node_hash(left, right))
            .collect();
    }
    level.first().copied().unwrap_or(merkle::EMPTY_ROOT)
}

/// The bytes at `path`; a path the log does not serve is [`Error::NotServed`].
fn fetch<S: Source + ?Sized>(source: &mut S, path: &str) -> Result<Vec<u8>, Error> {
    source.get(path)?.ok_or_else(|| Error::NotServed {
        path: path.to_owned(),
    })
}

/// The bytes of `tile`, which must be 32 for each of its hashes.
fn fetch_tile<S: Source + ?Sized>(source: &mut S, tile: Tile) -> Result<Vec<u8>, Error> {
    let path = tile.path();
    let bytes = fetch(source, &path)?;
    if bytes.len() != tile.byte_len() {
        return Err(bad_resource(
            &path,
            Error::TileLengthMismatch {
                expected: tile.byte_len(),
                actual: bytes.len(),
            },
        ));
    }
    Ok(bytes)
}

fn bad_resource(path: &str, problem: Error) -> Error {
    Error::BadResource {
        path: path.to_owned(),
        problem: Box::new(problem),
    }
}
