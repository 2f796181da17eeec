//! The C2SP tlog-tiles layout of the log (<https://c2sp.org/tlog-tiles>): which tiles and entry
//! bundles a tree has, their paths, their bytes, and a [`HashReader`] over downloaded tiles.
//!
//! The spec serves the tree as *tiles*: the tile at level `L`, index `N` lists the Merkle tree
//! hashes `MTH(D[(N·256 + i)·256^L : (N·256 + i + 1)·256^L])` for `i` in `0..256`, that is the
//! hashes of the complete [`Subtree`]s at tree level `8·L` with indices `N·256 + i`. A tile thus
//! stands for a whole subtree of height 8; the tree levels between `8·L` and `8·L + 8` are not
//! served but recomputed from the tile. A full tile has 256 hashes (8,192 bytes); the rightmost
//! tile of a level may be *partial*, with `W` in `1..=255` hashes, and a tree of size `s` has
//! `floor(s / 256^L) mod 256` hashes in its partial tile at level `L` (none when that is 0).
//! Tiles are at `tile/<L>/<N>[.p/<W>]`, the leaves themselves in *entry bundles* at
//! `tile/entries/<N>[.p/<W>]`, each entry a big-endian `u16` length followed by its bytes.
//!
//! Everything here is pure: a log serves [`tile_bytes`] computed from its own [`HashReader`], and a
//! verifier loads the tiles it downloads into a [`TileHashReader`] and computes roots and proofs
//! from it with the functions of [`crate::merkle`].
//!
//! ```
//! use civitas_audit::merkle::{self, MemoryTree, leaf_hash, verify_inclusion};
//! use civitas_audit::tiles::{Tile, TileHashReader, tile_bytes};
//! use civitas_audit::Error;
//!
//! // The log: 1,000 events, served as tiles.
//! let mut log = MemoryTree::new();
//! for event in 0..1000 {
//!     log.append(format!("event {event}").as_bytes());
//! }
//! let serve = |path: &str| tile_bytes(&log, Tile::parse(path)?);
//!
//! // A verifier that trusts the root of 1,000 leaves (from a signed checkpoint) asks for an
//! // inclusion proof; the reader names every tile it lacks, all at once.
//! let root = log.root(1000)?;
//! let mut tiles = TileHashReader::new(1000);
//! let Err(Error::MissingTiles { tiles: needed }) = merkle::inclusion_proof(&tiles, 700, 1000) else {
//!     unreachable!("no tile is loaded yet");
//! };
//! // Leaf 700's own subtree of 256, the partial tile to its right, and the level 1 tile for the
//! // left half of the tree.
//! let paths: Vec<String> = needed.iter().map(Tile::path).collect();
//! assert_eq!(paths, ["tile/0/002", "tile/0/003.p/232", "tile/1/000.p/3"]);
//! for tile in needed {
//!     tiles.insert(tile, serve(&tile.path())?)?;
//! }
//! let proof = merkle::inclusion_proof(&tiles, 700, 1000)?;
//! verify_inclusion(&leaf_hash(b"event 700"), 700, 1000, &proof, &root)?;
//! # Ok::<(), Error>(())
//! ```

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::Error;
use crate::merkle::{HASH_LEN, Hash, HashReader, Subtree, node_hash};

/// The number of hashes in a full tile, and of entries in a full entry bundle.
pub const TILE_WIDTH: u16 = 256;

/// The number of tree levels one tile spans: a tile at level `L` lists hashes at tree level `8·L`.
pub const TILE_HEIGHT: u8 = 8;

/// The highest tile level a tile path may name.
pub const MAX_TILE_LEVEL: u8 = 63;

/// The longest entry an entry bundle can hold: its length prefix is a `u16`.
pub const MAX_ENTRY_LEN: usize = u16::MAX as usize;

/// [`TILE_WIDTH`] for arithmetic on indices.
const FULL: u64 = TILE_WIDTH as u64;

/// Index path elements hold three decimal digits each.
const PATH_BASE: u64 = 1000;

/// A hash tile: `width` hashes at tree level `8·level`, from hash `index·256` of that level on.
///
/// Its fields are checked on construction: `level <= 63`, `1 <= width <= 256`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    level: u8,
    index: u64,
    width: u16,
}

impl Tile {
    /// The tile at `level`, `index` with `width` hashes, partial when `width < 256`.
    ///
    /// Returns [`Error::TileLevelOutOfRange`] above level 63 and [`Error::TileWidthOutOfRange`]
    /// for a width outside `1..=256`.
    pub fn new(level: u8, index: u64, width: u16) -> Result<Self, Error> {
        if level > MAX_TILE_LEVEL {
            return Err(Error::TileLevelOutOfRange { level });
        }
        check_width(width)?;
        Ok(Tile {
            level,
            index,
            width,
        })
    }

    /// The full tile at `level`, `index`.
    pub fn full(level: u8, index: u64) -> Result<Self, Error> {
        Self::new(level, index, TILE_WIDTH)
    }

    /// Its level: it lists hashes of subtrees of `256^level` leaves.
    pub fn level(&self) -> u8 {
        self.level
    }

    /// Its index among the tiles of its level.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The number of hashes it lists, 256 for a full tile.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Whether it lists fewer than 256 hashes.
    pub fn is_partial(&self) -> bool {
        self.width < TILE_WIDTH
    }

    /// The length of its bytes: 32 per hash.
    pub fn byte_len(&self) -> usize {
        usize::from(self.width) * HASH_LEN
    }

    /// Its path, `tile/<L>/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        self.to_string()
    }

    /// The tile named by a path `tile/<L>/<N>[.p/<W>]`, in the one spelling the spec allows.
    pub fn parse(path: &str) -> Result<Self, Error> {
        match Resource::parse(path)? {
            Resource::Tile(tile) => Ok(tile),
            Resource::Entries(_) => Err(bad_path(path, "an entry bundle path, not a tile path")),
        }
    }

    /// The entry bundle whose entries hash to the hashes of this tile, for a level 0 tile.
    pub fn entry_bundle(&self) -> Option<EntryBundle> {
        (self.level == 0).then_some(EntryBundle {
            index: self.index,
            width: self.width,
        })
    }

    /// The complete subtrees whose hashes the tile lists, in order.
    ///
    /// Returns [`Error::TileBeyondLargestTree`] for a tile that no tree of fewer than 2^64 leaves
    /// has: any above level 7, and those far enough right on the levels below.
    pub fn subtrees(&self) -> Result<impl Iterator<Item = Subtree> + use<>, Error> {
        let beyond = Error::TileBeyondLargestTree {
            level: self.level,
            index: self.index,
        };
        // Subtrees at tree level 64 or above would have 2^64 leaves or more.
        if u32::from(self.level) * u32::from(TILE_HEIGHT) >= u64::BITS {
            return Err(beyond);
        }
        let tree_level = self.level * TILE_HEIGHT;
        let first = self.index.checked_mul(FULL);
        let last = first.and_then(|first| first.checked_add(u64::from(self.width) - 1));
        let (Some(first), Some(last)) = (first, last) else {
            return Err(beyond);
        };
        // The last subtree must end within 2^64 - 1 leaves.
        if (u128::from(last) + 1) << tree_level > u128::from(u64::MAX) {
            return Err(beyond);
        }
        Ok((first..=last).map(move |index| Subtree {
            level: tree_level,
            index,
        }))
    }

    /// The tile of the tree of `tree_size` leaves from which the hash of `subtree` is computed:
    /// the tile at level `subtree.level / 8`, as wide as that tree has it.
    ///
    /// Returns [`Error::MissingHash`] when the subtree is not complete in that tree.
    pub fn holding(subtree: Subtree, tree_size: u64) -> Result<Self, Error> {
        locate(subtree, tree_size).map(|place| place.tile)
    }
}

impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tile/{}/", self.level)?;
        write_index_and_width(f, self.index, self.width)
    }
}

/// An entry bundle: the `width` log entries from entry `index·256` on, the leaves of the level 0
/// tile with the same index and width.
///
/// Its width is checked on construction: `1 <= width <= 256`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryBundle {
    index: u64,
    width: u16,
}

impl EntryBundle {
    /// The entry bundle at `index` with `width` entries, partial when `width < 256`.
    ///
    /// Returns [`Error::TileWidthOutOfRange`] for a width outside `1..=256`.
    pub fn new(index: u64, width: u16) -> Result<Self, Error> {
        check_width(width)?;
        Ok(EntryBundle { index, width })
    }

    /// The full entry bundle at `index`.
    pub fn full(index: u64) -> Self {
        EntryBundle {
            index,
            width: TILE_WIDTH,
        }
    }

    /// Its index among the entry bundles.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The number of entries it holds, 256 for a full bundle.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Whether it holds fewer than 256 entries.
    pub fn is_partial(&self) -> bool {
        self.width < TILE_WIDTH
    }

    /// The level 0 tile that lists the leaf hashes of its entries.
    pub fn tile(&self) -> Tile {
        Tile {
            level: 0,
            index: self.index,
            width: self.width,
        }
    }

    /// Its path, `tile/entries/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        self.to_string()
    }

    /// The entry bundle named by a path `tile/entries/<N>[.p/<W>]`, in the one spelling the spec
    /// allows.
    pub fn parse(path: &str) -> Result<Self, Error> {
        match Resource::parse(path)? {
            Resource::Entries(bundle) => Ok(bundle),
            Resource::Tile(_) => Err(bad_path(path, "a tile path, not an entry bundle path")),
        }
    }

    /// The entries of this bundle from its bytes: exactly [`EntryBundle::width`] of them.
    ///
    /// Besides the errors of [`decode_bundle`], returns [`Error::BundleTooShort`] for fewer
    /// entries and [`Error::BundleTrailingBytes`] for bytes after the last one.
    pub fn decode(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        let entries = decode_entries(bytes, usize::from(self.width))?;
        if entries.len() != usize::from(self.width) {
            return Err(Error::BundleTooShort {
                expected: self.width,
                actual: entries.len(),
            });
        }
        Ok(entries)
    }
}

impl fmt::Display for EntryBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tile/entries/")?;
        write_index_and_width(f, self.index, self.width)
    }
}

/// Anything served under `tile/`: a hash tile or an entry bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A hash tile, `tile/<L>/<N>[.p/<W>]`.
    Tile(Tile),
    /// An entry bundle, `tile/entries/<N>[.p/<W>]`.
    Entries(EntryBundle),
}

impl Resource {
    /// The tile or entry bundle a path names.
    ///
    /// The path is relative to the log's prefix and must be spelled exactly as the spec has it:
    /// the level in decimal without leading zeros and at most 63; the index in 3-digit elements,
    /// all but the last starting with `x`, with no leading `x000` element; the width of a partial
    /// tile in decimal without leading zeros, from 1 to 255. Anything else is
    /// [`Error::BadTilePath`].
    pub fn parse(path: &str) -> Result<Self, Error> {
        let mut parts = path.split('/');
        if parts.next() != Some("tile") {
            return Err(bad_path(path, "it does not start with tile/"));
        }
        let kind = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        let (index, width) = parse_index_and_width(path, &rest)?;
        if kind == "entries" {
            return Ok(Resource::Entries(EntryBundle { index, width }));
        }
        let Some(level) = parse_decimal(kind) else {
            return Err(bad_path(
                path,
                "the level is neither `entries` nor a decimal number without leading zeros",
            ));
        };
        match u8::try_from(level) {
            Ok(level) if level <= MAX_TILE_LEVEL => Ok(Resource::Tile(Tile {
                level,
                index,
                width,
            })),
            _ => Err(bad_path(path, "the level is above 63")),
        }
    }

    /// Its path.
    pub fn path(&self) -> String {
        match self {
            Resource::Tile(tile) => tile.path(),
            Resource::Entries(bundle) => bundle.path(),
        }
    }
}

fn check_width(width: u16) -> Result<(), Error> {
    if (1..=TILE_WIDTH).contains(&width) {
        Ok(())
    } else {
        Err(Error::TileWidthOutOfRange { width })
    }
}

fn bad_path(path: &str, reason: &'static str) -> Error {
    Error::BadTilePath {
        path: path.to_owned(),
        reason,
    }
}

/// Writes `<N>[.p/<W>]`: `N` in 3-digit elements, all but the last prefixed with `x`.
fn write_index_and_width(f: &mut fmt::Formatter<'_>, index: u64, width: u16) -> fmt::Result {
    let mut elements = Vec::new();
    let mut rest = index;
    loop {
        elements.push(rest % PATH_BASE);
        rest /= PATH_BASE;
        if rest == 0 {
            break;
        }
    }
    let mut elements = elements.iter().rev().peekable();
    while let Some(element) = elements.next() {
        if elements.peek().is_some() {
            write!(f, "x{element:03}/")?;
        } else {
            write!(f, "{element:03}")?;
        }
    }
    if width < TILE_WIDTH {
        write!(f, ".p/{width}")?;
    }
    Ok(())
}

/// Parses the path elements after the level: `<N>` or `<N>.p/<W>`.
fn parse_index_and_width(path: &str, parts: &[&str]) -> Result<(u64, u16), Error> {
    let mut elements: Vec<&str> = parts.to_vec();
    let mut width = TILE_WIDTH;
    if let [.., last_element, partial_width] = parts
        && let Some(last_element) = last_element.strip_suffix(".p")
    {
        width = parse_decimal(partial_width)
            .filter(|width| (1..TILE_WIDTH).contains(width))
            .ok_or_else(|| {
                bad_path(
                    path,
                    "the width is not a decimal number from 1 to 255 without leading zeros",
                )
            })?;
        elements.truncate(parts.len() - 2);
        elements.push(last_element);
    }
    let Some((last, leading)) = elements.split_last() else {
        return Err(bad_path(path, "the index is missing"));
    };
    if leading.first() == Some(&"x000") {
        return Err(bad_path(path, "the index starts with a zero element"));
    }
    let bad_element = || {
        bad_path(
            path,
            "an index element is not three digits, with an x before all but the last",
        )
    };
    let mut index: u64 = 0;
    let digits = leading
        .iter()
        .map(|element| element.strip_prefix('x').ok_or_else(bad_element))
        .chain([Ok(*last)]);
    for element in digits {
        let element = element?;
        if element.len() != 3 || !element.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(bad_element());
        }
        let value = element
            .bytes()
            .fold(0, |value, digit| value * 10 + u64::from(digit - b'0'));
        index = index
            .checked_mul(PATH_BASE)
            .and_then(|index| index.checked_add(value))
            .ok_or_else(|| bad_path(path, "the index does not fit in 64 bits"))?;
    }
    Ok((index, width))
}

/// A decimal number of at most 3 digits without leading zeros ("0" itself is fine).
fn parse_decimal(text: &str) -> Option<u16> {
    let canonical = matches!(text.len(), 1..=3)
        && text.bytes().all(|byte| byte.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| {
        text.bytes()
            .fold(0, |value, digit| value * 10 + u16::from(digit - b'0'))
    })
}

/// The tiles of one level of a tree: its full tiles and at most one partial tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelTiles {
    level: u8,
    hashes: u64,
}

impl LevelTiles {
    /// The tile level.
    pub fn level(&self) -> u8 {
        self.level
    }

    /// The number of hashes the tree has at this tile level (at tree level `8·level`): the number
    /// of complete subtrees of `256^level` leaves.
    pub fn hashes(&self) -> u64 {
        self.hashes
    }

    /// The number of full tiles, which have indices `0..full_tiles()`.
    pub fn full_tiles(&self) -> u64 {
        self.hashes / FULL
    }

    /// The partial tile, right of the full ones, if the number of hashes is not a multiple of 256.
    pub fn partial(&self) -> Option<Tile> {
        let width = (self.hashes % FULL) as u16;
        (width > 0).then_some(Tile {
            level: self.level,
            index: self.full_tiles(),
            width,
        })
    }

    /// All its tiles, left to right: the full ones, then the partial one.
    pub fn tiles(self) -> impl Iterator<Item = Tile> {
        self.tiles_from(0)
    }

    /// Its tiles with an index of at least `first`.
    fn tiles_from(self, first: u64) -> impl Iterator<Item = Tile> {
        let level = self.level;
        (first..self.full_tiles())
            .map(move |index| Tile {
                level,
                index,
                width: TILE_WIDTH,
            })
            .chain(self.partial().filter(move |tile| tile.index >= first))
    }
}

/// The number of hashes a tree of `tree_size` leaves has at tile level `level`.
fn hashes_at(tree_size: u64, level: u8) -> u64 {
    tree_size
        .checked_shr(u32::from(level) * u32::from(TILE_HEIGHT))
        .unwrap_or(0)
}

/// The tiles of the tree of `tree_size` leaves, level by level from level 0, up to the highest
/// level that has a hash. The empty tree has none.
///
/// A tree of 70,000 leaves, for example, has 273 full tiles and a partial tile of 112 hashes at
/// level 0, one full tile and a partial one of 17 at level 1, and a partial tile of 1 at level 2.
pub fn tiles_for_size(tree_size: u64) -> Vec<LevelTiles> {
    (0..=MAX_TILE_LEVEL)
        .map(|level| LevelTiles {
            level,
            hashes: hashes_at(tree_size, level),
        })
        .take_while(|level| level.hashes > 0)
        .collect()
}

/// The tiles a log publishes when it grows from `old_size` to `new_size` leaves: those of the new
/// tree that the old one lacks or has narrower, level by level.
///
/// Returns [`Error::SizesOutOfOrder`] when `old_size > new_size`.
pub fn tiles_to_publish(
    old_size: u64,
    new_size: u64,
) -> Result<impl Iterator<Item = Tile> + use<>, Error> {
    if old_size > new_size {
        return Err(Error::SizesOutOfOrder { old_size, new_size });
    }
    Ok(tiles_for_size(new_size).into_iter().flat_map(move |level| {
        let old_hashes = hashes_at(old_size, level.level);
        let changed = old_hashes != level.hashes;
        // The old tree's tile at `old_hashes / 256` is the first to have grown, if any has.
        level.tiles_from(old_hashes / FULL).filter(move |_| changed)
    }))
}

/// The bytes of `tile`: its hashes, 32 bytes each, read from `reader` in one batch.
///
/// Returns [`Error::TileBeyondLargestTree`] for a tile no tree has, and whatever `reader` returns,
/// typically [`Error::MissingHash`] for a tile the stored tree does not have (yet) at this width.
pub fn tile_bytes<R: HashReader + ?Sized>(reader: &R, tile: Tile) -> Result<Vec<u8>, Error> {
    let subtrees: Vec<Subtree> = tile.subtrees()?.collect();
    let hashes = reader.read_hashes(&subtrees)?;
    if hashes.len() != subtrees.len() {
        return Err(Error::ReaderMiscounted {
            requested: subtrees.len(),
            returned: hashes.len(),
        });
    }
    Ok(hashes.as_flattened().to_vec())
}

/// Where the hash of a subtree comes from: `count` hashes of `tile` from `position` on.
struct Place {
    tile: Tile,
    position: usize,
    count: usize,
}

fn locate(subtree: Subtree, tree_size: u64) -> Result<Place, Error> {
    let Subtree { level, index } = subtree;
    let complete = tree_size
        .checked_shr(u32::from(level))
        .is_some_and(|subtrees| index < subtrees);
    if !complete {
        return Err(Error::MissingHash { level, index });
    }
    let tile_level = level / TILE_HEIGHT;
    let within = level % TILE_HEIGHT;
    // The subtree's first hash on the tile's level; it is below the number of hashes there, so
    // it does not overflow.
    let first = index << within;
    let tile_index = first / FULL;
    let available = hashes_at(tree_size, tile_level) - tile_index * FULL;
    Ok(Place {
        tile: Tile {
            level: tile_level,
            index: tile_index,
            width: available.min(FULL) as u16,
        },
        position: (first % FULL) as usize,
        count: 1 << within,
    })
}

/// A [`HashReader`] over the tiles of one tree, as a verifier downloads them.
///
/// The hash of a subtree at tree level `8·L + k` (`k < 8`) is computed from `2^k` hashes of the
/// level `L` tile that holds it. When the tiles a request needs are not all loaded, the reader
/// answers [`Error::MissingTiles`] with every one of them, as wide as the tree has them, so a
/// verifier can fetch them in one round and ask again.
///
/// The hashes are not authenticated here: whatever is computed from them must be checked against
/// a trusted root of the tree, as [`crate::merkle::root`] compared with a signed checkpoint or
/// [`crate::merkle::verify_inclusion`] do.
#[derive(Clone, Debug, Default)]
pub struct TileHashReader {
    tree_size: u64,
    /// The widest tile loaded at each (level, index).
    tiles: BTreeMap<(u8, u64), Vec<u8>>,
}

impl TileHashReader {
    /// A reader for the tree of `tree_size` leaves, with no tile loaded.
    pub fn new(tree_size: u64) -> Self {
        TileHashReader {
            tree_size,
            tiles: BTreeMap::new(),
        }
    }

    /// The size of the tree it reads.
    pub fn tree_size(&self) -> u64 {
        self.tree_size
    }

    /// Loads a tile's bytes.
    ///
    /// Returns [`Error::TileLengthMismatch`] unless there are 32 bytes for each hash of the
    /// tile's width, and [`Error::InconsistentTiles`] when a tile at the same level and index is
    /// already loaded with different hashes in common; of two consistent tiles, the wider is kept.
    pub fn insert(&mut self, tile: Tile, bytes: Vec<u8>) -> Result<(), Error> {
        if bytes.len() != tile.byte_len() {
            return Err(Error::TileLengthMismatch {
                expected: tile.byte_len(),
                actual: bytes.len(),
            });
        }
        match self.tiles.entry((tile.level, tile.index)) {
            Entry::Vacant(vacant) => {
                vacant.insert(bytes);
            }
            Entry::Occupied(mut occupied) => {
                let common = occupied.get().len().min(bytes.len());
                if occupied.get()[..common] != bytes[..common] {
                    return Err(Error::InconsistentTiles {
                        level: tile.level,
                        index: tile.index,
                    });
                }
                if bytes.len() > occupied.get().len() {
                    occupied.insert(bytes);
                }
            }
        }
        Ok(())
    }
}

impl HashReader for TileHashReader {
    fn read_hashes(&self, subtrees: &[Subtree]) -> Result<Vec<Hash>, Error> {
        let mut hashes = Vec::with_capacity(subtrees.len());
        let mut missing = BTreeSet::new();
        for &subtree in subtrees {
            let Place {
                tile,
                position,
                count,
            } = locate(subtree, self.tree_size)?;
            let range = position * HASH_LEN..(position + count) * HASH_LEN;
            let loaded = self.tiles.get(&(tile.level, tile.index));
            match loaded.and_then(|bytes| bytes.get(range)) {
                Some(bytes) => hashes.push(merkle_tree_hash(bytes).ok_or(Error::MissingHash {
                    level: subtree.level,
                    index: subtree.index,
                })?),
                None => {
                    missing.insert(tile);
                }
            }
        }
        if missing.is_empty() {
            Ok(hashes)
        } else {
            Err(Error::MissingTiles {
                tiles: missing.into_iter().collect(),
            })
        }
    }
}

/// The hash of the complete subtree whose leaves are the hashes in `bytes`, a power of two of them;
/// `None` for none.
fn merkle_tree_hash(bytes: &[u8]) -> Option<Hash> {
    let (hashes, _) = bytes.as_chunks::<HASH_LEN>();
    let mut level = hashes.to_vec();
    while level.len() > 1 {
        let (pairs, _) = level.as_chunks::<2>();
        level = pairs
            .iter()
            .map(|[left, right]| node_hash(left, right))
            .collect();
    }
    level.first().copied()
}

/// The bytes of an entry bundle holding `entries`: each a big-endian `u16` length, then the entry.
///
/// Returns [`Error::EntryTooLong`] for an entry over 65,535 bytes and [`Error::TooManyEntries`]
/// for more than 256 entries.
pub fn encode_bundle<I>(entries: I) -> Result<Vec<u8>, Error>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let mut bytes = Vec::new();
    let mut count = 0;
    for entry in entries {
        let entry = entry.as_ref();
        let length = u16::try_from(entry.len()).map_err(|_| Error::EntryTooLong {
            length: entry.len(),
        })?;
        count += 1;
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(entry);
    }
    if count > usize::from(TILE_WIDTH) {
        return Err(Error::TooManyEntries { entries: count });
    }
    Ok(bytes)
}

/// The entries of an entry bundle, at most 256 of them.
///
/// Strict: returns [`Error::BundleTruncatedLength`] when the bytes end inside a length prefix,
/// [`Error::BundleEntryOverrun`] when an entry declares more bytes than remain, and
/// [`Error::BundleTrailingBytes`] for bytes after the 256th entry. Use [`EntryBundle::decode`]
/// to hold a bundle to its width.
pub fn decode_bundle(bytes: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    decode_entries(bytes, usize::from(TILE_WIDTH))
}

/// Decodes at most `limit` entries; bytes after them are an error.
fn decode_entries(bytes: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, Error> {
    let mut entries = Vec::new();
    let mut offset = 0;
    let mut rest = bytes;
    while !rest.is_empty() {
        if entries.len() == limit {
            return Err(Error::BundleTrailingBytes {
                offset,
                count: rest.len(),
            });
        }
        let Some((prefix, after)) = rest.split_first_chunk::<2>() else {
            return Err(Error::BundleTruncatedLength { offset });
        };
        let declared = usize::from(u16::from_be_bytes(*prefix));
        if declared > after.len() {
            return Err(Error::BundleEntryOverrun {
                offset,
                declared,
                available: after.len(),
            });
        }
        let (entry, next) = after.split_at(declared);
        entries.push(entry.to_vec());
        offset += 2 + declared;
        rest = next;
    }
    Ok(entries)
}
