//! Verification of inclusion and consistency proofs (RFC 9162 §2.1.3.2 and §2.1.4.2), from the
//! proof, the sizes and the roots alone.
//!
//! The length a proof must have is worked out first, so that a proof with a hash too few or too
//! many is reported as such; then the RFC's algorithm runs step by step.

use super::{EMPTY_ROOT, Hash, node_hash};
use crate::Error;

/// Checks that `proof` proves the leaf with hash `leaf_hash` to be leaf `index` of the tree of
/// `tree_size` leaves whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), Error> {
    // Step 1.
    if index >= tree_size {
        return Err(Error::IndexOutOfRange { index, tree_size });
    }
    let expected = inclusion_proof_len(index, tree_size);
    check_len(expected, proof.len())?;
    // Steps 2 and 3.
    let mut first = index;
    let mut second = tree_size - 1;
    let mut running = *leaf_hash;
    // Step 4.
    for sibling in proof {
        if second == 0 {
            return Err(Error::ProofTooLong {
                expected,
                actual: proof.len(),
            });
        }
        if first & 1 == 1 || first == second {
            running = node_hash(sibling, &running);
            while first & 1 == 0 && first != 0 {
                first >>= 1;
                second >>= 1;
            }
        } else {
            running = node_hash(&running, sibling);
        }
        first >>= 1;
        second >>= 1;
    }
    // Step 5.
    if second != 0 {
        return Err(Error::ProofTooShort {
            expected,
            actual: proof.len(),
        });
    }
    if running != *root {
        return Err(Error::RootMismatch);
    }
    Ok(())
}

/// Checks that `proof` proves the tree of `old_size` leaves with root `old_root` to be a prefix of
/// the tree of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// RFC 9162 defines proofs for `0 < old_size < new_size`. Beyond that, the proof must be empty:
/// for `old_size == 0` the old root must be [`EMPTY_ROOT`], and for `old_size == new_size` the
/// two roots must be equal.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), Error> {
    if old_size > new_size {
        return Err(Error::SizesOutOfOrder { old_size, new_size });
    }
    if old_size == 0 {
        check_len(0, proof.len())?;
        return if *old_root == EMPTY_ROOT {
            Ok(())
        } else {
            Err(Error::OldRootMismatch)
        };
    }
    if old_size == new_size {
        check_len(0, proof.len())?;
        return if old_root == new_root {
            Ok(())
        } else {
            Err(Error::NewRootMismatch)
        };
    }
    let expected = consistency_proof_len(old_size, new_size);
    check_len(expected, proof.len())?;
    // Steps 1 and 2: a proof from a power-of-two size leaves out the old root, its first node.
    let (start, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        match proof.split_first() {
            Some(split) => split,
            None => {
                return Err(Error::ProofTooShort {
                    expected,
                    actual: proof.len(),
                });
            }
        }
    };
    // Steps 3 and 4.
    let mut first = old_size - 1;
    let mut second = new_size - 1;
    while first & 1 == 1 {
        first >>= 1;
        second >>= 1;
    }
    // Step 5.
    let mut old_running = *start;
    let mut new_running = *start;
    // Step 6.
    for node in rest {
        if second == 0 {
            return Err(Error::ProofTooLong {
                expected,
                actual: proof.len(),
            });
        }
        if first & 1 == 1 || first == second {
            old_running = node_hash(node, &old_running);
            new_running = node_hash(node, &new_running);
            while first & 1 == 0 && first != 0 {
                first >>= 1;
                second >>= 1;
            }
        } else {
            new_running = node_hash(&new_running, node);
        }
        first >>= 1;
        second >>= 1;
    }
    // Step 7.
    if second != 0 {
        return Err(Error::ProofTooShort {
            expected,
            actual: proof.len(),
        });
    }
    if old_running != *old_root {
        return Err(Error::OldRootMismatch);
    }
    if new_running != *new_root {
        return Err(Error::NewRootMismatch);
    }
    Ok(())
}

/// The number of hashes in the inclusion proof of leaf `index` in a tree of `tree_size` leaves,
/// for `index < tree_size`: one per level below the point where the paths to `index` and to the
/// last leaf part (`inner`), plus one per complete subtree left of that point on the right edge.
pub(super) fn inclusion_proof_len(index: u64, tree_size: u64) -> usize {
    let inner = u64::BITS - (index ^ (tree_size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// The number of hashes in the consistency proof from `old_size` to `new_size` leaves, for
/// `0 < old_size < new_size`: the inclusion proof of the old tree's last leaf, less the levels
/// inside the old tree's rightmost complete subtree, plus that subtree's hash unless it is the
/// whole old tree.
pub(super) fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    let last = old_size - 1;
    let inner = u64::BITS - (last ^ (new_size - 1)).leading_zeros();
    let border = last.checked_shr(inner).unwrap_or(0).count_ones();
    let shared = old_size.trailing_zeros();
    let start = u32::from(!old_size.is_power_of_two());
    (start + inner - shared + border) as usize
}

fn check_len(expected: usize, actual: usize) -> Result<(), Error> {
    if actual < expected {
        Err(Error::ProofTooShort { expected, actual })
    } else if actual > expected {
        Err(Error::ProofTooLong { expected, actual })
    } else {
        Ok(())
    }
}
