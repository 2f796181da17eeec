//! What an append adds to the stored hashes: the leaf hashes and every complete subtree the new
//! leaves complete. A log keeps these (and never changes them), so roots and proofs of any size
//! come from stored hashes alone.

use super::{Hash, HashReader, Subtree, node_hash};
use crate::Error;

/// The complete subtrees of a tree of `size` leaves that later appends can still combine with: one
/// per set bit of `size`, from the largest (leftmost) to the smallest. Folded from the right, their
/// hashes give the tree's root.
pub fn frontier(size: u64) -> Vec<Subtree> {
    (0..64u8)
        .rev()
        .filter(|level| size >> level & 1 == 1)
        .map(|level| Subtree {
            level,
            index: (size >> level) - 1,
        })
        .collect()
}

/// The hashes to store when the leaves with hashes `leaves` are appended to a tree of `old_size`
/// leaves: each new leaf's hash (level 0) and the hash of every subtree the append completes, in
/// the order they complete. Reads the old tree's frontier (at most 64 hashes) in one batch.
pub fn append_hashes<R: HashReader + ?Sized>(
    reader: &R,
    old_size: u64,
    leaves: &[Hash],
) -> Result<Vec<(Subtree, Hash)>, Error> {
    let new_size = u64::try_from(leaves.len())
        .ok()
        .and_then(|added| old_size.checked_add(added))
        .ok_or(Error::TreeSizeOutOfRange {
            tree_size: u64::MAX,
            available: old_size,
        })?;
    let frontier_subtrees = frontier(old_size);
    let frontier_hashes = reader.read_hashes(&frontier_subtrees)?;
    if frontier_hashes.len() != frontier_subtrees.len() {
        return Err(Error::ReaderMiscounted {
            requested: frontier_subtrees.len(),
            returned: frontier_hashes.len(),
        });
    }
    // The right edge of the tree as a stack of complete subtrees, largest first.
    let mut stack: Vec<(Subtree, Hash)> =
        frontier_subtrees.into_iter().zip(frontier_hashes).collect();
    let mut added = Vec::with_capacity(leaves.len() * 2);
    for (index, hash) in (old_size..new_size).zip(leaves) {
        let mut carry = (Subtree { level: 0, index }, *hash);
        added.push(carry);
        // Two neighbours of the same level are siblings when the right one has an odd index.
        while carry.0.index % 2 == 1 {
            let Some((left, left_hash)) = stack.pop() else {
                break;
            };
            let parent = Subtree {
                level: left.level + 1,
                index: left.index / 2,
            };
            carry = (parent, node_hash(&left_hash, &carry.1));
            added.push(carry);
        }
        stack.push(carry);
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{MemoryTree, leaf_hash};

    /// A reader that holds exactly what `append_hashes` produced, starting empty.
    #[derive(Default)]
    struct Stored(std::collections::HashMap<Subtree, Hash>);

    impl HashReader for Stored {
        fn read_hashes(&self, subtrees: &[Subtree]) -> Result<Vec<Hash>, Error> {
            subtrees
                .iter()
                .map(|s| {
                    self.0.get(s).copied().ok_or(Error::MissingHash {
                        level: s.level,
                        index: s.index,
                    })
                })
                .collect()
        }
    }

    #[test]
    fn frontiers() {
        let check = |size: u64, expect: &[(u8, u64)]| {
            let got: Vec<(u8, u64)> = frontier(size).iter().map(|s| (s.level, s.index)).collect();
            assert_eq!(got, expect, "size {size}");
        };
        check(0, &[]);
        check(1, &[(0, 0)]);
        check(6, &[(2, 0), (1, 2)]);
        check(7, &[(2, 0), (1, 2), (0, 6)]);
        check(8, &[(3, 0)]);
    }

    /// Appending in batches of any shape stores exactly the hashes a tree built leaf by leaf has,
    /// so roots and proofs from the stored hashes are the tree's.
    #[test]
    fn batches_store_what_the_tree_holds() {
        for batches in [
            vec![1; 40],
            vec![3, 5, 7, 1, 2, 30],
            vec![64],
            vec![63, 1, 1, 100],
        ] {
            let mut stored = Stored::default();
            let mut reference = MemoryTree::new();
            let mut size = 0u64;
            for count in batches {
                let leaves: Vec<Hash> = (size..size + count)
                    .map(|i| leaf_hash(&i.to_be_bytes()))
                    .collect();
                for leaf in &leaves {
                    reference.append_leaf_hash(*leaf);
                }
                for (subtree, hash) in append_hashes(&stored, size, &leaves).expect("appends") {
                    assert!(
                        stored.0.insert(subtree, hash).is_none(),
                        "{subtree:?} twice"
                    );
                }
                size += count;
                for tree_size in 1..=size {
                    assert_eq!(
                        crate::merkle::root(&stored, tree_size).expect("root"),
                        reference.root(tree_size).expect("root"),
                        "size {tree_size}"
                    );
                }
            }
            // Every complete subtree is stored, and nothing else.
            let expected: usize = (0..64).map(|level| (size >> level) as usize).sum();
            assert_eq!(stored.0.len(), expected);
        }
    }

    #[test]
    fn a_missing_frontier_hash_is_an_error() {
        assert!(matches!(
            append_hashes(&Stored::default(), 3, &[leaf_hash(b"x")]),
            Err(Error::MissingHash { .. })
        ));
    }
}
