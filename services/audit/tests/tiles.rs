//! The C2SP tlog-tiles layout against the spec's own examples and an independent implementation,
//! the `tlog_tiles` crate (Cloudflare's port of Go's `golang.org/x/mod/sumdb/tlog`, over RustCrypto
//! `sha2`).
//!
//! `tlog_tiles` names tiles the Go checksum-database way, `tile/<H>/<L>/<N>[.p/<W>]` with the tile
//! height `H` in the path and `tile/<H>/data/<N>` for entries; with `H = 8` the rest of its path is
//! the C2SP one, so paths are compared with `8/` inserted and `entries` spelled `data`. It stores
//! hashes by a linear "stored hash index" rather than by (level, index); its tiles are read from
//! that store and compared byte for byte with ours, and its own authenticating tile reader checks
//! our tiles against our roots.

use std::cell::RefCell;

use civitas_audit::Error;
use civitas_audit::merkle::{self, HASH_LEN, Hash, MemoryTree, Subtree, leaf_hash};
use civitas_audit::tiles::{
    EntryBundle, LevelTiles, Resource, Tile, TileHashReader, decode_bundle, encode_bundle,
    tile_bytes, tiles_for_size, tiles_to_publish,
};
use tlog_tiles::{
    Error as TheirError, Hash as TheirHash, HashReader as TheirHashReader, Tile as TheirTile,
    TileHashReader as TheirTileHashReader, TileReader,
};

/// The largest tree of these tests, the spec's own example size.
const LARGEST: u64 = 70_000;

/// SplitMix64: a small deterministic generator, so that every run checks the same samples.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[low, high]`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

fn leaf_data(index: u64) -> Vec<u8> {
    let mut data = format!("event {index}").into_bytes();
    data.resize(data.len() + (index % 5) as usize, b'.');
    data
}

fn tile(level: u8, index: u64, width: u16) -> Tile {
    Tile::new(level, index, width).expect("valid test tile")
}

fn bundle(index: u64, width: u16) -> EntryBundle {
    EntryBundle::new(index, width).expect("valid test bundle")
}

// Paths.

/// Parses `path` and checks the result: the resource for a good path, which must also format back
/// to `path`, or the reason a bad one is rejected.
fn check_path(path: &str, expected: Result<Resource, &str>) {
    match (Resource::parse(path), expected) {
        (Ok(parsed), Ok(expected)) => {
            assert_eq!(parsed, expected, "{path}");
            assert_eq!(parsed.path(), path, "{path} formats back");
        }
        (
            Err(Error::BadTilePath {
                path: quoted,
                reason,
            }),
            Err(expected),
        ) => {
            assert_eq!(quoted, path);
            assert_eq!(reason, expected, "{path}");
        }
        (parsed, expected) => panic!("{path}: got {parsed:?}, expected {expected:?}"),
    }
}

#[test]
fn good_paths_parse_and_format_back() {
    use Resource::{Entries, Tile as T};
    let cases = [
        ("tile/0/000", T(tile(0, 0, 256))),
        ("tile/0/001", T(tile(0, 1, 256))),
        ("tile/0/999", T(tile(0, 999, 256))),
        ("tile/0/x001/000", T(tile(0, 1000, 256))),
        // The spec's own example.
        ("tile/0/x001/x234/067", T(tile(0, 1_234_067, 256))),
        ("tile/1/x001/x234/067.p/1", T(tile(1, 1_234_067, 1))),
        ("tile/2/000.p/255", T(tile(2, 0, 255))),
        ("tile/10/007", T(tile(10, 7, 256))),
        ("tile/63/000.p/1", T(tile(63, 0, 1))),
        (
            "tile/5/x018/x446/x744/x073/x709/x551/615",
            T(tile(5, u64::MAX, 256)),
        ),
        ("tile/entries/000", Entries(bundle(0, 256))),
        (
            "tile/entries/x001/x234/067.p/9",
            Entries(bundle(1_234_067, 9)),
        ),
        ("tile/entries/273.p/112", Entries(bundle(273, 112))),
    ];
    for (path, expected) in cases {
        check_path(path, Ok(expected));
    }
}

#[test]
fn bad_paths_are_rejected_with_their_reason() {
    const PREFIX: &str = "it does not start with tile/";
    const LEVEL: &str = "the level is neither `entries` nor a decimal number without leading zeros";
    const HIGH: &str = "the level is above 63";
    const MISSING: &str = "the index is missing";
    const ELEMENT: &str = "an index element is not three digits, with an x before all but the last";
    const ZERO: &str = "the index starts with a zero element";
    const OVERFLOW: &str = "the index does not fit in 64 bits";
    const WIDTH: &str = "the width is not a decimal number from 1 to 255 without leading zeros";
    let cases = [
        ("", PREFIX),
        ("tiles/0/000", PREFIX),
        ("/tile/0/000", PREFIX),
        ("Tile/0/000", PREFIX),
        ("tile", MISSING),
        ("tile/", MISSING),
        ("tile/0", MISSING),
        ("tile/00/000", LEVEL),
        ("tile/01/000", LEVEL),
        ("tile/+1/000", LEVEL),
        ("tile/-1/000", LEVEL),
        ("tile/1a/000", LEVEL),
        ("tile//000", LEVEL),
        ("tile/1000/000", LEVEL),
        ("tile/data/000", LEVEL),
        ("tile/8/0/000", ELEMENT),
        ("tile/64/000", HIGH),
        ("tile/255/000", HIGH),
        ("tile/0/", ELEMENT),
        ("tile/0/0", ELEMENT),
        ("tile/0/01", ELEMENT),
        ("tile/0/0000", ELEMENT),
        ("tile/0/00a", ELEMENT),
        ("tile/0/ 000", ELEMENT),
        ("tile/0/000 ", ELEMENT),
        ("tile/0/+00", ELEMENT),
        ("tile/0/x001", ELEMENT),
        ("tile/0/001/002", ELEMENT),
        ("tile/0/X001/002", ELEMENT),
        ("tile/0/x01/002", ELEMENT),
        ("tile/0/x0001/002", ELEMENT),
        ("tile/0/x001/02", ELEMENT),
        ("tile/0/000/", ELEMENT),
        ("tile/0/000.p", ELEMENT),
        ("tile/0/000.q/5", ELEMENT),
        ("tile/0/001.p/5/", ELEMENT),
        ("tile/0/x001.p/5/000", ELEMENT),
        ("tile/0/x001/x234/067.p/1.p/2", ELEMENT),
        ("tile/0/x000/001", ZERO),
        ("tile/0/x000/x000/000", ZERO),
        ("tile/entries/x000/000.p/3", ZERO),
        ("tile/0/x018/x446/x744/x073/x709/x551/616", OVERFLOW),
        ("tile/0/x001/x000/x000/x000/x000/x000/x000/000", OVERFLOW),
        ("tile/0/000.p/", WIDTH),
        ("tile/0/000.p/0", WIDTH),
        ("tile/0/000.p/00", WIDTH),
        ("tile/0/000.p/01", WIDTH),
        ("tile/0/000.p/256", WIDTH),
        ("tile/0/000.p/1000", WIDTH),
        ("tile/0/000.p/+5", WIDTH),
        ("tile/0/000.p/5a", WIDTH),
        ("tile/entries", MISSING),
        ("tile/entries/", ELEMENT),
        ("tile/entries/000.p/256", WIDTH),
    ];
    for (path, reason) in cases {
        check_path(path, Err(reason));
    }
}

#[test]
fn tiles_and_bundles_parse_only_their_own_paths() {
    assert_eq!(Tile::parse("tile/3/012.p/4").ok(), Some(tile(3, 12, 4)));
    assert_eq!(
        EntryBundle::parse("tile/entries/012").ok(),
        Some(bundle(12, 256))
    );
    assert!(matches!(
        Tile::parse("tile/entries/012"),
        Err(Error::BadTilePath {
            reason: "an entry bundle path, not a tile path",
            ..
        })
    ));
    assert!(matches!(
        EntryBundle::parse("tile/0/012"),
        Err(Error::BadTilePath {
            reason: "a tile path, not an entry bundle path",
            ..
        })
    ));
}

#[test]
fn coordinates_are_checked() {
    assert!(matches!(
        Tile::new(64, 0, 256),
        Err(Error::TileLevelOutOfRange { level: 64 })
    ));
    for width in [0, 257, u16::MAX] {
        assert!(matches!(
            Tile::new(0, 0, width),
            Err(Error::TileWidthOutOfRange { width: w }) if w == width
        ));
        assert!(matches!(
            EntryBundle::new(0, width),
            Err(Error::TileWidthOutOfRange { width: w }) if w == width
        ));
    }
    let partial = tile(0, 5, 17);
    assert!(partial.is_partial() && partial.byte_len() == 17 * HASH_LEN);
    assert!(!Tile::full(1, 5).expect("full tile").is_partial());
    assert_eq!(partial.entry_bundle(), Some(bundle(5, 17)));
    assert_eq!(bundle(5, 17).tile(), partial);
    assert_eq!(tile(1, 5, 17).entry_bundle(), None);
    assert!(!EntryBundle::full(3).is_partial());
}

/// Indices around every power of 1000 that fits, where the number of path elements changes.
fn interesting_indices() -> Vec<u64> {
    let mut indices = vec![0, 1, 7, 42, 255, 256, 1_234_067, u64::MAX - 1, u64::MAX];
    let mut power: u64 = 1000;
    loop {
        indices.extend([power - 1, power, power + 1, power * 7 + 13]);
        match power.checked_mul(1000) {
            Some(next) if next.checked_mul(7).is_some() => power = next,
            _ => break,
        }
    }
    indices
}

#[test]
fn paths_agree_with_tlog_tiles() {
    let mut checked = 0;
    for level in 0..=63 {
        for index in interesting_indices() {
            for width in [1, 17, 255, 256] {
                let ours = tile(level, index, width);
                let theirs = TheirTile::new(8, level, index, u32::from(width), false);
                let their_path = theirs.path();
                assert_eq!(ours.path().replacen("tile/", "tile/8/", 1), their_path);
                let parsed = TheirTile::from_path(&their_path).expect("they parse our path");
                assert_eq!(parsed, theirs);
                let back = Tile::parse(&their_path.replacen("tile/8/", "tile/", 1));
                assert_eq!(back.ok(), Some(ours));
                if level == 0 {
                    let mut data = theirs;
                    data.set_is_data();
                    let ours = bundle(index, width);
                    assert_eq!(
                        ours.path().replacen("tile/entries/", "tile/8/data/", 1),
                        data.path()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 8_000, "{checked} paths");
}

// Which tiles a tree has.

/// Their tiles as our coordinates.
fn as_ours(theirs: &[TheirTile]) -> Vec<Tile> {
    theirs
        .iter()
        .map(|tile| {
            assert_eq!(tile.height(), 8);
            let width = u16::try_from(tile.width()).expect("at most 256");
            Tile::new(tile.level(), tile.level_index(), width).expect("their tile is valid")
        })
        .collect()
}

fn all_tiles(levels: &[LevelTiles]) -> Vec<Tile> {
    levels.iter().flat_map(|level| level.tiles()).collect()
}

#[test]
fn spec_examples_of_tiles_for_size() {
    // "A tree of size 70,000 will be represented by 273 full level 0 tiles, one partial level 0
    // tile of width 112, one full level 1 tile, one partial level 1 tile of width 17, and one
    // partial level 2 tile of width 1."
    let summary = |size| {
        tiles_for_size(size)
            .iter()
            .map(|level| {
                (
                    level.level(),
                    level.hashes(),
                    level.full_tiles(),
                    level.partial().map(|tile| (tile.index(), tile.width())),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        summary(70_000),
        [
            (0, 70_000, 273, Some((273, 112))),
            (1, 273, 1, Some((1, 17))),
            (2, 1, 0, Some((0, 1))),
        ]
    );
    // "A tree of size 256 will be represented by a full level 0 tile and a partial level 1 tile
    // of width 1."
    assert_eq!(summary(256), [(0, 256, 1, None), (1, 1, 0, Some((0, 1)))]);
    assert_eq!(summary(0), []);
    assert_eq!(summary(1), [(0, 1, 0, Some((0, 1)))]);
    let largest = tiles_for_size(u64::MAX);
    assert_eq!(largest.len(), 8);
    assert_eq!(largest.last().map(|level| level.hashes()), Some(255));
}

#[test]
fn tiles_for_every_size_agree_with_tlog_tiles() {
    let mut previous = Vec::new();
    for size in 1..=LARGEST {
        let levels = tiles_for_size(size);
        let ours = all_tiles(&levels);
        assert_eq!(
            ours,
            as_ours(&TheirTile::new_tiles(8, 0, size)),
            "tiles of {size}"
        );
        let published: Vec<Tile> = tiles_to_publish(size - 1, size)
            .expect("in order")
            .collect();
        assert_eq!(
            published,
            as_ours(&TheirTile::new_tiles(8, size - 1, size)),
            "tiles from {} to {size}",
            size - 1
        );
        // What is published is exactly what changed since the size before. Tiles are listed in
        // their order (level, index, width), so the earlier list can be searched.
        assert!(ours.is_sorted());
        let changed: Vec<Tile> = ours
            .iter()
            .copied()
            .filter(|tile| previous.binary_search(tile).is_err())
            .collect();
        assert_eq!(published, changed, "changed from {} to {size}", size - 1);
        // Each level holds as many hashes as complete subtrees of 256^level leaves.
        for level in &levels {
            let widths: u64 = level.tiles().map(|tile| u64::from(tile.width())).sum();
            assert_eq!(widths, size >> (8 * u32::from(level.level())));
        }
        previous = ours;
    }
}

#[test]
fn tiles_to_publish_agree_with_tlog_tiles_for_large_jumps() {
    let mut draw = Draw(0x7115_5000);
    for _ in 0..2_000 {
        // tlog_tiles shifts by 8·level in u8 arithmetic, so it stays below 2^56 leaves.
        let new_size = draw.between(0, (1 << 56) - 1) >> draw.between(0, 55);
        let old_size = new_size - draw.between(0, new_size.min(1 << 20));
        let ours: Vec<Tile> = tiles_to_publish(old_size, new_size)
            .expect("in order")
            .collect();
        assert_eq!(ours, as_ours(&TheirTile::new_tiles(8, old_size, new_size)));
    }
    assert!(matches!(
        tiles_to_publish(2, 1).map(|tiles| tiles.count()),
        Err(Error::SizesOutOfOrder {
            old_size: 2,
            new_size: 1
        })
    ));
    assert_eq!(
        tiles_to_publish(5, 5).map(|tiles| tiles.count()).ok(),
        Some(0)
    );
}

// Tile bytes.

/// The store of `tlog_tiles`: hashes by stored hash index.
struct TheirStore(Vec<TheirHash>);

impl TheirHashReader for TheirStore {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<TheirHash>, TheirError> {
        indexes
            .iter()
            .map(|&index| {
                let index = usize::try_from(index).map_err(|_| TheirError::IndexesNotInTree)?;
                self.0
                    .get(index)
                    .copied()
                    .ok_or(TheirError::IndexesNotInTree)
            })
            .collect()
    }
}

/// Both trees over the same [`LARGEST`] leaves.
fn both_trees() -> (MemoryTree, TheirStore) {
    let mut ours = MemoryTree::new();
    let mut theirs = TheirStore(Vec::new());
    for index in 0..LARGEST {
        let data = leaf_data(index);
        ours.append(&data);
        let hashes = tlog_tiles::stored_hashes(index, &data, &theirs).expect("their append");
        theirs.0.extend(hashes);
    }
    (ours, theirs)
}

fn their_tile_bytes(store: &TheirStore, tile: Tile) -> Vec<u8> {
    TheirTile::new(
        8,
        tile.level(),
        tile.index(),
        u32::from(tile.width()),
        false,
    )
    .read_data(store)
    .expect("their tile")
}

/// Sizes worth a closer look: the first few tiles' worth, every tile edge up to the largest, the
/// level 1 edges, and drawn ones.
fn sampled_sizes(draw: &mut Draw, drawn: usize) -> Vec<u64> {
    let mut sizes: Vec<u64> = (1..=40).collect();
    for edge in [
        255, 256, 257, 511, 512, 513, 65_535, 65_536, 65_537, 69_999, LARGEST,
    ] {
        sizes.push(edge);
    }
    sizes.extend((0..drawn).map(|_| draw.between(1, LARGEST)));
    sizes
}

#[test]
fn tile_bytes_agree_with_tlog_tiles() {
    let (ours, theirs) = both_trees();
    // Every tile of the largest tree, which includes every full tile of every smaller one.
    for tile in all_tiles(&tiles_for_size(LARGEST)) {
        let bytes = tile_bytes(&ours, tile).expect("our tile");
        assert_eq!(bytes.len(), tile.byte_len());
        assert_eq!(bytes, their_tile_bytes(&theirs, tile), "{tile}");
    }
    // The partial tiles of every size would be ~1.7 GB of hashes; these are drawn.
    let mut draw = Draw(0x000B_17E5);
    let mut partial = 0;
    for size in sampled_sizes(&mut draw, 1_500) {
        for tile in tiles_for_size(size)
            .iter()
            .filter_map(|level| level.partial())
        {
            let bytes = tile_bytes(&ours, tile).expect("our partial tile");
            assert_eq!(bytes, their_tile_bytes(&theirs, tile), "{tile} of {size}");
            partial += 1;
        }
    }
    assert!(partial > 3_000, "{partial} partial tiles");
}

#[test]
fn level_0_tiles_hash_the_entry_bundles() {
    let mut tree = MemoryTree::new();
    let entries: Vec<Vec<u8>> = (0..600).map(leaf_data).collect();
    for entry in &entries {
        tree.append(entry);
    }
    for level_tile in all_tiles(&tiles_for_size(600))
        .into_iter()
        .filter(|tile| tile.level() == 0)
    {
        let bundle = level_tile
            .entry_bundle()
            .expect("a level 0 tile has a bundle");
        let first = usize::try_from(bundle.index()).expect("small") * 256;
        let slice = &entries[first..first + usize::from(bundle.width())];
        let bytes = encode_bundle(slice).expect("short entries");
        let decoded = bundle.decode(&bytes).expect("as wide as the tile");
        let hashes: Vec<Hash> = decoded.iter().map(|entry| leaf_hash(entry)).collect();
        assert_eq!(
            hashes.concat(),
            tile_bytes(&tree, level_tile).expect("tile")
        );
    }
}

#[test]
fn tile_bytes_are_refused_beyond_the_tree() {
    let mut tree = MemoryTree::new();
    for index in 0..300 {
        tree.append(&leaf_data(index));
    }
    let beyond = |level, index| Err::<(), _>((level, index));
    let cases = [
        // Level 7 lists subtrees of 2^56 leaves, of which a tree below 2^64 has at most 255.
        (tile(7, 0, 255), Ok(())),
        (tile(7, 0, 256), beyond(7, 0)),
        (tile(8, 0, 1), beyond(8, 0)),
        (tile(63, 0, 1), beyond(63, 0)),
        (tile(0, u64::MAX / 256, 255), Ok(())),
        (tile(0, u64::MAX / 256, 256), beyond(0, u64::MAX / 256)),
        (
            tile(0, u64::MAX / 256 + 1, 1),
            beyond(0, u64::MAX / 256 + 1),
        ),
    ];
    for (tile, expected) in cases {
        match (tile.subtrees().map(|subtrees| subtrees.count()), expected) {
            (Ok(count), Ok(())) => assert_eq!(count, usize::from(tile.width())),
            (Err(Error::TileBeyondLargestTree { level, index }), Err(expected)) => {
                assert_eq!((level, index), expected);
                assert!(matches!(
                    tile_bytes(&tree, tile),
                    Err(Error::TileBeyondLargestTree { .. })
                ));
            }
            (got, expected) => panic!("{tile:?}: got {got:?}, expected {expected:?}"),
        }
    }
    // Tiles the stored tree does not have yet, or not at that width.
    assert!(tile_bytes(&tree, tile(0, 1, 44)).is_ok());
    assert!(matches!(
        tile_bytes(&tree, tile(0, 1, 45)),
        Err(Error::MissingHash {
            level: 0,
            index: 300
        })
    ));
    assert!(matches!(
        tile_bytes(&tree, tile(1, 0, 2)),
        Err(Error::MissingHash { level: 8, index: 1 })
    ));
}

// Reading tiles back.

/// Computes with `reader`, loading the tiles it says it misses from `serve`, and returns the
/// result and the number of fetch rounds it took.
fn with_tiles<T>(
    reader: &mut TileHashReader,
    serve: &impl Fn(Tile) -> Vec<u8>,
    compute: impl Fn(&TileHashReader) -> Result<T, Error>,
) -> (T, usize) {
    let mut rounds = 0;
    loop {
        match compute(reader) {
            Ok(value) => return (value, rounds),
            Err(Error::MissingTiles { tiles }) => {
                assert!(!tiles.is_empty());
                for tile in tiles {
                    assert!(
                        u64::from(tile.width())
                            <= (reader.tree_size() >> (8 * u32::from(tile.level()))),
                        "{tile} is wider than the tree"
                    );
                    reader
                        .insert(tile, serve(tile))
                        .expect("served tiles are consistent");
                }
                rounds += 1;
                assert!(rounds <= 1, "all missing tiles are named at once");
            }
            Err(error) => panic!("{error}"),
        }
    }
}

#[test]
fn a_tile_hash_reader_gives_the_roots_and_proofs_of_the_tree() {
    let (ours, theirs) = both_trees();
    // The tiles come from tlog_tiles, so the reader is checked against an independent writer.
    let serve = |tile: Tile| their_tile_bytes(&theirs, tile);
    let mut draw = Draw(0x0EAD_E125);
    let mut computations = 0;
    for size in sampled_sizes(&mut draw, 150) {
        let mut reader = TileHashReader::new(size);
        let (root, rounds) = with_tiles(&mut reader, &serve, |reader| merkle::root(reader, size));
        assert_eq!(root, ours.root(size).expect("root"), "root of {size}");
        assert_eq!(rounds, 1, "the root of {size} needs tiles");
        for _ in 0..4 {
            let index = draw.between(0, size - 1);
            let (proof, _) = with_tiles(&mut reader, &serve, |reader| {
                merkle::inclusion_proof(reader, index, size)
            });
            assert_eq!(proof, ours.inclusion_proof(index, size).expect("proof"));
            merkle::verify_inclusion(&leaf_hash(&leaf_data(index)), index, size, &proof, &root)
                .expect("verifies");
            let old_size = draw.between(0, size);
            let (proof, _) = with_tiles(&mut reader, &serve, |reader| {
                merkle::consistency_proof(reader, old_size, size)
            });
            assert_eq!(
                proof,
                ours.consistency_proof(old_size, size).expect("proof")
            );
            computations += 2;
        }
    }
    assert!(computations > 1_000, "{computations} proofs");
}

#[test]
fn a_tile_hash_reader_names_missing_tiles_and_refuses_bad_ones() {
    let mut tree = MemoryTree::new();
    for index in 0..70_000 {
        tree.append(&leaf_data(index));
    }
    let mut reader = TileHashReader::new(70_000);
    // The root of 70,000 = 65,536 + 4,096 + 256 + 64 + 32 + 16 leaves: one level 16 subtree (level
    // 2 tile), levels 12 and 8 (level 1 tile 1, 17 wide) and levels 6, 5, 4 (level 0 tile 273, 112 wide).
    let Err(Error::MissingTiles { tiles }) = merkle::root(&reader, 70_000) else {
        panic!("nothing is loaded");
    };
    assert_eq!(tiles, [tile(0, 273, 112), tile(1, 1, 17), tile(2, 0, 1)]);
    assert!(matches!(
        merkle::HashReader::read_hashes(
            &reader,
            &[Subtree {
                level: 0,
                index: 70_000
            }]
        ),
        Err(Error::MissingHash {
            level: 0,
            index: 70_000
        })
    ));
    assert!(matches!(
        merkle::HashReader::read_hashes(
            &reader,
            &[Subtree {
                level: 17,
                index: 0
            }]
        ),
        Err(Error::MissingHash {
            level: 17,
            index: 0
        })
    ));

    let partial = tile_bytes(&tree, tile(0, 273, 112)).expect("partial tile");
    assert!(matches!(
        reader.insert(tile(0, 273, 112), partial[..partial.len() - 1].to_vec()),
        Err(Error::TileLengthMismatch {
            expected: 3584,
            actual: 3583
        })
    ));
    reader
        .insert(tile(0, 273, 112), partial.clone())
        .expect("fits");
    // A narrower, consistent tile is fine and changes nothing; an inconsistent one is refused.
    reader
        .insert(tile(0, 273, 3), partial[..96].to_vec())
        .expect("a consistent prefix");
    let mut forged = partial[..96].to_vec();
    forged[40] ^= 1;
    assert!(matches!(
        reader.insert(tile(0, 273, 3), forged),
        Err(Error::InconsistentTiles {
            level: 0,
            index: 273
        })
    ));
    // A subtree whose hashes are all in the loaded tile reads without the others.
    let leaf = merkle::HashReader::read_hashes(
        &reader,
        &[Subtree {
            level: 4,
            index: 273 * 16 + 6,
        }],
    );
    assert_eq!(
        leaf.ok(),
        merkle::HashReader::read_hashes(
            &tree,
            &[Subtree {
                level: 4,
                index: 273 * 16 + 6
            }]
        )
        .ok()
    );
}

/// Serves our tiles to `tlog_tiles`'s authenticating tile reader, noting the tiles it fetches.
struct OurTiles<'a> {
    tree: &'a MemoryTree,
    fetched: RefCell<usize>,
}

impl TileReader for OurTiles<'_> {
    fn height(&self) -> u8 {
        8
    }

    fn read_tiles(&self, tiles: &[TheirTile]) -> Result<Vec<Vec<u8>>, TheirError> {
        *self.fetched.borrow_mut() += tiles.len();
        as_ours(tiles)
            .into_iter()
            .map(|tile| tile_bytes(self.tree, tile).map_err(|_| TheirError::InvalidTile))
            .collect()
    }

    fn save_tiles(&self, _tiles: &[TheirTile], _data: &[Vec<u8>]) {}
}

fn theirs_of(hashes: &[Hash]) -> Vec<TheirHash> {
    hashes.iter().map(|hash| TheirHash(*hash)).collect()
}

#[test]
fn tlog_tiles_authenticates_our_tiles_against_our_roots() {
    let mut tree = MemoryTree::new();
    for index in 0..LARGEST {
        tree.append(&leaf_data(index));
    }
    let source = OurTiles {
        tree: &tree,
        fetched: RefCell::new(0),
    };
    let mut draw = Draw(0x0A17_4E27);
    let sizes = [1, 2, 255, 256, 257, 65_535, 65_536, 65_537, LARGEST]
        .into_iter()
        .chain((0..40).map(|_| draw.between(1, LARGEST)))
        .collect::<Vec<_>>();
    for size in sizes {
        let root = tree.root(size).expect("root");
        // Its reader checks every tile it reads against the tree hash before answering.
        let reader = TheirTileHashReader::new(size, TheirHash(root), &source);
        let their_root = tlog_tiles::tree_hash(size, &reader).expect("our tiles authenticate");
        assert_eq!(their_root, TheirHash(root));
        for _ in 0..3 {
            let index = draw.between(0, size - 1);
            let proof = tlog_tiles::prove_record(size, index, &reader).expect("their proof");
            let ours = tree.inclusion_proof(index, size).expect("our proof");
            assert_eq!(proof, theirs_of(&ours), "inclusion of {index} in {size}");
            tlog_tiles::check_record(
                &theirs_of(&ours),
                size,
                TheirHash(root),
                index,
                TheirHash(leaf_hash(&leaf_data(index))),
            )
            .expect("they verify our proof");
            let old_size = draw.between(1, size);
            let proof = tlog_tiles::prove_tree(size, old_size, &reader).expect("their proof");
            let ours = tree.consistency_proof(old_size, size).expect("our proof");
            assert_eq!(
                proof,
                theirs_of(&ours),
                "consistency of {old_size} with {size}"
            );
        }
    }
    assert!(*source.fetched.borrow() > 0);
}

// Entry bundles.

fn check_round_trip(entries: &[Vec<u8>], expected_len: usize) {
    let bytes = encode_bundle(entries).expect("encodable");
    assert_eq!(bytes.len(), expected_len);
    assert_eq!(decode_bundle(&bytes).expect("decodable"), entries);
    if let Ok(width) = u16::try_from(entries.len())
        && let Ok(bundle) = EntryBundle::new(0, width)
    {
        assert_eq!(bundle.decode(&bytes).expect("as wide"), entries);
    }
}

#[test]
fn bundles_round_trip() {
    assert_eq!(
        encode_bundle([&b"ab"[..], b"", b"\xff"]).ok(),
        Some(vec![0, 2, b'a', b'b', 0, 0, 0, 1, 0xff])
    );
    let cases: [(Vec<Vec<u8>>, usize); 6] = [
        (vec![], 0),
        (vec![vec![]], 2),
        (vec![b"x".to_vec()], 3),
        (vec![vec![7; 65_535]], 65_537),
        (
            (0..256).map(leaf_data).collect(),
            (0..256).map(|i| 2 + leaf_data(i).len()).sum(),
        ),
        (vec![vec![]; 256], 512),
    ];
    for (entries, expected_len) in cases {
        check_round_trip(&entries, expected_len);
    }
}

#[test]
fn bad_bundles_are_rejected() {
    assert!(matches!(
        encode_bundle([vec![0; 65_536]]),
        Err(Error::EntryTooLong { length: 65_536 })
    ));
    assert!(matches!(
        encode_bundle(vec![b"".to_vec(); 257]),
        Err(Error::TooManyEntries { entries: 257 })
    ));

    let mut after_256 = vec![0; 512];
    after_256.extend([0, 0]);
    let cases: [(&[u8], &str); 7] = [
        (&[0], "BundleTruncatedLength { offset: 0 }"),
        (&[0, 0, 1], "BundleTruncatedLength { offset: 2 }"),
        (
            &[0, 1],
            "BundleEntryOverrun { offset: 0, declared: 1, available: 0 }",
        ),
        (
            &[0, 3, b'a', b'b'],
            "BundleEntryOverrun { offset: 0, declared: 3, available: 2 }",
        ),
        (
            &[0, 1, b'a', 1, 0, 0],
            "BundleEntryOverrun { offset: 3, declared: 256, available: 1 }",
        ),
        (
            &[0xff, 0xff],
            "BundleEntryOverrun { offset: 0, declared: 65535, available: 0 }",
        ),
        (&after_256, "BundleTrailingBytes { offset: 512, count: 2 }"),
    ];
    for (bytes, expected) in cases {
        let error = decode_bundle(bytes).expect_err("malformed");
        assert_eq!(format!("{error:?}"), expected, "{bytes:?}");
    }

    // Held to its width, a bundle has neither fewer entries nor anything after them.
    let two = encode_bundle([b"a", b"b"]).expect("encodable");
    let width_cases: [(u16, &str); 2] = [
        (3, "BundleTooShort { expected: 3, actual: 2 }"),
        (1, "BundleTrailingBytes { offset: 3, count: 3 }"),
    ];
    for (width, expected) in width_cases {
        let error = bundle(0, width).decode(&two).expect_err("wrong width");
        assert_eq!(format!("{error:?}"), expected, "width {width}");
    }
    assert!(matches!(
        bundle(0, 1).decode(&[]),
        Err(Error::BundleTooShort {
            expected: 1,
            actual: 0
        })
    ));
}
