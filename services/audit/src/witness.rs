//! Witnessing, in the shape of C2SP tlog-witness: a log submits each new checkpoint to its
//! witnesses with a consistency proof from the last checkpoint the witness saw; a witness cosigns
//! it (C2SP tlog-cosignature) only if the log's key signed it and the new tree extends the one it
//! remembers. A log that shows a witness one history can then never get that witness's
//! cosignature on another: a department that forks its log is caught by any auditor who requires
//! the cosignature.
//!
//! This module is the protocol without I/O: the request body ([`AddCheckpoint`]) and the
//! witness's decision ([`check`]), whose refusals carry the HTTP status the protocol gives them.
//!
//! ```
//! use civitas_audit::checkpoint::{Checkpoint, sign_checkpoint};
//! use civitas_audit::merkle::MemoryTree;
//! use civitas_audit::note::Signer;
//! use civitas_audit::witness::{AddCheckpoint, check};
//!
//! let log = Signer::from_seed("civitas/transport", &[1; 32])?;
//! let mut tree = MemoryTree::new();
//! (0..5u8).for_each(|entry| _ = tree.append(&[entry]));
//! let signed = |size: u64| -> Result<String, civitas_audit::Error> {
//!     let checkpoint = Checkpoint::new("civitas/transport", size, tree.root(size)?)?;
//!     Ok(sign_checkpoint(&checkpoint, &log))
//! };
//!
//! // The witness has seen nothing yet: old size 0, no proof.
//! let first = AddCheckpoint { old_size: 0, proof: Vec::new(), note: signed(3)? };
//! let seen = check(&AddCheckpoint::parse(&first.to_body())?, &log.verifier(), None)?;
//! // Then the log grows, and proves it.
//! let proof = tree.consistency_proof(3, 5)?;
//! let next = AddCheckpoint { old_size: 3, proof, note: signed(5)? };
//! check(&next, &log.verifier(), Some((seen.size(), *seen.root())))?;
//! // A stale old size is a conflict that tells the log what the witness knows.
//! let stale = AddCheckpoint { old_size: 0, proof: Vec::new(), note: signed(5)? };
//! let refusal = check(&stale, &log.verifier(), Some((3, tree.root(3)?))).unwrap_err();
//! assert_eq!(refusal.status(), 409);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::checkpoint::{Checkpoint, open_checkpoint};
use crate::merkle::{EMPTY_ROOT, Hash, verify_consistency};
use crate::note::{self, Verifier};

/// The media type of a witness's answer to a stale `old` size: its known size, in decimal.
pub const SIZE_MEDIA_TYPE: &str = "text/x.tlog.size";

/// The most proof lines a request may carry (a consistency proof has at most 2·63 hashes).
const MAX_PROOF: usize = 128;

/// A log's request to a witness: cosign `note`, which extends the tree of `old_size` leaves the
/// witness last saw, as `proof` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old_size: u64,
    /// The consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The checkpoint, a signed note.
    pub note: String,
}

impl AddCheckpoint {
    /// The request body: `old <size>`, one base64 proof hash per line, an empty line, the note.
    pub fn to_body(&self) -> String {
        let mut body = format!("old {}\n", self.old_size);
        for hash in &self.proof {
            body.push_str(&BASE64.encode(hash));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&self.note);
        body
    }

    /// Reads a request body.
    pub fn parse(body: &str) -> Result<AddCheckpoint, Refusal> {
        let malformed = |why: &str| Refusal::Malformed(why.to_owned());
        let (head, note) = body
            .split_once("\n\n")
            .ok_or_else(|| malformed("the body has no empty line before the checkpoint"))?;
        let mut lines = head.split('\n');
        let old_size = lines
            .next()
            .and_then(|line| line.strip_prefix("old "))
            .filter(|size| size.bytes().all(|b| b.is_ascii_digit()))
            .filter(|size| size.len() == 1 || !size.starts_with('0'))
            .and_then(|size| size.parse::<u64>().ok())
            .ok_or_else(|| malformed("the first line must be `old <size>`"))?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF {
                return Err(malformed("the consistency proof is too long"));
            }
            let hash = BASE64
                .decode(line)
                .ok()
                .and_then(|bytes| Hash::try_from(bytes).ok())
                .ok_or_else(|| malformed("a proof line is not a base64 SHA-256 hash"))?;
            proof.push(hash);
        }
        Ok(AddCheckpoint {
            old_size,
            proof,
            note: note.to_owned(),
        })
    }

    /// The origin the note names (its first line), to find the log's key by.
    pub fn origin(&self) -> Result<&str, Refusal> {
        note::parse(&self.note)
            .map_err(|error| Refusal::Malformed(format!("the checkpoint: {error}")))?;
        Ok(self.note.split('\n').next().unwrap_or_default())
    }
}

/// Why a witness does not cosign.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request cannot be read (400).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The witness does not watch this log (404).
    #[error("this witness does not watch the log {0}")]
    UnknownLog(String),
    /// The checkpoint is not signed by the log's key (403).
    #[error("the checkpoint is not signed by the log's key: {0}")]
    NotSigned(String),
    /// The request's old size is not the size the witness knows (409); the log retries with a
    /// proof from `known`.
    #[error("the witness knows the tree of {known} entries, not the one the request extends")]
    Conflict { known: u64 },
    /// The tree is smaller than the one the witness knows (400): a rollback.
    #[error("the checkpoint of {size} entries is older than the witnessed {known} (rollback)")]
    Older { size: u64, known: u64 },
    /// A tree of the size the witness knows, with another root (409): a fork.
    #[error("the checkpoint of {size} entries has another root than the witnessed one (fork)")]
    Forked { size: u64 },
    /// The consistency proof does not show that the new tree extends the known one (422).
    #[error("the consistency proof from {known} to {size} entries does not verify (fork?)")]
    BadProof { known: u64, size: u64 },
}

impl Refusal {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) | Refusal::Older { .. } => 400,
            Refusal::NotSigned(_) => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::Conflict { .. } | Refusal::Forked { .. } => 409,
            Refusal::BadProof { .. } => 422,
        }
    }
}

/// The witness's decision on `request` for the log whose key is `log` (its name is the log's
/// origin), given the size and root of the last checkpoint of that log it witnessed (`None`:
/// none yet). Returns the checkpoint to cosign and remember.
pub fn check(
    request: &AddCheckpoint,
    log: &Verifier,
    remembered: Option<(u64, Hash)>,
) -> Result<Checkpoint, Refusal> {
    let checkpoint = open_checkpoint(&request.note, log, log.name())
        .map_err(|error| Refusal::NotSigned(error.to_string()))?;
    let (known, known_root) = remembered.unwrap_or((0, EMPTY_ROOT));
    if request.old_size != known {
        return Err(Refusal::Conflict { known });
    }
    let size = checkpoint.size();
    if size < known {
        return Err(Refusal::Older { size, known });
    }
    if size == known {
        if *checkpoint.root() != known_root {
            return Err(Refusal::Forked { size });
        }
        return Ok(checkpoint);
    }
    verify_consistency(known, size, &known_root, checkpoint.root(), &request.proof)
        .map_err(|_| Refusal::BadProof { known, size })?;
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::sign_checkpoint;
    use crate::merkle::MemoryTree;
    use crate::note::Signer;

    const ORIGIN: &str = "civitas/test";

    fn tree(size: u64, history: u8) -> MemoryTree {
        let mut tree = MemoryTree::new();
        for index in 0..size {
            let byte = if index < 3 { 0 } else { history };
            tree.append(&[byte, index as u8]);
        }
        tree
    }

    fn note(tree: &MemoryTree, size: u64, key: &Signer) -> String {
        let root = tree.root(size).expect("a root");
        sign_checkpoint(&Checkpoint::new(ORIGIN, size, root).expect("valid"), key)
    }

    #[test]
    fn decisions() {
        let key = Signer::from_seed(ORIGIN, &[1; 32]).expect("a key");
        let other = Signer::from_seed(ORIGIN, &[2; 32]).expect("a key");
        let honest = tree(10, 1);
        let forked = tree(10, 2);
        let seen = Some((5, honest.root(5).expect("root")));
        let request = |old_size, proof: Vec<Hash>, note: String| AddCheckpoint {
            old_size,
            proof,
            note,
        };
        let proof = |tree: &MemoryTree, from, to| tree.consistency_proof(from, to).expect("proof");
        let check_status = |request: AddCheckpoint, remembered, expected: Result<u64, u16>| {
            let outcome = check(&request, &key.verifier(), remembered)
                .map(|checkpoint| checkpoint.size())
                .map_err(|refusal| refusal.status());
            assert_eq!(outcome, expected, "{request:?}");
        };
        // Accepted: the first checkpoint, an extension, the same checkpoint again.
        check_status(request(0, vec![], note(&honest, 5, &key)), None, Ok(5));
        check_status(
            request(5, proof(&honest, 5, 10), note(&honest, 10, &key)),
            seen,
            Ok(10),
        );
        check_status(request(5, vec![], note(&honest, 5, &key)), seen, Ok(5));
        // Refused.
        check_status(
            request(0, vec![], note(&honest, 10, &other)),
            None,
            Err(403),
        );
        check_status(request(0, vec![], note(&honest, 10, &key)), seen, Err(409));
        check_status(request(5, vec![], note(&honest, 4, &key)), seen, Err(400));
        check_status(
            request(5, vec![], note(&forked, 5, &key)),
            Some((5, forked.root(4).expect("root"))),
            Err(409),
        );
        // A fork after what the witness saw proves nothing about the seen tree.
        check_status(
            request(5, proof(&forked, 5, 10), note(&forked, 10, &key)),
            seen,
            Err(422),
        );
        check_status(
            request(5, proof(&honest, 4, 10), note(&honest, 10, &key)),
            seen,
            Err(422),
        );
    }

    #[test]
    fn bodies_round_trip_and_are_read_strictly() {
        let key = Signer::from_seed(ORIGIN, &[1; 32]).expect("a key");
        let honest = tree(10, 1);
        let request = AddCheckpoint {
            old_size: 5,
            proof: honest.consistency_proof(5, 10).expect("proof"),
            note: note(&honest, 10, &key),
        };
        let parsed = AddCheckpoint::parse(&request.to_body()).expect("parses");
        assert_eq!(parsed, request);
        assert_eq!(parsed.origin().expect("an origin"), ORIGIN);
        for bad in [
            "",
            "old 5\n",
            "old x\n\nnote",
            "old 05\n\nnote",
            "old +5\n\nnote",
            "new 5\n\nnote",
            "old 5\nnot base64!\n\nnote",
            "old 5\nAAAA\n\nnote",
        ] {
            assert_eq!(
                AddCheckpoint::parse(bad)
                    .map(|_| ())
                    .map_err(|r| r.status()),
                Err(400),
                "{bad:?}"
            );
        }
        let long = format!(
            "old 1\n{}\nnote",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n".repeat(129)
        );
        assert!(AddCheckpoint::parse(&long).is_err());
    }
}
