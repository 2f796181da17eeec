//! The signed audit log of Civitas: an append-only Merkle tree of audit events, its inclusion and
//! consistency proofs, its C2SP tiles, and signed, witness-cosigned checkpoints of its roots.
//!
//! The tree is the one of Certificate Transparency, RFC 9162 §2.1 (RFC 6962 §2.1), over SHA-256,
//! so any RFC 9162 or C2SP tlog verifier can check what the log publishes. The [`merkle`] module is
//! pure: it reads complete-subtree hashes through a [`merkle::HashReader`], the way C2SP
//! tlog-tiles stores them, and verifies proofs from hashes and sizes alone.
//! The [`tiles`] module names, builds and reads the C2SP tlog-tiles a log publishes (hash tiles and
//! entry bundles). The [`note`] and [`checkpoint`] modules sign and open its checkpoints as C2SP
//! signed notes, and let witnesses cosign them (C2SP signed-note, tlog-checkpoint and
//! tlog-cosignature). The [`record`] module defines the entries: access decisions, with keyed
//! hashes instead of identifiers that could be personal. Every module is pure; storage and
//! serving belong to the services.
//!
//! ```
//! use civitas_audit::merkle::{MemoryTree, leaf_hash, verify_consistency, verify_inclusion};
//!
//! let mut tree = MemoryTree::new();
//! for event in ["alice signed in", "alice read Spot:1", "alice signed out"] {
//!     tree.append(event.as_bytes());
//! }
//! let root = tree.root(3)?;
//!
//! // Anyone holding the root can check that an event is in the log, and where.
//! let proof = tree.inclusion_proof(1, 3)?;
//! verify_inclusion(&leaf_hash(b"alice read Spot:1"), 1, 3, &proof, &root)?;
//! assert!(verify_inclusion(&leaf_hash(b"alice read Spot:2"), 1, 3, &proof, &root).is_err());
//!
//! // When the log grows, its new root is proven to extend the old one.
//! tree.append(b"bob signed in");
//! let new_root = tree.root(4)?;
//! let consistency = tree.consistency_proof(3, 4)?;
//! verify_consistency(3, 4, &root, &new_root, &consistency)?;
//! # Ok::<(), civitas_audit::Error>(())
//! ```

pub mod auditor;
pub mod checkpoint;
mod error;
pub mod merkle;
pub mod note;
pub mod record;
pub mod tiles;
pub mod witness;

pub use error::Error;
