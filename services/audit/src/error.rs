//! Errors of the audit log: proofs that do not verify, sizes and indices out of range, and hash
//! storage that cannot answer.

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A leaf index is not smaller than the tree size it is proven against.
    #[error("leaf index {index} is not in a tree of {tree_size} leaves")]
    IndexOutOfRange {
        /// The leaf index asked for.
        index: u64,
        /// The size of the tree.
        tree_size: u64,
    },
    /// A tree size is larger than the number of leaves the tree holds.
    #[error("a tree of {tree_size} leaves was asked for, but only {available} leaves are stored")]
    TreeSizeOutOfRange {
        /// The tree size asked for.
        tree_size: u64,
        /// The number of leaves stored.
        available: u64,
    },
    /// A consistency proof was asked for or checked from a larger tree to a smaller one.
    #[error("the old tree size {old_size} is larger than the new tree size {new_size}")]
    SizesOutOfOrder {
        /// The size of the older tree.
        old_size: u64,
        /// The size of the newer tree.
        new_size: u64,
    },
    /// A proof has fewer hashes than the sizes and index it is checked against need.
    #[error("the proof has {actual} hashes, but {expected} are needed")]
    ProofTooShort {
        /// The number of hashes a proof for these sizes and index has.
        expected: usize,
        /// The number of hashes the proof has.
        actual: usize,
    },
    /// A proof has more hashes than the sizes and index it is checked against need.
    #[error("the proof has {actual} hashes, but only {expected} are needed")]
    ProofTooLong {
        /// The number of hashes a proof for these sizes and index has.
        expected: usize,
        /// The number of hashes the proof has.
        actual: usize,
    },
    /// An inclusion proof, with its leaf hash, does not lead to the given root.
    #[error("the inclusion proof does not lead to the given root")]
    RootMismatch,
    /// A consistency proof does not lead to the given root of the older tree.
    #[error("the consistency proof does not lead to the given root of the older tree")]
    OldRootMismatch,
    /// A consistency proof does not lead to the given root of the newer tree.
    #[error("the consistency proof does not lead to the given root of the newer tree")]
    NewRootMismatch,
    /// The hash of a complete subtree that a computation needs is not stored.
    #[error("the hash of the subtree at level {level}, index {index} is not stored")]
    MissingHash {
        /// The subtree's level: it covers `2^level` leaves.
        level: u8,
        /// The subtree's index among the subtrees of its level.
        index: u64,
    },
    /// A [`crate::merkle::HashReader`] answered with a different number of hashes than asked for.
    #[error("the hash reader returned {returned} hashes for {requested} subtrees")]
    ReaderMiscounted {
        /// The number of subtree hashes asked for.
        requested: usize,
        /// The number of hashes returned.
        returned: usize,
    },
    // Tiles.
    /// A tile level above 63, the largest C2SP tlog-tiles allows.
    #[error("tile level {level} is above 63")]
    TileLevelOutOfRange {
        /// The level asked for.
        level: u8,
    },
    /// A tile or entry bundle width outside `1..=256`.
    #[error("tile width {width} is not between 1 and 256")]
    TileWidthOutOfRange {
        /// The width asked for.
        width: u16,
    },
    /// A path that is not a C2SP tlog-tiles tile or entry bundle path.
    #[error("{path:?} is not a tile path: {reason}")]
    BadTilePath {
        /// The path, as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A tile whose hashes would cover leaves past the largest possible tree (`2^64 - 1` leaves).
    #[error("the tile at level {level}, index {index} lies beyond the largest possible tree")]
    TileBeyondLargestTree {
        /// The tile's level.
        level: u8,
        /// The tile's index within its level.
        index: u64,
    },
    /// Tile bytes that are not 32 bytes for each hash of the tile's width.
    #[error("a tile of this width has {expected} bytes, but {actual} were given")]
    TileLengthMismatch {
        /// The number of bytes the tile's width calls for.
        expected: usize,
        /// The number of bytes given.
        actual: usize,
    },
    /// Two tiles at the same coordinates whose common hashes differ.
    #[error("two tiles at level {level}, index {index} disagree")]
    InconsistentTiles {
        /// The tiles' level.
        level: u8,
        /// The tiles' index within their level.
        index: u64,
    },
    /// Hashes were asked of a [`crate::tiles::TileHashReader`] that lacks the tiles they come from.
    #[error(
        "{} tiles are needed but not loaded, starting with {}",
        tiles.len(),
        tiles.first().map_or_else(String::new, |tile| tile.path())
    )]
    MissingTiles {
        /// Every tile the request needs that is not loaded, each as wide as the tree has it.
        tiles: Vec<crate::tiles::Tile>,
    },
    /// A log entry too long for the 16-bit length prefix of an entry bundle.
    #[error("an entry of {length} bytes is longer than an entry bundle allows (65535)")]
    EntryTooLong {
        /// The entry's length in bytes.
        length: usize,
    },
    /// More entries than one entry bundle holds (256).
    #[error("{entries} entries do not fit in one entry bundle (256)")]
    TooManyEntries {
        /// The number of entries given.
        entries: usize,
    },
    /// An entry bundle that ends inside an entry's 2-byte length prefix.
    #[error("the entry bundle ends inside the length prefix at byte {offset}")]
    BundleTruncatedLength {
        /// Where the length prefix starts.
        offset: usize,
    },
    /// An entry bundle entry whose declared length runs past the end of the bundle.
    #[error("the entry at byte {offset} declares {declared} bytes, but only {available} remain")]
    BundleEntryOverrun {
        /// Where the entry's length prefix starts.
        offset: usize,
        /// The length its prefix declares.
        declared: usize,
        /// The number of bytes after the prefix.
        available: usize,
    },
    /// Bytes after the last entry an entry bundle can hold.
    #[error("{count} bytes follow the last entry of the bundle, at byte {offset}")]
    BundleTrailingBytes {
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
    /// An entry bundle with fewer entries than its width.
    #[error("the entry bundle has {actual} entries, but its width is {expected}")]
    BundleTooShort {
        /// The bundle's width.
        expected: u16,
        /// The number of entries it has.
        actual: usize,
    },
    // Signed notes, checkpoints and cosignatures.
    /// A key name that is empty or holds a Unicode space or a plus sign (C2SP signed-note,
    /// "Format").
    #[error("{name:?} is not a valid key name: it must be non-empty, without spaces or '+'")]
    InvalidKeyName {
        /// The name, as given.
        name: String,
    },
    /// ring refused to make an Ed25519 key pair from a seed.
    #[error("the Ed25519 seed was rejected")]
    KeyRejected,
    /// A verifier key that is not `<name>+<8 lowercase hex digits>+<base64(type || key)>` with a
    /// 32-byte Ed25519 key (C2SP signed-note, "Verifier keys").
    #[error("malformed verifier key: {reason}")]
    MalformedVerifierKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A verifier key of another signature type than the one asked for.
    #[error("the verifier key has signature type {found:#04x}, but {expected:#04x} is needed")]
    UnexpectedSignatureType {
        /// The signature type asked for.
        expected: u8,
        /// The signature type of the key.
        found: u8,
    },
    /// A verifier key whose key ID is not the one its name, type and public key give.
    #[error(
        "the verifier key of {name} states key ID {stated:08x}, but its key gives {computed:08x}"
    )]
    KeyIdMismatch {
        /// The key name.
        name: String,
        /// The key ID written in the verifier key.
        stated: u32,
        /// The key ID computed from the name, type and public key.
        computed: u32,
    },
    /// Note text that is empty or does not end in a newline.
    #[error("the note text does not end in a newline")]
    TextNotNewlineTerminated,
    /// A note that holds an ASCII control character other than newline.
    #[error("control character at byte {offset}: notes allow no control character but newline")]
    ControlCharacter {
        /// Where the character is, in bytes from the start of the text checked.
        offset: usize,
    },
    /// A note without a blank line followed by at least one signature line.
    #[error("the note has no blank line followed by signature lines")]
    MissingSignatureBlock,
    /// A signature line that is not `— <key name> <base64(key ID || signature)>` ending in a
    /// newline.
    #[error("malformed signature line {line:?}")]
    MalformedSignatureLine {
        /// The line, without its newline.
        line: String,
    },
    /// A note with more signature lines than this crate reads.
    #[error("the note has more than {limit} signatures")]
    TooManySignatures {
        /// The largest number of signatures read.
        limit: usize,
    },
    /// A note was to be signed by no key at all.
    #[error("a note needs at least one signer")]
    NoSigners,
    /// Two signatures (or signers) with the same key name and key ID.
    #[error("more than one signature by key {name}+{key_id:08x}")]
    DuplicateSignature {
        /// The key name.
        name: String,
        /// The key ID.
        key_id: u32,
    },
    /// A signature by a known key that does not verify.
    #[error("the signature by key {name}+{key_id:08x} does not verify")]
    InvalidSignature {
        /// The key name.
        name: String,
        /// The key ID.
        key_id: u32,
    },
    /// A note that no known key has signed.
    #[error("the note is signed by no known key")]
    NoVerifiedSignature,
    /// Checkpoint text that is not at least three non-empty lines, each ending in a newline
    /// (C2SP tlog-checkpoint, "Note text").
    #[error("malformed checkpoint: {reason}")]
    MalformedCheckpoint {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A checkpoint tree size that is not a decimal `u64` without leading zeros.
    #[error("{line:?} is not a checkpoint tree size")]
    InvalidTreeSize {
        /// The size line, as given.
        line: String,
    },
    /// A checkpoint root hash that is not the standard, padded base64 of 32 bytes.
    #[error("{line:?} is not a base64 SHA-256 root hash")]
    InvalidRootHash {
        /// The root hash line, as given.
        line: String,
    },
    /// A checkpoint of another log than the one expected.
    #[error("the checkpoint is from {found:?}, not from {expected:?}")]
    OriginMismatch {
        /// The origin expected.
        expected: String,
        /// The origin of the checkpoint.
        found: String,
    },
    /// A cosignature timestamp above `2^63 - 1` (C2SP tlog-cosignature, "Format").
    #[error("the cosignature time {time} is above 2^63 - 1")]
    CosignatureTimeOutOfRange {
        /// The time, in seconds since the Unix epoch.
        time: u64,
    },
    /// A cosignature by a known witness that is not an 8-byte timestamp below `2^63` followed
    /// by a 64-byte Ed25519 signature.
    #[error("the cosignature of {witness} is malformed")]
    MalformedCosignature {
        /// The witness's key name.
        witness: String,
    },
    /// A cosignature by a known witness that does not verify.
    #[error("the cosignature of {witness} does not verify")]
    InvalidCosignature {
        /// The witness's key name.
        witness: String,
    },
    /// A checkpoint cosigned by fewer known witnesses than required.
    #[error("{verified} known witnesses cosigned the checkpoint, but {required} are required")]
    NotEnoughCosignatures {
        /// The number of cosignatures required.
        required: usize,
        /// The number of known witnesses whose cosignature verified.
        verified: usize,
    },
    // Records.
    /// An entry is not a record this version writes.
    #[error("not an audit record: {0}")]
    MalformedRecord(String),
    /// A record does not fit an entry of a tile bundle.
    #[error("the record is {len} bytes; an entry holds at most 65,535")]
    RecordTooLarge {
        /// The encoded record's length.
        len: usize,
    },
    // Auditing.
    /// A [`crate::auditor::Source`] could not fetch a resource of a log: a transport failure, not a
    /// resource the log does not serve.
    #[error("could not fetch {path}")]
    Fetch {
        /// The resource's path, relative to the log's base.
        path: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A log does not serve a resource (404) that its checkpoint says it has.
    #[error("{path}: not served (404)")]
    NotServed {
        /// The resource's path, relative to the log's base.
        path: String,
    },
    /// A resource that is not what its path names: a tile of the wrong length, an entry bundle
    /// that does not decode to its width.
    #[error("{path}: {problem}")]
    BadResource {
        /// The resource's path, relative to the log's base.
        path: String,
        /// What is wrong with it.
        problem: Box<Error>,
    },
    /// A checkpoint that is not UTF-8 text.
    #[error("checkpoint: not UTF-8 text")]
    CheckpointNotUtf8,
    /// A checkpoint an auditor does not accept: not signed by the log's key, of another origin,
    /// without the cosignatures required, malformed.
    #[error("checkpoint: {problem}")]
    CheckpointRejected {
        /// Why it is rejected.
        problem: Box<Error>,
    },
    /// A checkpoint of a smaller tree than one an auditor has already verified: the log rolled
    /// back, or replays an old checkpoint.
    #[error("checkpoint size {size} is older than the remembered {remembered} (rollback)")]
    Rollback {
        /// The size of the served checkpoint.
        size: u64,
        /// The size an auditor remembers.
        remembered: u64,
    },
    /// A signed tree that does not extend the tree an auditor has already verified: the log
    /// rewrote its history.
    #[error("the tree of {size} is not an extension of the remembered tree of {remembered} (fork)")]
    Fork {
        /// The size of the served checkpoint.
        size: u64,
        /// The size an auditor remembers.
        remembered: u64,
    },
    /// Tiles that do not hash to the root of the signed checkpoint.
    #[error(
        "{} do not hash to the checkpoint's root",
        if tiles.is_empty() { "no tiles (an empty tree)".to_owned() } else { tiles.join(", ") }
    )]
    TilesRootMismatch {
        /// The paths of the tiles the root was computed from.
        tiles: Vec<String>,
    },
    /// A full tile whose hashes do not hash to its hash in the tile above it, which the
    /// checkpoint's root vouches for.
    #[error("{tile} does not hash to hash {position} of {parent}")]
    TileMismatch {
        /// The tile's path.
        tile: String,
        /// The path of the tile above it.
        parent: String,
        /// The position of its hash in the tile above it.
        position: u16,
    },
    /// A log entry whose leaf hash is not the one its level 0 tile lists.
    #[error("entry {index} does not match its leaf hash in {tile}")]
    EntryMismatch {
        /// The entry's index in the log.
        index: u64,
        /// The path of the level 0 tile.
        tile: String,
    },
    /// A log entry, authentic, that the auditor's own check of its content refused.
    #[error("entry {index}: {reason}")]
    EntryRejected {
        /// The entry's index in the log.
        index: u64,
        /// Why it was refused.
        reason: String,
    },
    /// A saved auditor state that cannot be read.
    #[error("the audit state cannot be read: {reason}")]
    StateUnreadable {
        /// What is wrong with it.
        reason: String,
    },
    /// A saved auditor state of another log, or one that its own checkpoint contradicts.
    #[error("the audit state does not belong to this log: {reason}")]
    StateRejected {
        /// What is wrong with it.
        reason: String,
    },
    /// The storage behind a [`crate::merkle::HashReader`] failed.
    #[error("the hash storage failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}
