//! Unit tests of the Merkle tree: roots and proofs of small trees against the RFC 9162 definitions
//! written out naively over the leaf data, the known roots of the Certificate Transparency test
//! leaves, precise rejection of bad proofs, the number of stored hashes each computation reads, and
//! trees too large to store.

use std::cell::RefCell;
use std::fmt::Write;

use super::verify::{consistency_proof_len, inclusion_proof_len};
use super::*;

/// The leaves of the Certificate Transparency reference tests (RFC 6962's reference implementation
/// and transparency-dev/merkle), as hex.
const CT_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("test hex is valid"))
        .collect()
}

fn ct_leaves() -> Vec<Vec<u8>> {
    CT_LEAVES.iter().map(|leaf| unhex(leaf)).collect()
}

/// Leaves whose data differ in length and content: `[]`, `[1]`, `[2, 2]`, ...
fn counting_leaves(count: usize) -> Vec<Vec<u8>> {
    (0..count).map(|i| vec![i as u8; i % 5]).collect()
}

fn tree_of(leaves: &[Vec<u8>]) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for leaf in leaves {
        tree.append(leaf);
    }
    tree
}

fn k_for(n: usize) -> usize {
    largest_power_of_two_below(n as u64) as usize
}

/// MTH(D[n]), RFC 9162 §2.1.1, by its recursive definition.
fn naive_root(leaves: &[Vec<u8>]) -> Hash {
    match leaves {
        [] => {
            let mut hash = [0; HASH_LEN];
            hash.copy_from_slice(ring::digest::digest(&SHA256, b"").as_ref());
            hash
        }
        [leaf] => leaf_hash(leaf),
        _ => {
            let (left, right) = leaves.split_at(k_for(leaves.len()));
            node_hash(&naive_root(left), &naive_root(right))
        }
    }
}

/// PATH(m, D[n]), RFC 9162 §2.1.3.1.
fn naive_path(m: usize, leaves: &[Vec<u8>]) -> Vec<Hash> {
    if leaves.len() <= 1 {
        return Vec::new();
    }
    let k = k_for(leaves.len());
    let (left, right) = leaves.split_at(k);
    if m < k {
        let mut path = naive_path(m, left);
        path.push(naive_root(right));
        path
    } else {
        let mut path = naive_path(m - k, right);
        path.push(naive_root(left));
        path
    }
}

/// SUBPROOF(m, D[n], b), RFC 9162 §2.1.4.1.
fn naive_subproof(m: usize, leaves: &[Vec<u8>], complete: bool) -> Vec<Hash> {
    if m == leaves.len() {
        return if complete {
            Vec::new()
        } else {
            vec![naive_root(leaves)]
        };
    }
    let k = k_for(leaves.len());
    let (left, right) = leaves.split_at(k);
    if m <= k {
        let mut proof = naive_subproof(m, left, complete);
        proof.push(naive_root(right));
        proof
    } else {
        let mut proof = naive_subproof(m - k, right, false);
        proof.push(naive_root(left));
        proof
    }
}

fn naive_consistency(m: usize, leaves: &[Vec<u8>]) -> Vec<Hash> {
    if m == 0 {
        Vec::new()
    } else {
        naive_subproof(m, leaves, true)
    }
}

/// Roots of the CT test leaves for sizes 1 to 8, from transparency-dev/merkle's test data.
#[test]
fn known_roots_of_the_ct_leaves() {
    let check = |size: usize, expect: &str| {
        let leaves = &ct_leaves()[..size];
        assert_eq!(hex(&naive_root(leaves)), expect, "naive root of {size}");
        assert_eq!(
            hex(&tree_of(leaves).root(size as u64).expect("root")),
            expect,
            "root of {size}"
        );
    };
    check(
        0,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
    check(
        1,
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    );
    check(
        2,
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    );
    check(
        3,
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    );
    check(
        4,
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    );
    check(
        5,
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    );
    check(
        6,
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    );
    check(
        7,
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    );
    check(
        8,
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    );
}

#[test]
fn empty_root_is_the_hash_of_nothing() {
    assert_eq!(EMPTY_ROOT, naive_root(&[]));
    assert_eq!(MemoryTree::new().root(0).expect("empty root"), EMPTY_ROOT);
}

/// For every tree of the given leaves up to their number, every root and every inclusion and
/// consistency proof equals the RFC definition's and verifies.
fn check_against_definition(leaves: &[Vec<u8>]) {
    let tree = tree_of(leaves);
    for n in 0..=leaves.len() {
        let prefix = &leaves[..n];
        let size = n as u64;
        let root = tree.root(size).expect("root");
        assert_eq!(root, naive_root(prefix), "root of {n}");
        for (index, data) in prefix.iter().enumerate() {
            let proof = tree.inclusion_proof(index as u64, size).expect("proof");
            assert_eq!(proof, naive_path(index, prefix), "PATH({index}, D[{n}])");
            assert_eq!(proof.len(), inclusion_proof_len(index as u64, size));
            let leaf = leaf_hash(data);
            verify_inclusion(&leaf, index as u64, size, &proof, &root).expect("inclusion verifies");
        }
        for m in 0..=n {
            let proof = tree.consistency_proof(m as u64, size).expect("proof");
            assert_eq!(proof, naive_consistency(m, prefix), "PROOF({m}, D[{n}])");
            if 0 < m && m < n {
                assert_eq!(proof.len(), consistency_proof_len(m as u64, size));
            }
            let old_root = tree.root(m as u64).expect("old root");
            verify_consistency(m as u64, size, &old_root, &root, &proof)
                .expect("consistency verifies");
        }
    }
}

#[test]
fn small_trees_follow_the_definition() {
    check_against_definition(&ct_leaves());
    check_against_definition(&counting_leaves(33));
}

/// Edits a valid proof and returns what the verifier says, as `Debug` text.
#[derive(Clone, Copy, Debug)]
enum Edit {
    None,
    DropLast,
    DropFirst,
    Append,
    FlipFirstBit,
    FlipLastBit,
    FlipLeaf,
    FlipRoot,
    FlipOldRoot,
    Proof(&'static [&'static str]),
}

fn edited(proof: &[Hash], edit: Edit) -> Vec<Hash> {
    let mut proof = proof.to_vec();
    match edit {
        Edit::DropLast => {
            proof.pop();
        }
        Edit::DropFirst => {
            if !proof.is_empty() {
                proof.remove(0);
            }
        }
        Edit::Append => proof.push([7; HASH_LEN]),
        Edit::FlipFirstBit => {
            if let Some(hash) = proof.first_mut() {
                hash[0] ^= 1;
            }
        }
        Edit::FlipLastBit => {
            if let Some(hash) = proof.last_mut() {
                hash[HASH_LEN - 1] ^= 0x80;
            }
        }
        Edit::Proof(hashes) => {
            proof = hashes
                .iter()
                .map(|text| {
                    let mut hash = [0; HASH_LEN];
                    hash.copy_from_slice(&unhex(text));
                    hash
                })
                .collect();
        }
        Edit::None | Edit::FlipLeaf | Edit::FlipRoot | Edit::FlipOldRoot => {}
    }
    proof
}

fn flipped(mut hash: Hash, flip: bool) -> Hash {
    if flip {
        hash[HASH_LEN / 2] ^= 0x10;
    }
    hash
}

fn outcome(result: Result<(), Error>) -> String {
    match result {
        Ok(()) => "Ok".to_owned(),
        Err(error) => format!("{error:?}"),
    }
}

/// Verifies a (possibly edited) inclusion proof of leaf `proven_index` in the tree of the 16
/// counting leaves of size `proven_size`, claimed for `index` in a tree of `size`.
fn check_inclusion(
    (proven_index, proven_size): (u64, u64),
    (index, size): (u64, u64),
    edit: Edit,
    expect: &str,
) {
    let leaves = counting_leaves(16);
    let tree = tree_of(&leaves);
    let proof = tree
        .inclusion_proof(proven_index, proven_size)
        .expect("proof");
    let root = flipped(
        tree.root(proven_size).expect("root"),
        matches!(edit, Edit::FlipRoot),
    );
    let leaf = flipped(
        leaf_hash(&leaves[proven_index as usize]),
        matches!(edit, Edit::FlipLeaf),
    );
    let result = verify_inclusion(&leaf, index, size, &edited(&proof, edit), &root);
    assert_eq!(
        outcome(result),
        expect,
        "leaf {proven_index} of {proven_size} as {index} of {size}, {edit:?}"
    );
}

#[test]
fn inclusion_proofs_are_rejected_precisely() {
    check_inclusion((5, 13), (5, 13), Edit::None, "Ok");
    check_inclusion((0, 1), (0, 1), Edit::None, "Ok");
    check_inclusion(
        (5, 13),
        (5, 13),
        Edit::DropLast,
        "ProofTooShort { expected: 4, actual: 3 }",
    );
    check_inclusion(
        (5, 13),
        (5, 13),
        Edit::Append,
        "ProofTooLong { expected: 4, actual: 5 }",
    );
    check_inclusion(
        (0, 1),
        (0, 1),
        Edit::Append,
        "ProofTooLong { expected: 0, actual: 1 }",
    );
    check_inclusion((5, 13), (5, 13), Edit::FlipFirstBit, "RootMismatch");
    check_inclusion((5, 13), (5, 13), Edit::FlipLastBit, "RootMismatch");
    check_inclusion((5, 13), (5, 13), Edit::FlipLeaf, "RootMismatch");
    check_inclusion((5, 13), (5, 13), Edit::FlipRoot, "RootMismatch");
    check_inclusion((0, 1), (0, 1), Edit::FlipRoot, "RootMismatch");
    // The right proof, claimed for another leaf or another size of the same proof length.
    check_inclusion((5, 13), (4, 13), Edit::None, "RootMismatch");
    // A proof does not bind the tree size: where two sizes give the path the same shape, the
    // proof against the root of 13 leaves also "verifies" for 14. The signed checkpoint binds a
    // root to its size; a verifier takes both from it.
    check_inclusion((5, 13), (5, 14), Edit::None, "Ok");
    // Another size whose proofs have another length.
    check_inclusion(
        (5, 13),
        (5, 8),
        Edit::None,
        "ProofTooLong { expected: 3, actual: 4 }",
    );
    check_inclusion(
        (12, 13),
        (12, 16),
        Edit::None,
        "ProofTooShort { expected: 4, actual: 2 }",
    );
    // Indices outside the tree.
    check_inclusion(
        (5, 13),
        (13, 13),
        Edit::None,
        "IndexOutOfRange { index: 13, tree_size: 13 }",
    );
    check_inclusion(
        (0, 1),
        (0, 0),
        Edit::None,
        "IndexOutOfRange { index: 0, tree_size: 0 }",
    );
    check_inclusion(
        (5, 13),
        (u64::MAX, 13),
        Edit::None,
        "IndexOutOfRange { index: 18446744073709551615, tree_size: 13 }",
    );
    // Enormous trees: the lengths are worked out without overflow.
    check_inclusion(
        (5, 13),
        (5, u64::MAX),
        Edit::None,
        "ProofTooShort { expected: 64, actual: 4 }",
    );
    check_inclusion(
        (5, 13),
        (u64::MAX - 1, u64::MAX),
        Edit::None,
        "ProofTooShort { expected: 63, actual: 4 }",
    );
    check_inclusion(
        (5, 13),
        (1 << 63, u64::MAX),
        Edit::None,
        "ProofTooShort { expected: 64, actual: 4 }",
    );
}

/// Verifies a (possibly edited) consistency proof between trees of the 16 counting leaves from
/// `proven` sizes, claimed for `claimed` sizes.
fn check_consistency(proven: (u64, u64), claimed: (u64, u64), edit: Edit, expect: &str) {
    let tree = tree_of(&counting_leaves(16));
    let proof = tree.consistency_proof(proven.0, proven.1).expect("proof");
    let old_root = flipped(
        tree.root(proven.0).expect("root"),
        matches!(edit, Edit::FlipOldRoot),
    );
    let new_root = flipped(
        tree.root(proven.1).expect("root"),
        matches!(edit, Edit::FlipRoot),
    );
    let result = verify_consistency(
        claimed.0,
        claimed.1,
        &old_root,
        &new_root,
        &edited(&proof, edit),
    );
    assert_eq!(
        outcome(result),
        expect,
        "{proven:?} claimed as {claimed:?}, {edit:?}"
    );
}

#[test]
fn consistency_proofs_are_rejected_precisely() {
    check_consistency((5, 13), (5, 13), Edit::None, "Ok");
    check_consistency((4, 13), (4, 13), Edit::None, "Ok");
    check_consistency((0, 13), (0, 13), Edit::None, "Ok");
    check_consistency((13, 13), (13, 13), Edit::None, "Ok");
    check_consistency((0, 0), (0, 0), Edit::None, "Ok");
    check_consistency(
        (5, 13),
        (5, 13),
        Edit::DropLast,
        "ProofTooShort { expected: 5, actual: 4 }",
    );
    check_consistency(
        (4, 13),
        (4, 13),
        Edit::DropFirst,
        "ProofTooShort { expected: 2, actual: 1 }",
    );
    check_consistency(
        (5, 13),
        (5, 13),
        Edit::Append,
        "ProofTooLong { expected: 5, actual: 6 }",
    );
    check_consistency(
        (13, 13),
        (13, 13),
        Edit::Append,
        "ProofTooLong { expected: 0, actual: 1 }",
    );
    check_consistency(
        (0, 13),
        (0, 13),
        Edit::Append,
        "ProofTooLong { expected: 0, actual: 1 }",
    );
    // The first hash of a proof from a size that is not a power of two leads to both roots; the
    // last one only to the new root.
    check_consistency((5, 13), (5, 13), Edit::FlipFirstBit, "OldRootMismatch");
    check_consistency((5, 13), (5, 13), Edit::FlipLastBit, "NewRootMismatch");
    check_consistency((4, 13), (4, 13), Edit::FlipFirstBit, "NewRootMismatch");
    check_consistency((5, 13), (5, 13), Edit::FlipOldRoot, "OldRootMismatch");
    check_consistency((4, 13), (4, 13), Edit::FlipOldRoot, "NewRootMismatch");
    check_consistency((5, 13), (5, 13), Edit::FlipRoot, "NewRootMismatch");
    check_consistency((13, 13), (13, 13), Edit::FlipRoot, "NewRootMismatch");
    check_consistency((0, 13), (0, 13), Edit::FlipOldRoot, "OldRootMismatch");
    check_consistency((0, 0), (0, 0), Edit::FlipOldRoot, "OldRootMismatch");
    // Claimed for other sizes.
    check_consistency(
        (5, 13),
        (13, 5),
        Edit::None,
        "SizesOutOfOrder { old_size: 13, new_size: 5 }",
    );
    check_consistency(
        (5, 13),
        (6, 13),
        Edit::None,
        "ProofTooLong { expected: 4, actual: 5 }",
    );
    // As with inclusion proofs, the sizes are bound by the checkpoints, not by the proof.
    check_consistency((5, 13), (5, 14), Edit::None, "Ok");
    check_consistency(
        (5, 13),
        (5, 17),
        Edit::None,
        "ProofTooShort { expected: 6, actual: 5 }",
    );
    check_consistency(
        (5, 13),
        (5, u64::MAX),
        Edit::None,
        "ProofTooShort { expected: 65, actual: 5 }",
    );
    check_consistency(
        (5, 13),
        (u64::MAX - 1, u64::MAX),
        Edit::None,
        "ProofTooShort { expected: 64, actual: 5 }",
    );
    check_consistency(
        (5, 13),
        (1 << 63, u64::MAX),
        Edit::None,
        "ProofTooLong { expected: 1, actual: 5 }",
    );
    check_consistency((13, 13), (0, 13), Edit::Proof(&[]), "OldRootMismatch");
}

#[test]
fn memory_tree_refuses_sizes_it_does_not_hold() {
    let tree = tree_of(&counting_leaves(5));
    let check = |result: Result<Vec<Hash>, Error>, expect: &str| {
        assert_eq!(format!("{:?}", result.map(|_| ())), expect);
    };
    let too_big = "Err(TreeSizeOutOfRange { tree_size: 6, available: 5 })";
    check(tree.root(6).map(|root| vec![root]), too_big);
    check(tree.inclusion_proof(0, 6), too_big);
    check(tree.consistency_proof(2, 6), too_big);
    check(
        tree.inclusion_proof(5, 5),
        "Err(IndexOutOfRange { index: 5, tree_size: 5 })",
    );
    check(
        tree.consistency_proof(5, 4),
        "Err(SizesOutOfOrder { old_size: 5, new_size: 4 })",
    );
    // Through the reader alone, which does not know its size, the missing hash is named.
    check(
        root(&tree, 6).map(|root| vec![root]),
        "Err(MissingHash { level: 1, index: 2 })",
    );
}

/// A reader that counts what it is asked, in front of a [`MemoryTree`].
struct Counting<'a> {
    tree: &'a MemoryTree,
    /// The number of subtrees asked for in each call.
    calls: RefCell<Vec<usize>>,
}

impl HashReader for Counting<'_> {
    fn read_hashes(&self, subtrees: &[Subtree]) -> Result<Vec<Hash>, Error> {
        self.calls.borrow_mut().push(subtrees.len());
        self.tree.read_hashes(subtrees)
    }
}

/// Roots and proofs read the stored hashes in one batch of at most `2·⌈log2 n⌉ + 1` of them.
#[test]
fn computations_read_few_stored_hashes() {
    let tree = tree_of(&counting_leaves(1500));
    let reader = Counting {
        tree: &tree,
        calls: RefCell::new(Vec::new()),
    };
    let check = |n: u64, what: &str, read: &dyn Fn()| {
        reader.calls.borrow_mut().clear();
        read();
        let calls = reader.calls.borrow();
        let bound = 2 * (u64::BITS - (n.max(2) - 1).leading_zeros()) as usize + 1;
        assert!(calls.len() <= 1, "{what}: {} batches", calls.len());
        let count = calls.iter().sum::<usize>();
        assert!(count <= bound, "{what} read {count} hashes, over {bound}");
    };
    let mut n = 1;
    while n <= 1500 {
        check(n, &format!("root({n})"), &|| {
            root(&reader, n).expect("root");
        });
        for index in [0, n / 3, n / 2, n - 1] {
            check(n, &format!("inclusion({index}, {n})"), &|| {
                inclusion_proof(&reader, index, n).expect("inclusion");
            });
        }
        for m in [0, 1, n / 3, n / 2, n - 1, n] {
            check(n, &format!("consistency({m}, {n})"), &|| {
                consistency_proof(&reader, m, n).expect("consistency");
            });
        }
        n = n * 5 / 4 + 1;
    }
}

/// A reader that answers a different number of hashes than asked is caught.
struct Miscounting;

impl HashReader for Miscounting {
    fn read_hashes(&self, subtrees: &[Subtree]) -> Result<Vec<Hash>, Error> {
        Ok(vec![EMPTY_ROOT; subtrees.len() + 1])
    }
}

#[test]
fn miscounting_readers_are_caught() {
    assert_eq!(
        format!("{:?}", root(&Miscounting, 3)),
        "Err(ReaderMiscounted { requested: 2, returned: 3 })"
    );
}

/// The tree of any size up to `u64::MAX` whose leaves all have the same data: its subtree hashes
/// depend only on their level, so it can be "stored" without storage.
struct Uniform {
    /// The hash of a complete subtree at each level.
    levels: Vec<Hash>,
}

impl Uniform {
    fn new() -> Self {
        let mut levels = vec![leaf_hash(b"same")];
        for level in 1..64 {
            let below = levels[level - 1];
            levels.push(node_hash(&below, &below));
        }
        Self { levels }
    }
}

impl HashReader for Uniform {
    fn read_hashes(&self, subtrees: &[Subtree]) -> Result<Vec<Hash>, Error> {
        Ok(subtrees
            .iter()
            .map(|subtree| self.levels[usize::from(subtree.level)])
            .collect())
    }
}

/// Proofs in trees of up to `u64::MAX` leaves are made and verified without overflow.
#[test]
fn enormous_trees() {
    let tree = Uniform::new();
    let leaf = tree.levels[0];
    let sizes = [
        u64::MAX,
        u64::MAX - 1,
        1 << 63,
        (1 << 63) + 1,
        (1 << 63) - 1,
        0xdead_beef_cafe_f00d,
    ];
    for n in sizes {
        let root_n = root(&tree, n).expect("root");
        for index in [0, 1, n / 2, n - 2, n - 1] {
            let proof = inclusion_proof(&tree, index, n).expect("inclusion");
            verify_inclusion(&leaf, index, n, &proof, &root_n).expect("inclusion verifies");
        }
        for m in [1, 2, 3, n / 2, n - 1, 1 << 62, (1 << 62) + 1] {
            let root_m = root(&tree, m).expect("root");
            let proof = consistency_proof(&tree, m, n).expect("consistency");
            verify_consistency(m, n, &root_m, &root_n, &proof).expect("consistency verifies");
            assert_eq!(
                outcome(verify_consistency(m, n, &root_m, &root_n, &proof[1..])),
                format!(
                    "ProofTooShort {{ expected: {}, actual: {} }}",
                    proof.len(),
                    proof.len() - 1
                )
            );
        }
    }
}
