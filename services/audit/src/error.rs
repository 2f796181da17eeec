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
    /// The storage behind a [`crate::merkle::HashReader`] failed.
    #[error("the hash storage failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}
