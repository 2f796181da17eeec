//! Our Merkle tree against an independent implementation, `ct-merkle` (RFC 6962, over the RustCrypto
//! `sha2`): the roots of every tree size from 1 to 10,000 are equal; for thousands of (index, size)
//! and (old size, new size) pairs across that range, the two produce the same proofs, each one's
//! proofs verify with the other's verifier, and our verifier rejects a proof with a hash removed, a
//! hash added or a bit flipped.
//!
//! ct-merkle proves only against its current size, so both trees grow one leaf at a time and the
//! pairs are drawn at each size from a fixed-seed generator. It also has no proofs from or about
//! the empty tree (it panics), which our API allows; those are checked on our side only.

use civitas_audit::Error;
use civitas_audit::merkle::{
    EMPTY_ROOT, HASH_LEN, Hash, MemoryTree, leaf_hash, verify_consistency, verify_inclusion,
};
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use sha2::Sha256;

const LARGEST: u64 = 10_000;

/// Up to this size, every index and every old size is checked; above it, a few drawn ones.
const ALL_PAIRS_UP_TO: u64 = 48;

type Theirs = MemoryBackedTree<Sha256, Vec<u8>>;

/// SplitMix64: a small deterministic generator, so that every run checks the same pairs.
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

/// The data of leaf `index`: of varying length, never two alike.
fn leaf_data(index: u64) -> Vec<u8> {
    let mut data = format!("event {index}").into_bytes();
    data.resize(data.len() + (index % 7) as usize, b'.');
    data
}

/// Grows both trees to [`LARGEST`] leaves, calling `at_each_size` after every leaf.
fn grow(mut at_each_size: impl FnMut(u64, &MemoryTree, &Theirs)) {
    let mut ours = MemoryTree::new();
    let mut theirs = Theirs::new();
    for index in 0..LARGEST {
        let data = leaf_data(index);
        assert_eq!(ours.append(&data), index);
        theirs.push(data);
        at_each_size(index + 1, &ours, &theirs);
    }
}

fn bytes(proof: &[Hash]) -> Vec<u8> {
    proof.concat()
}

fn hashes(bytes: &[u8]) -> Vec<Hash> {
    bytes
        .chunks_exact(HASH_LEN)
        .map(|chunk| {
            let mut hash = [0; HASH_LEN];
            hash.copy_from_slice(chunk);
            hash
        })
        .collect()
}

fn their_root(root: Hash, size: u64) -> RootHash<Sha256> {
    RootHash::new(root.into(), size)
}

/// The proof with the hash at a drawn position removed, if it has one.
fn dropped(proof: &[Hash], draw: &mut Draw) -> Option<Vec<Hash>> {
    let mut proof = proof.to_vec();
    let at = draw.next() as usize % proof.len().max(1);
    (at < proof.len()).then(|| {
        proof.remove(at);
        proof
    })
}

/// The proof with a drawn hash appended.
fn appended(proof: &[Hash], draw: &mut Draw) -> Vec<Hash> {
    let mut proof = proof.to_vec();
    let mut extra = [0; HASH_LEN];
    extra[..8].copy_from_slice(&draw.next().to_le_bytes());
    proof.push(extra);
    proof
}

/// The proof with one drawn bit flipped, if it has a hash.
fn bit_flipped(proof: &[Hash], draw: &mut Draw) -> Option<Vec<Hash>> {
    let mut proof = proof.to_vec();
    let bit = draw.next() as usize % (proof.len() * HASH_LEN * 8).max(1);
    let hash = proof.get_mut(bit / (HASH_LEN * 8))?;
    hash[bit / 8 % HASH_LEN] ^= 1 << (bit % 8);
    Some(proof)
}

#[test]
fn roots_are_equal_at_every_size() {
    assert_eq!(MemoryTree::new().root(0).expect("empty root"), EMPTY_ROOT);
    let mut sizes = 0;
    grow(|size, ours, theirs| {
        let root = ours.root(size).expect("root");
        assert_eq!(
            root,
            <[u8; HASH_LEN]>::from(*theirs.root().as_bytes()),
            "root of {size}"
        );
        assert_eq!(theirs.root().num_leaves(), size);
        sizes += 1;
    });
    assert_eq!(sizes, LARGEST);
}

#[test]
fn inclusion_proofs_agree() {
    let mut draw = Draw(0x000A_0D17_1065);
    let mut pairs = 0;
    grow(|size, ours, theirs| {
        let root = ours.root(size).expect("root");
        let indices: Vec<u64> = if size <= ALL_PAIRS_UP_TO {
            (0..size).collect()
        } else {
            vec![draw.between(0, size - 1)]
        };
        for index in indices {
            pairs += 1;
            let data = leaf_data(index);
            let leaf = leaf_hash(&data);
            let proof = ours.inclusion_proof(index, size).expect("our proof");
            let their_proof = theirs.prove_inclusion(index as usize);
            assert_eq!(bytes(&proof), their_proof.as_bytes(), "{index} of {size}");

            // Each verifies the other's proof.
            let our_proof_for_them =
                InclusionProof::<Sha256>::try_from_bytes(bytes(&proof)).expect("whole hashes");
            their_root(root, size)
                .verify_inclusion(&data, index, &our_proof_for_them)
                .unwrap_or_else(|error| panic!("ct-merkle rejects {index} of {size}: {error}"));
            verify_inclusion(&leaf, index, size, &hashes(their_proof.as_bytes()), &root)
                .unwrap_or_else(|error| panic!("we reject ct-merkle's {index} of {size}: {error}"));

            // Ours rejects edited proofs, each for the right reason.
            let expected = proof.len();
            if let Some(shorter) = dropped(&proof, &mut draw) {
                assert!(matches!(
                    verify_inclusion(&leaf, index, size, &shorter, &root),
                    Err(Error::ProofTooShort { expected: e, actual: a }) if e == expected && a == expected - 1
                ));
            }
            assert!(matches!(
                verify_inclusion(&leaf, index, size, &appended(&proof, &mut draw), &root),
                Err(Error::ProofTooLong { expected: e, actual: a }) if e == expected && a == expected + 1
            ));
            if let Some(flipped) = bit_flipped(&proof, &mut draw) {
                assert!(matches!(
                    verify_inclusion(&leaf, index, size, &flipped, &root),
                    Err(Error::RootMismatch)
                ));
            }
        }
    });
    assert!(pairs >= 10_000, "{pairs} pairs");
}

#[test]
fn consistency_proofs_agree() {
    let mut draw = Draw(0x00C0_4515_7E4C);
    let mut roots = vec![EMPTY_ROOT];
    let mut pairs = 0;
    grow(|size, ours, theirs| {
        let root = ours.root(size).expect("root");
        roots.push(root);
        // Ours proves from the empty tree, with an empty proof; ct-merkle refuses to.
        let from_empty = ours.consistency_proof(0, size).expect("proof from 0");
        assert_eq!(from_empty, Vec::<Hash>::new());
        verify_consistency(0, size, &EMPTY_ROOT, &root, &from_empty).expect("from 0 verifies");

        let old_sizes: Vec<u64> = if size <= ALL_PAIRS_UP_TO {
            (1..=size).collect()
        } else {
            vec![draw.between(1, size)]
        };
        for old_size in old_sizes {
            pairs += 1;
            let old_root = roots[old_size as usize];
            let proof = ours.consistency_proof(old_size, size).expect("our proof");
            let their_proof = theirs.prove_consistency((size - old_size) as usize);
            assert_eq!(
                bytes(&proof),
                their_proof.as_bytes(),
                "{old_size} to {size}"
            );

            // Each verifies the other's proof.
            let our_proof_for_them =
                ConsistencyProof::<Sha256>::try_from_bytes(bytes(&proof)).expect("whole hashes");
            their_root(root, size)
                .verify_consistency(&their_root(old_root, old_size), &our_proof_for_them)
                .unwrap_or_else(|error| panic!("ct-merkle rejects {old_size} to {size}: {error}"));
            verify_consistency(
                old_size,
                size,
                &old_root,
                &root,
                &hashes(their_proof.as_bytes()),
            )
            .unwrap_or_else(|error| panic!("we reject ct-merkle's {old_size} to {size}: {error}"));

            // Ours rejects edited proofs, each for the right reason.
            let expected = proof.len();
            let verify =
                |proof: &[Hash]| verify_consistency(old_size, size, &old_root, &root, proof);
            if let Some(shorter) = dropped(&proof, &mut draw) {
                assert!(matches!(
                    verify(&shorter),
                    Err(Error::ProofTooShort { expected: e, actual: a }) if e == expected && a == expected - 1
                ));
            }
            assert!(matches!(
                verify(&appended(&proof, &mut draw)),
                Err(Error::ProofTooLong { expected: e, actual: a }) if e == expected && a == expected + 1
            ));
            if let Some(flipped) = bit_flipped(&proof, &mut draw) {
                assert!(matches!(
                    verify(&flipped),
                    Err(Error::OldRootMismatch | Error::NewRootMismatch)
                ));
            }
        }
    });
    assert!(pairs >= 10_000, "{pairs} pairs");
}
