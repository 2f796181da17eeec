//! Witnessing, in the shape of C2SP tlog-witness: a log submits each new checkpoint to its
//! witnesses with a consistency proof from the last checkpoint the witness cosigned; a witness
//! cosigns it (C2SP tlog-cosignature) only if the log's key signed it and the new tree extends
//! the one it remembers. A log that shows a witness one history can then never get that
//! witness's cosignature on another: a department that forks its log is caught by any auditor
//! who requires the cosignature.
//!
//! This module is the protocol without I/O. The witness's side: the request body
//! ([`AddCheckpoint`]) and the decision ([`check`]), whose refusals carry the HTTP status the
//! protocol gives them. The log's side: the witness's known size in a conflict
//! ([`parse_size_body`]) and the cosignature lines of a success ([`cosignature_lines`]).
//!
//! ```
//! use civitas_audit::checkpoint::{Checkpoint, CosignatureVerifier, cosign, sign_checkpoint};
//! use civitas_audit::merkle::MemoryTree;
//! use civitas_audit::note::Signer;
//! use civitas_audit::witness::{AddCheckpoint, check, cosignature_lines};
//!
//! let log = Signer::from_seed("civitas/transport", &[1; 32])?;
//! let witness = Signer::from_seed("civitas/water/witness", &[2; 32])?;
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
//! // Then the log grows, and proves it; the witness cosigns, the log keeps the line.
//! let proof = tree.consistency_proof(3, 5)?;
//! let next = AddCheckpoint { old_size: 3, proof, note: signed(5)? };
//! check(&next, &log.verifier(), Some((seen.size(), *seen.root())))?;
//! let answer = cosign(&next.note, &witness, 1_700_000_000)?;
//! let line = answer.strip_prefix(next.note.as_str()).unwrap_or_default();
//! let kept = cosignature_lines(
//!     &next.note,
//!     line,
//!     &log.verifier(),
//!     &CosignatureVerifier::of(&witness),
//! )?;
//! assert_eq!(kept, line);
//! // A stale old size is a conflict that tells the log what the witness knows.
//! let stale = AddCheckpoint { old_size: 0, proof: Vec::new(), note: signed(5)? };
//! let refusal = check(&stale, &log.verifier(), Some((3, tree.root(3)?))).unwrap_err();
//! assert_eq!(refusal.status(), 409);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::Error;
use crate::checkpoint::{
    Checkpoint, CosignatureVerifier, open_checkpoint, open_checkpoint_with_witnesses,
};
use crate::merkle::{EMPTY_ROOT, Hash, verify_consistency};
use crate::note::{self, Verifier};

/// The media type of a witness's answer to a stale old size: its known size, in decimal.
pub const SIZE_MEDIA_TYPE: &str = "text/x.tlog.size";

/// The most consistency proof lines a request may carry (C2SP tlog-witness, "add-checkpoint").
pub const MAX_PROOF_LINES: usize = 63;

/// A log's request to a witness: cosign `note`, which extends the tree of `old_size` leaves the
/// witness last cosigned, as `proof` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the last checkpoint the witness cosigned, as the log believes (0: none).
    pub old_size: u64,
    /// The consistency proof from `old_size` to the checkpoint's size (empty from 0).
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

    /// Reads a request body strictly: the old size in canonical decimal, at most
    /// [`MAX_PROOF_LINES`] proof lines of canonical base64 SHA-256 hashes, each line ending in a
    /// newline, then the note. The note's syntax is checked by [`AddCheckpoint::checkpoint`].
    pub fn parse(body: &str) -> Result<AddCheckpoint, Refusal> {
        let malformed = |why: &str| Refusal::Malformed(why.to_owned());
        let (head, note) = body
            .split_once("\n\n")
            .ok_or_else(|| malformed("the body has no empty line before the checkpoint"))?;
        let mut lines = head.split('\n');
        let old_size = lines
            .next()
            .and_then(|line| line.strip_prefix("old "))
            .filter(|size| !size.is_empty() && size.bytes().all(|b| b.is_ascii_digit()))
            .filter(|size| *size == "0" || !size.starts_with('0'))
            .and_then(|size| size.parse::<u64>().ok())
            .ok_or_else(|| malformed("the first line must be `old <size>` in decimal"))?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(malformed("the consistency proof has more than 63 lines"));
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

    /// The checkpoint the note holds, its signatures not yet verified: what a witness reads to
    /// find the log's key by the origin.
    pub fn checkpoint(&self) -> Result<Checkpoint, Refusal> {
        unverified_checkpoint(&self.note)
            .map_err(|error| Refusal::Malformed(format!("the checkpoint: {error}")))
    }
}

/// The checkpoint in a signed note, without verifying any signature: for notes a witness
/// verified before it stored them.
pub fn unverified_checkpoint(note: &str) -> Result<Checkpoint, Error> {
    Checkpoint::parse(note::parse(note)?.text)
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
    /// The old size is larger than the checkpoint's size (400): nothing can prove that a tree
    /// extends a larger one; a log sending its witness's size with an older checkpoint is rolling
    /// back.
    #[error("the old size {old_size} is larger than the checkpoint's size {size}")]
    OldSizeTooLarge { old_size: u64, size: u64 },
    /// The request's old size is not the size the witness knows (409); the log retries with a
    /// proof from `known`.
    #[error("the witness last cosigned a tree of {known} entries, not of {old_size}")]
    Conflict { old_size: u64, known: u64 },
    /// A tree of the size the witness knows, with another root (409): a fork.
    #[error("the checkpoint of {size} entries has another root than the one cosigned (fork)")]
    Forked { size: u64 },
    /// The consistency proof does not show that the new tree extends the known one (422).
    #[error("the consistency proof from {known} to {size} entries does not verify: {reason}")]
    BadProof {
        known: u64,
        size: u64,
        reason: String,
    },
}

impl Refusal {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) | Refusal::OldSizeTooLarge { .. } => 400,
            Refusal::NotSigned(_) => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::Conflict { .. } | Refusal::Forked { .. } => 409,
            Refusal::BadProof { .. } => 422,
        }
    }
}

/// The witness's decision on `request` for the log whose key is `log` (its key name is the log's
/// origin), given the size and root of the last checkpoint of that log it cosigned (`None`:
/// none yet). Returns the checkpoint to cosign and remember.
///
/// The checks run in the protocol's order: the log's signature (403), the old size against the
/// checkpoint's (400), the old size against the remembered one (409), the root of a checkpoint of
/// the remembered size (409), the consistency proof (422). Accepting the checkpoint the witness
/// already holds again is not an error: the log gets another cosignature of the same tree.
pub fn check(
    request: &AddCheckpoint,
    log: &Verifier,
    remembered: Option<(u64, Hash)>,
) -> Result<Checkpoint, Refusal> {
    request.checkpoint()?;
    let checkpoint = open_checkpoint(&request.note, log, log.name())
        .map_err(|error| Refusal::NotSigned(error.to_string()))?;
    let size = checkpoint.size();
    let old_size = request.old_size;
    if old_size > size {
        return Err(Refusal::OldSizeTooLarge { old_size, size });
    }
    let (known, known_root) = remembered.unwrap_or((0, EMPTY_ROOT));
    if old_size != known {
        return Err(Refusal::Conflict { old_size, known });
    }
    if size == known && *checkpoint.root() != known_root {
        return Err(Refusal::Forked { size });
    }
    verify_consistency(known, size, &known_root, checkpoint.root(), &request.proof).map_err(
        |error| Refusal::BadProof {
            known,
            size,
            reason: error.to_string(),
        },
    )?;
    Ok(checkpoint)
}

/// Reads a witness's answer to a stale old size (`text/x.tlog.size`): its known size in
/// canonical decimal, then a newline.
pub fn parse_size_body(body: &str) -> Option<u64> {
    let size = body.strip_suffix('\n')?;
    let canonical = !size.is_empty()
        && size.bytes().all(|byte| byte.is_ascii_digit())
        && (size == "0" || !size.starts_with('0'));
    canonical.then(|| size.parse().ok()).flatten()
}

/// The lines of a witness's answer (`body`) that are valid cosignatures of the checkpoint `note`
/// of the log `log` by `witness`, each with its newline, in their order. Other lines, such as
/// cosignatures by keys the log does not know, are left out; an answer without a valid
/// cosignature is an error ([`Error::NotEnoughCosignatures`], or why the witness's line failed).
pub fn cosignature_lines(
    note: &str,
    body: &str,
    log: &Verifier,
    witness: &CosignatureVerifier,
) -> Result<String, Error> {
    let mut kept = String::new();
    let mut failure = None;
    for line in body.split_inclusive('\n') {
        if !line.ends_with('\n') {
            continue;
        }
        let with_line = format!("{note}{line}");
        match open_checkpoint_with_witnesses(
            &with_line,
            log,
            log.name(),
            std::slice::from_ref(witness),
            1,
        ) {
            Ok(_) => kept.push_str(line),
            Err(Error::NotEnoughCosignatures { .. }) => {}
            Err(error) => failure = Some(error),
        }
    }
    if kept.is_empty() {
        return Err(failure.unwrap_or(Error::NotEnoughCosignatures {
            required: 1,
            verified: 0,
        }));
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{cosign, sign_checkpoint};
    use crate::merkle::MemoryTree;
    use crate::note::Signer;

    const ORIGIN: &str = "civitas/test";

    /// A tree whose first three entries are shared by every history; `history` tells the rest.
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

    fn request(old_size: u64, proof: Vec<Hash>, note: String) -> AddCheckpoint {
        AddCheckpoint {
            old_size,
            proof,
            note,
        }
    }

    fn proof(tree: &MemoryTree, from: u64, to: u64) -> Vec<Hash> {
        tree.consistency_proof(from, to).expect("a proof")
    }

    /// A case: its name, what is asked, what the witness remembers, and the decision (the size
    /// cosigned, or the status of the refusal).
    type Case = (
        &'static str,
        AddCheckpoint,
        Option<(u64, Hash)>,
        Result<u64, u16>,
    );

    #[test]
    fn decisions() {
        let key = Signer::from_seed(ORIGIN, &[1; 32]).expect("a key");
        let other = Signer::from_seed(ORIGIN, &[2; 32]).expect("a key");
        let honest = tree(10, 1);
        let forked = tree(10, 2);
        let seen = Some((5, honest.root(5).expect("root")));
        let mut short = proof(&honest, 5, 10);
        short.pop();
        let mut long = proof(&honest, 5, 10);
        long.push([0; 32]);
        let cases: Vec<Case> = vec![
            (
                "the first checkpoint",
                request(0, vec![], note(&honest, 5, &key)),
                None,
                Ok(5),
            ),
            (
                "the empty tree first",
                request(0, vec![], note(&honest, 0, &key)),
                None,
                Ok(0),
            ),
            (
                "an extension",
                request(5, proof(&honest, 5, 10), note(&honest, 10, &key)),
                seen,
                Ok(10),
            ),
            (
                "the remembered checkpoint again",
                request(5, vec![], note(&honest, 5, &key)),
                seen,
                Ok(5),
            ),
            (
                "another key",
                request(0, vec![], note(&honest, 10, &other)),
                None,
                Err(403),
            ),
            (
                "another key, with a good proof",
                request(5, proof(&honest, 5, 10), note(&honest, 10, &other)),
                seen,
                Err(403),
            ),
            (
                "a stale old size",
                request(0, vec![], note(&honest, 10, &key)),
                seen,
                Err(409),
            ),
            (
                "an old size the witness never saw",
                request(7, proof(&honest, 7, 10), note(&honest, 10, &key)),
                seen,
                Err(409),
            ),
            (
                "a replayed older checkpoint, with the witness's size",
                request(5, vec![], note(&honest, 4, &key)),
                seen,
                Err(400),
            ),
            (
                "a replayed older checkpoint, from zero",
                request(0, vec![], note(&honest, 4, &key)),
                seen,
                Err(409),
            ),
            (
                "an old size above the checkpoint's",
                request(10, vec![], note(&honest, 8, &key)),
                None,
                Err(400),
            ),
            (
                "a fork of the remembered size",
                request(5, vec![], note(&forked, 5, &key)),
                seen,
                Err(409),
            ),
            (
                "a fork after the remembered tree, with its own proof",
                request(5, proof(&forked, 5, 10), note(&forked, 10, &key)),
                seen,
                Err(422),
            ),
            (
                "a proof from another size",
                request(5, proof(&honest, 4, 10), note(&honest, 10, &key)),
                seen,
                Err(422),
            ),
            (
                "a proof one hash short",
                request(5, short, note(&honest, 10, &key)),
                seen,
                Err(422),
            ),
            (
                "a proof one hash long",
                request(5, long, note(&honest, 10, &key)),
                seen,
                Err(422),
            ),
            (
                "a proof from zero",
                request(0, proof(&honest, 3, 10), note(&honest, 10, &key)),
                None,
                Err(422),
            ),
            (
                "a proof with the remembered checkpoint",
                request(5, proof(&honest, 4, 5), note(&honest, 5, &key)),
                seen,
                Err(422),
            ),
            (
                "a note that is not a checkpoint",
                request(
                    0,
                    vec![],
                    note::sign("hello\n", &[&key]).expect("a signed note"),
                ),
                None,
                Err(400),
            ),
            (
                "a note without a signature",
                request(
                    0,
                    vec![],
                    format!("{ORIGIN}\n1\n{}\n", BASE64.encode([0; 32])),
                ),
                None,
                Err(400),
            ),
        ];
        for (name, request, remembered, expected) in cases {
            let outcome = check(&request, &key.verifier(), remembered)
                .map(|checkpoint| checkpoint.size())
                .map_err(|refusal| refusal.status());
            assert_eq!(outcome, expected, "{name}");
        }
    }

    #[test]
    fn a_conflict_names_the_known_size() {
        let key = Signer::from_seed(ORIGIN, &[1; 32]).expect("a key");
        let honest = tree(10, 1);
        let remembered = Some((5, honest.root(5).expect("root")));
        let refusal = check(
            &request(0, vec![], note(&honest, 10, &key)),
            &key.verifier(),
            remembered,
        )
        .expect_err("a conflict");
        assert_eq!(
            refusal,
            Refusal::Conflict {
                old_size: 0,
                known: 5
            }
        );
    }

    #[test]
    fn bodies_round_trip_and_are_read_strictly() {
        let key = Signer::from_seed(ORIGIN, &[1; 32]).expect("a key");
        let honest = tree(10, 1);
        let request = request(5, proof(&honest, 5, 10), note(&honest, 10, &key));
        let parsed = AddCheckpoint::parse(&request.to_body()).expect("parses");
        assert_eq!(parsed, request);
        assert_eq!(parsed.checkpoint().expect("a checkpoint").origin(), ORIGIN);
        let hash_line = format!("{}\n", BASE64.encode([7; 32]));
        let most = format!("old 1\n{}\nnote", hash_line.repeat(MAX_PROOF_LINES));
        assert_eq!(
            AddCheckpoint::parse(&most).map(|parsed| parsed.proof.len()),
            Ok(MAX_PROOF_LINES)
        );
        for bad in [
            "",
            "old 5\n",
            "old 5\nnote",
            "old \n\nnote",
            "old x\n\nnote",
            "old 05\n\nnote",
            "old +5\n\nnote",
            "old -5\n\nnote",
            "old 5 \n\nnote",
            "old 18446744073709551616\n\nnote",
            "new 5\n\nnote",
            "old 5\nnot base64!\n\nnote",
            "old 5\nAAAA\n\nnote",
            &format!("old 1\n{}\nnote", hash_line.repeat(MAX_PROOF_LINES + 1)),
        ] {
            let outcome = AddCheckpoint::parse(bad)
                .map(|_| ())
                .map_err(|r| r.status());
            assert_eq!(outcome, Err(400), "{bad:?}");
        }
        for note in ["note", "", "civitas/test\n1\n\n"] {
            let parsed =
                AddCheckpoint::parse(&format!("old 0\n\n{note}")).expect("the head parses");
            assert_eq!(
                parsed.checkpoint().map_err(|r| r.status()),
                Err(400),
                "{note:?}"
            );
        }
    }

    #[test]
    fn sizes_in_conflicts_are_read_strictly() {
        assert_eq!(parse_size_body("0\n"), Some(0));
        assert_eq!(parse_size_body("1234\n"), Some(1234));
        for bad in ["", "\n", "12", "012\n", "+1\n", "1 \n", "1\n\n", "x\n"] {
            assert_eq!(parse_size_body(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cosignature_lines_keep_only_the_witness_s_valid_lines() {
        let key = Signer::from_seed(ORIGIN, &[1; 32]).expect("a key");
        let witness = Signer::from_seed("civitas/other/witness", &[3; 32]).expect("a key");
        let stranger = Signer::from_seed("someone/else", &[4; 32]).expect("a key");
        let honest = tree(10, 1);
        let checkpoint = note(&honest, 10, &key);
        let line = |signer: &Signer, note: &str| {
            let cosigned = cosign(note, signer, 1_700_000_000).expect("cosigns");
            cosigned
                .strip_prefix(note)
                .expect("a line added")
                .to_owned()
        };
        let good = line(&witness, &checkpoint);
        let foreign = line(&stranger, &checkpoint);
        let verifier = CosignatureVerifier::of(&witness);
        let kept = |body: &str| cosignature_lines(&checkpoint, body, &key.verifier(), &verifier);
        assert_eq!(kept(&good).expect("valid"), good);
        assert_eq!(
            kept(&format!("{foreign}{good}")).expect("valid"),
            good,
            "unknown keys are ignored"
        );
        assert!(kept(&foreign).is_err(), "no line of the witness");
        assert!(kept("").is_err());
        assert!(kept("garbage\n").is_err());
        let other_checkpoint = line(&witness, &note(&honest, 9, &key));
        assert!(
            matches!(
                kept(&other_checkpoint),
                Err(Error::InvalidCosignature { .. })
            ),
            "a cosignature of another checkpoint"
        );
        assert!(kept(good.trim_end()).is_err(), "a line without its newline");
    }
}
