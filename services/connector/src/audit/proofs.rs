//! Proofs and tree heads computed from the stored tree (RFC 9162 §2.1).
//!
//! The proof functions of `civitas-audit` read hashes through a synchronous [`HashReader`], and the
//! store is asynchronous. Which subtrees a proof needs depends only on the sizes and the index,
//! never on hash values, so each computation runs twice: first against a reader that notes what
//! is asked for, then, once those hashes are fetched in one query, against a reader that holds
//! them.
//!
//! **Which hashes are stored.** A log stores the hashes of every eighth level of its tree (0, 8,
//! 16, …): the leaf hashes, and the levels that C2SP tlog-tiles are made of (a tile of level `L`
//! holds the hashes of tree level `8·L`). The hash of a subtree between them is computed from the
//! `2^k` stored hashes below it at the nearest stored level (`k < 8`, so at most 128), as a
//! verifier computes it from tiles ([`stored_hashes`]). Half as many rows make a merge about a
//! quarter cheaper (BENCHMARKS.md). Logs written before kept every level; those extra rows are
//! not read.

use std::cell::RefCell;
use std::collections::HashMap;

use civitas_audit::merkle::{self, Hash, HashReader, Subtree};
use civitas_store::Store;

/// Why a proof could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The sizes or the index are not those of a proof of this tree (a caller's mistake).
    #[error(transparent)]
    Invalid(civitas_audit::Error),
    #[error(transparent)]
    Store(#[from] civitas_store::Error),
    #[error("the stored audit log {log} lacks the hash of subtree {level}/{index}")]
    MissingHash { log: String, level: u8, index: u64 },
}

/// The inclusion proof of leaf `index` in the log's tree of `tree_size` leaves.
pub async fn inclusion_proof(
    store: &Store,
    log: &str,
    index: u64,
    tree_size: u64,
) -> Result<Vec<Hash>, ProofError> {
    computed(store, log, |reader| {
        merkle::inclusion_proof(reader, index, tree_size)
    })
    .await
}

/// The consistency proof from the log's tree of `old_size` leaves to that of `new_size` leaves.
pub async fn consistency_proof(
    store: &Store,
    log: &str,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProofError> {
    computed(store, log, |reader| {
        merkle::consistency_proof(reader, old_size, new_size)
    })
    .await
}

/// The root hash of the log's tree of `tree_size` leaves.
pub async fn root(store: &Store, log: &str, tree_size: u64) -> Result<Hash, ProofError> {
    computed(store, log, |reader| merkle::root(reader, tree_size)).await
}

/// Runs `compute` against the stored hashes it needs.
async fn computed<T>(
    store: &Store,
    log: &str,
    compute: impl Fn(&dyn HashReader) -> Result<T, civitas_audit::Error>,
) -> Result<T, ProofError> {
    let recorder = Recorder::default();
    compute(&recorder).map_err(ProofError::Invalid)?;
    let wanted = recorder.wanted.into_inner();
    let hashes = stored_hashes(store, log, &wanted).await?;
    let mut fetched = HashMap::with_capacity(wanted.len());
    for (subtree, hash) in wanted.into_iter().zip(hashes) {
        let hash = hash.ok_or_else(|| ProofError::MissingHash {
            log: log.to_owned(),
            level: subtree.level,
            index: subtree.index,
        })?;
        fetched.insert(subtree, hash);
    }
    compute(&Fetched(fetched)).map_err(|error| match error {
        civitas_audit::Error::MissingHash { level, index } => ProofError::MissingHash {
            log: log.to_owned(),
            level,
            index,
        },
        other => ProofError::Invalid(other),
    })
}

/// A reader that notes the subtrees asked for and answers with placeholder hashes.
#[derive(Default)]
struct Recorder {
    wanted: RefCell<Vec<Subtree>>,
}

impl HashReader for Recorder {
    fn read_hashes(&self, subtrees: &[Subtree]) -> Result<Vec<Hash>, civitas_audit::Error> {
        self.wanted.borrow_mut().extend_from_slice(subtrees);
        Ok(vec![[0; merkle::HASH_LEN]; subtrees.len()])
    }
}

/// The hashes fetched for one computation.
struct Fetched(HashMap<Subtree, Hash>);

impl HashReader for Fetched {
    fn read_hashes(&self, subtrees: &[Subtree]) -> Result<Vec<Hash>, civitas_audit::Error> {
        read_known(&self.0, subtrees)
    }
}

/// Whether hashes of subtrees at `level` are stored: every eighth level.
pub fn is_stored_level(level: u8) -> bool {
    level.is_multiple_of(STORED_LEVEL_STEP)
}

/// The distance between stored levels: tlog-tiles' tile height.
const STORED_LEVEL_STEP: u8 = 8;

/// The hashes of `subtrees` of the log, in the order asked, `None` for a subtree that is not
/// complete in the stored tree: stored ones as stored, the others computed from the stored level
/// below them. One query (in chunks) for all of them.
pub async fn stored_hashes(
    store: &Store,
    log: &str,
    subtrees: &[Subtree],
) -> Result<Vec<Option<Hash>>, civitas_store::Error> {
    let spans: Vec<Option<Span>> = subtrees.iter().map(|&subtree| Span::of(subtree)).collect();
    let mut keys = Vec::new();
    for span in spans.iter().flatten() {
        keys.extend((span.first..span.first + span.count).map(|index| (span.level, index)));
    }
    let fetched = store.audit_hashes(log, &keys).await?;
    let mut fetched = fetched.as_slice();
    let mut hashes = Vec::with_capacity(subtrees.len());
    for span in spans {
        let Some(span) = span else {
            hashes.push(None);
            continue;
        };
        let (below, rest) = fetched.split_at(span.count as usize);
        fetched = rest;
        hashes.push(fold(below));
    }
    Ok(hashes)
}

/// The stored hashes a subtree's hash is computed from: `count` (a power of two, at most 128)
/// consecutive subtrees of the stored level `level`, from `first`.
struct Span {
    level: u8,
    first: u64,
    count: u64,
}

impl Span {
    /// `None` for a subtree no tree can have (its leaves beyond `u64`).
    fn of(subtree: Subtree) -> Option<Span> {
        let height = subtree.level % STORED_LEVEL_STEP;
        let first = subtree.index.checked_mul(1 << height)?;
        first.checked_add(1 << height)?;
        Some(Span {
            level: subtree.level - height,
            first,
            count: 1 << height,
        })
    }
}

/// The hash of the complete subtree over `hashes` (a power of two of them), `None` if one is
/// missing.
fn fold(hashes: &[Option<Hash>]) -> Option<Hash> {
    let mut level: Vec<Hash> = hashes.iter().copied().collect::<Option<_>>()?;
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|pair| merkle::node_hash(&pair[0], &pair[1]))
            .collect();
    }
    level.pop()
}

/// The hashes of `subtrees` from `known`; a missing one is [`civitas_audit::Error::MissingHash`].
pub(super) fn read_known(
    known: &HashMap<Subtree, Hash>,
    subtrees: &[Subtree],
) -> Result<Vec<Hash>, civitas_audit::Error> {
    subtrees
        .iter()
        .map(|subtree| {
            known
                .get(subtree)
                .copied()
                .ok_or(civitas_audit::Error::MissingHash {
                    level: subtree.level,
                    index: subtree.index,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log storing only every eighth level, and one storing every level (as logs written
    /// before did), give the roots and proofs of a tree kept in memory, at sizes around the
    /// stored levels' boundaries.
    #[actix_web::test]
    async fn proofs_from_stored_levels_match_the_memory_tree() {
        let store = Store::open("sqlite::memory:").await.expect("store");
        let size: u64 = 600;
        let mut tree = merkle::MemoryTree::new();
        for index in 0..size {
            tree.append(&index.to_be_bytes());
        }
        for (log, every_level) in [("sparse", false), ("full", true)] {
            let mut old_size = 0;
            // Appended in uneven batches, as merges come.
            for batch in [1u64, 7, 120, 128, 255, 89] {
                let entries: Vec<Vec<u8>> = (old_size..old_size + batch)
                    .map(|index| index.to_be_bytes().to_vec())
                    .collect();
                let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
                let added = merkle::append_hashes(&tree, old_size, &leaves).expect("appends");
                let hashes: Vec<(u8, u64, Hash)> = added
                    .iter()
                    .filter(|(subtree, _)| every_level || is_stored_level(subtree.level))
                    .map(|(subtree, hash)| (subtree.level, subtree.index, *hash))
                    .collect();
                store
                    .audit_append(log, old_size, &entries, &hashes)
                    .await
                    .expect("stored");
                old_size += batch;
            }
            assert_eq!(old_size, size);
        }
        let sizes = [
            1, 2, 127, 128, 129, 255, 256, 257, 300, 511, 512, 513, 599, 600,
        ];
        for log in ["sparse", "full"] {
            for &n in &sizes {
                assert_eq!(
                    root(&store, log, n).await.expect("root"),
                    tree.root(n).expect("reference"),
                    "{log} root {n}"
                );
                for index in [0, n / 3, n - 1] {
                    assert_eq!(
                        inclusion_proof(&store, log, index, n).await.expect("proof"),
                        tree.inclusion_proof(index, n).expect("reference"),
                        "{log} inclusion {index} in {n}"
                    );
                }
                for &old in sizes.iter().filter(|&&old| old <= n) {
                    assert_eq!(
                        consistency_proof(&store, log, old, n).await.expect("proof"),
                        tree.consistency_proof(old, n).expect("reference"),
                        "{log} consistency {old} -> {n}"
                    );
                }
            }
        }
        // A subtree not complete in the stored tree has no hash.
        let beyond = [
            Subtree {
                level: 3,
                index: 75,
            },
            Subtree {
                level: 0,
                index: 599,
            },
            Subtree {
                level: 7,
                index: u64::MAX >> 3,
            },
        ];
        let hashes = stored_hashes(&store, "sparse", &beyond)
            .await
            .expect("read");
        assert_eq!(hashes[0], None);
        assert!(hashes[1].is_some());
        assert_eq!(hashes[2], None, "no tree has it");
    }

    /// The two-pass computation asks for exactly what the proof reads.
    #[test]
    fn recorded_subtrees_suffice() {
        let mut tree = merkle::MemoryTree::new();
        for leaf in 0..100u32 {
            tree.append(&leaf.to_be_bytes());
        }
        for (old, new) in [(1, 100), (37, 64), (64, 100), (99, 100)] {
            let recorder = Recorder::default();
            merkle::consistency_proof(&recorder, old, new).expect("recorded");
            let fetched: HashMap<Subtree, Hash> = recorder
                .wanted
                .into_inner()
                .into_iter()
                .map(|subtree| {
                    let hash = tree.read_hashes(&[subtree]).expect("stored")[0];
                    (subtree, hash)
                })
                .collect();
            assert_eq!(
                merkle::consistency_proof(&Fetched(fetched), old, new).expect("computed"),
                tree.consistency_proof(old, new).expect("reference"),
                "{old} -> {new}"
            );
        }
    }
}
