//! Properties of the Merkle tree: for arbitrary leaves, any leaf and any pair of sizes
//! `old ≤ new`, our inclusion and consistency proofs verify, and changing any single byte of a
//! proof, of a root or of the leaf hash makes verification fail (except the new root of a proof
//! from the empty tree, which any tree extends).
//!
//! Every property runs 256 cases from a fixed seed, so the suite is fast and deterministic.

use civitas_audit::merkle::{
    HASH_LEN, Hash, MemoryTree, leaf_hash, verify_consistency, verify_inclusion,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed};

fn config() -> Config {
    Config {
        cases: 256,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x4D45_524B),
        ..Config::default()
    }
}

/// Leaves of arbitrary data, at least one.
fn leaves() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 1..300)
}

/// A change of one byte: where, among all the bytes verification looks at, and by what.
fn byte_change() -> impl Strategy<Value = (Index, u8)> {
    (any::<Index>(), 1..=u8::MAX)
}

fn tree_of(leaves: &[Vec<u8>]) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for leaf in leaves {
        tree.append(leaf);
    }
    tree
}

/// Changes one byte of the concatenation of `hashes`, picked by `at`, by xor with `delta`.
fn change_one_byte(hashes: &mut [&mut Hash], (at, delta): (Index, u8)) {
    let position = at.index(hashes.len() * HASH_LEN);
    hashes[position / HASH_LEN][position % HASH_LEN] ^= delta;
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn inclusion_proofs_verify_and_any_change_fails(
        leaves in leaves(),
        size in any::<Index>(),
        index in any::<Index>(),
        change in byte_change(),
    ) {
        let tree = tree_of(&leaves);
        let size = size.index(leaves.len()) as u64 + 1;
        let index = index.index(size as usize) as u64;
        let root = tree.root(size).expect("root");
        let leaf = leaf_hash(&leaves[index as usize]);
        let proof = tree.inclusion_proof(index, size).expect("proof");
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_ok());

        let (mut leaf, mut root, mut proof) = (leaf, root, proof);
        let mut all: Vec<&mut Hash> = proof.iter_mut().collect();
        all.push(&mut root);
        all.push(&mut leaf);
        change_one_byte(&mut all, change);
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_err());
    }

    #[test]
    fn consistency_proofs_verify_and_any_change_fails(
        leaves in leaves(),
        new_size in any::<Index>(),
        old_size in any::<Index>(),
        change in byte_change(),
    ) {
        let tree = tree_of(&leaves);
        let new_size = new_size.index(leaves.len()) as u64 + 1;
        let old_size = old_size.index(new_size as usize + 1) as u64;
        let old_root = tree.root(old_size).expect("old root");
        let new_root = tree.root(new_size).expect("new root");
        let proof = tree.consistency_proof(old_size, new_size).expect("proof");
        prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &proof).is_ok());

        let (mut old_root, mut new_root, mut proof) = (old_root, new_root, proof);
        let mut all: Vec<&mut Hash> = proof.iter_mut().collect();
        all.push(&mut old_root);
        // Every tree extends the empty tree: from size 0, the new root is not checked.
        if old_size > 0 {
            all.push(&mut new_root);
        }
        change_one_byte(&mut all, change);
        prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &proof).is_err());
    }
}
