//! Proofs and tree heads computed from the stored tree (RFC 9162 §2.1).
//!
//! The proof functions of `civitas-audit` read hashes through a synchronous [`HashReader`], and the
//! store is asynchronous. Which subtrees a proof needs depends only on the sizes and the index,
//! never on hash values, so each computation runs twice: first against a reader that notes what
//! is asked for, then, once those hashes are fetched in one query, against a reader that holds
//! them.

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
    let keys: Vec<(u8, u64)> = wanted.iter().map(|s| (s.level, s.index)).collect();
    let hashes = store.audit_hashes(log, &keys).await?;
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
