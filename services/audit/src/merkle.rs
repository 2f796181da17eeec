//! The Merkle tree of the audit log, as RFC 9162 §2.1 (and RFC 6962 §2.1 before it) defines it.
//!
//! Leaves are hashed as `SHA-256(0x00 || data)` and interior nodes as `SHA-256(0x01 || left ||
//! right)`; the tree of `n` leaves splits at the largest power of two smaller than `n`. The empty
//! tree's root is `SHA-256("")`.
//!
//! Storage is seen the way C2SP tlog-tiles sees it: the hash at level `L`, index `N` is the hash of
//! the complete subtree over the leaves `[N·2^L, (N+1)·2^L)`. Such a hash never changes once the
//! tree has grown past it, so it can be written once and read forever. A [`HashReader`] hands these
//! hashes out; [`root`], [`inclusion_proof`] and [`consistency_proof`] work out which O(log n) of
//! them they need, read them in one batch and combine them, never going back to the leaves.
//! [`MemoryTree`] keeps all of them in memory.
//!
//! Verification ([`verify_inclusion`], [`verify_consistency`]) follows RFC 9162 §2.1.3.2 and
//! §2.1.4.2 and needs nothing but the proof, the sizes and the roots.

mod append;
mod memory;
mod verify;

pub use append::{append_hashes, frontier};
pub use memory::MemoryTree;
pub use verify::{verify_consistency, verify_inclusion};

use ring::digest::{Context, SHA256};

use crate::Error;

/// The length of a SHA-256 hash in bytes.
pub const HASH_LEN: usize = 32;

/// A SHA-256 hash: of a leaf, of an interior node or of a whole tree.
pub type Hash = [u8; HASH_LEN];

/// The root of the empty tree, `SHA-256("")` (RFC 9162 §2.1.1).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The hash of a leaf: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256(&[&[0x00], data])
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut context = Context::new(&SHA256);
    for part in parts {
        context.update(part);
    }
    let mut hash = [0; HASH_LEN];
    hash.copy_from_slice(context.finish().as_ref());
    hash
}

/// A complete subtree, named as in C2SP tlog-tiles: it covers the `2^level` leaves
/// `[index·2^level, (index+1)·2^level)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subtree {
    /// Its height: level 0 holds the leaf hashes.
    pub level: u8,
    /// Its position among the subtrees of its level, from the left.
    pub index: u64,
}

/// Storage of complete-subtree hashes (the "stored hashes" of a tlog).
pub trait HashReader {
    /// The hashes of the given complete subtrees, in the order asked for.
    ///
    /// Returns [`Error::MissingHash`] for a subtree that is not (yet) complete in the stored tree,
    /// and [`Error::Storage`] when the storage fails.
    fn read_hashes(&self, subtrees: &[Subtree]) -> Result<Vec<Hash>, Error>;
}

/// The root of the first `tree_size` leaves (RFC 9162 §2.1.1), from at most 64 stored hashes.
pub fn root<R: HashReader + ?Sized>(reader: &R, tree_size: u64) -> Result<Hash, Error> {
    if tree_size == 0 {
        return Ok(EMPTY_ROOT);
    }
    let mut plan = Plan::default();
    plan.push_range(0, tree_size);
    let mut hashes = plan.read(reader)?;
    hashes.pop().ok_or(Error::ReaderMiscounted {
        requested: 1,
        returned: 0,
    })
}

/// The inclusion proof of leaf `index` in the tree of the first `tree_size` leaves (RFC 9162
/// §2.1.3.1), ordered from the leaf up to the root.
pub fn inclusion_proof<R: HashReader + ?Sized>(
    reader: &R,
    index: u64,
    tree_size: u64,
) -> Result<Vec<Hash>, Error> {
    if index >= tree_size {
        return Err(Error::IndexOutOfRange { index, tree_size });
    }
    // PATH(index, D[0:tree_size]), unrolled: walk down from the root, noting the sibling of each
    // node on the way to the leaf. Only the first right-hand sibling can be an incomplete subtree.
    let mut siblings = Vec::new();
    let (mut low, mut high) = (0, tree_size);
    while high - low > 1 {
        let split = low + largest_power_of_two_below(high - low);
        if index < split {
            siblings.push((split, high));
            high = split;
        } else {
            siblings.push((low, split));
            low = split;
        }
    }
    Plan::for_ranges(siblings.into_iter().rev()).read(reader)
}

/// The consistency proof from the tree of the first `old_size` leaves to the tree of the first
/// `new_size` leaves (RFC 9162 §2.1.4.1).
///
/// The proof is empty when `old_size` is 0 or equal to `new_size`: the empty tree is a prefix of
/// every tree, and a tree of one size has one root.
pub fn consistency_proof<R: HashReader + ?Sized>(
    reader: &R,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, Error> {
    if old_size > new_size {
        return Err(Error::SizesOutOfOrder { old_size, new_size });
    }
    if old_size == 0 {
        return Ok(Vec::new());
    }
    // SUBPROOF(old_size, D[0:new_size], true), unrolled: the nodes are collected from the root
    // down, so the proof is their reverse.
    let mut nodes = Vec::new();
    let (mut low, mut high) = (0, new_size);
    let mut old_root_is_known = true;
    while old_size != high {
        let split = low + largest_power_of_two_below(high - low);
        if old_size <= split {
            nodes.push((split, high));
            high = split;
        } else {
            nodes.push((low, split));
            low = split;
            old_root_is_known = false;
        }
    }
    if !old_root_is_known {
        nodes.push((low, high));
    }
    Plan::for_ranges(nodes.into_iter().rev()).read(reader)
}

/// The largest power of two smaller than `width`, for `width >= 2`.
fn largest_power_of_two_below(width: u64) -> u64 {
    1 << (u64::BITS - 1 - (width - 1).leading_zeros())
}

/// The hashes a computation needs: each output hash is the Merkle tree hash of a range of leaves
/// `[low, high)` that is a node of the RFC 9162 tree, made of a run of complete subtrees.
#[derive(Default)]
struct Plan {
    subtrees: Vec<Subtree>,
    /// For each output hash, how many of `subtrees` (in order) it is made of.
    runs: Vec<usize>,
}

impl Plan {
    fn for_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut plan = Plan::default();
        for (low, high) in ranges {
            plan.push_range(low, high);
        }
        plan
    }

    /// Adds the range `[low, high)`, split into complete subtrees from the left, largest first.
    /// That split is the one RFC 9162 makes, because a node's range starts at a multiple of the
    /// smallest power of two not below its width.
    fn push_range(&mut self, low: u64, high: u64) {
        let before = self.subtrees.len();
        let mut start = low;
        while start < high {
            let width_level = u64::BITS - 1 - (high - start).leading_zeros();
            let level = width_level.min(start.trailing_zeros());
            self.subtrees.push(Subtree {
                level: level as u8,
                index: start >> level,
            });
            start += 1 << level;
        }
        self.runs.push(self.subtrees.len() - before);
    }

    /// Reads all subtree hashes in one batch and combines each run into its range's hash.
    fn read<R: HashReader + ?Sized>(&self, reader: &R) -> Result<Vec<Hash>, Error> {
        let stored = if self.subtrees.is_empty() {
            Vec::new()
        } else {
            reader.read_hashes(&self.subtrees)?
        };
        if stored.len() != self.subtrees.len() {
            return Err(Error::ReaderMiscounted {
                requested: self.subtrees.len(),
                returned: stored.len(),
            });
        }
        let mut rest = stored.as_slice();
        let mut hashes = Vec::with_capacity(self.runs.len());
        for &run in &self.runs {
            let (this, next) = rest.split_at(run);
            rest = next;
            let mut parts = this.iter().rev();
            if let Some(last) = parts.next() {
                hashes.push(parts.fold(*last, |right, left| node_hash(left, &right)));
            }
        }
        Ok(hashes)
    }
}

#[cfg(test)]
mod tests;
