//! An in-memory Merkle tree that keeps the hash of every complete subtree.

use super::{Hash, HashReader, Subtree, leaf_hash, node_hash};
use crate::Error;

/// An append-only Merkle tree in memory.
///
/// It stores the hash of every complete subtree, level by level, like a tlog's stored hashes:
/// about two hashes per leaf. Roots and proofs for any size up to [`MemoryTree::size`] are
/// computed from O(log n) of them.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    /// `levels[level][index]` is the hash of [`Subtree`] `{ level, index }`.
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// Appends a leaf with the given data and returns its index.
    pub fn append(&mut self, data: &[u8]) -> u64 {
        self.append_leaf_hash(leaf_hash(data))
    }

    /// Appends a leaf by its hash ([`leaf_hash`] of its data) and returns its index.
    pub fn append_leaf_hash(&mut self, hash: Hash) -> u64 {
        let index = self.size();
        let mut level = 0;
        let mut carry = hash;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let Some(hashes) = self.levels.get_mut(level) else {
                break;
            };
            hashes.push(carry);
            // A level with an even number of hashes has just completed a subtree one level up.
            match hashes.last_chunk::<2>() {
                Some([left, right]) if hashes.len() % 2 == 0 => carry = node_hash(left, right),
                _ => break,
            }
            level += 1;
        }
        index
    }

    /// The root of the first `tree_size` leaves.
    pub fn root(&self, tree_size: u64) -> Result<Hash, Error> {
        self.check_size(tree_size)?;
        super::root(self, tree_size)
    }

    /// The inclusion proof of leaf `index` in the tree of the first `tree_size` leaves.
    pub fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, Error> {
        self.check_size(tree_size)?;
        super::inclusion_proof(self, index, tree_size)
    }

    /// The consistency proof from the first `old_size` leaves to the first `new_size` leaves.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, Error> {
        self.check_size(new_size)?;
        super::consistency_proof(self, old_size, new_size)
    }

    fn check_size(&self, tree_size: u64) -> Result<(), Error> {
        let available = self.size();
        if tree_size > available {
            return Err(Error::TreeSizeOutOfRange {
                tree_size,
                available,
            });
        }
        Ok(())
    }
}

impl HashReader for MemoryTree {
    fn read_hashes(&self, subtrees: &[Subtree]) -> Result<Vec<Hash>, Error> {
        subtrees
            .iter()
            .map(|&Subtree { level, index }| {
                usize::try_from(index)
                    .ok()
                    .and_then(|position| self.levels.get(usize::from(level))?.get(position))
                    .copied()
                    .ok_or(Error::MissingHash { level, index })
            })
            .collect()
    }
}
