//! Checkpoints of the audit log and their witness cosignatures.
//!
//! A checkpoint (C2SP tlog-checkpoint v1.0.0, <https://c2sp.org/tlog-checkpoint>) is a signed
//! note whose text is the log's origin, its tree size in decimal and the base64 of its root
//! hash, each on a line of its own, then optional extension lines:
//!
//! ```text
//! civitas.example/broker
//! 3
//! <base64 of the root hash>
//!
//! — civitas.example/broker <base64(key ID || Ed25519 signature)>
//! ```
//!
//! A witness that has checked a checkpoint against the last one it saw cosigns it (C2SP
//! tlog-cosignature, <https://c2sp.org/tlog-cosignature>, Ed25519 `cosignature/v1`): it adds a
//! note signature of type `0x04` whose payload is an 8-byte big-endian timestamp followed by the
//! Ed25519 signature of
//!
//! ```text
//! cosignature/v1
//! time <seconds since the Unix epoch>
//! <the checkpoint text, extension lines included>
//! ```
//!
//! [`open_checkpoint_with_witnesses`] accepts a checkpoint only when the log signed it and
//! enough known witnesses cosigned it, so that a log cannot show one history to some readers and
//! another to others without the witnesses seeing both.
//!
//! ```
//! use civitas_audit::checkpoint::{
//!     Checkpoint, CosignatureVerifier, cosign, open_checkpoint_with_witnesses, sign_checkpoint,
//! };
//! use civitas_audit::merkle::MemoryTree;
//! use civitas_audit::note::Signer;
//!
//! let mut tree = MemoryTree::new();
//! tree.append(b"alice read Spot:1");
//! let log = Signer::from_seed("civitas.example/broker", &[1; 32])?;
//! let witness = Signer::from_seed("civitas.example/connector", &[2; 32])?;
//!
//! let checkpoint = Checkpoint::new("civitas.example/broker", 1, tree.root(1)?)?;
//! let note = sign_checkpoint(&checkpoint, &log);
//! let note = cosign(&note, &witness, 1_700_000_000)?;
//!
//! let witnesses = [CosignatureVerifier::of(&witness)];
//! let (opened, cosignatures) = open_checkpoint_with_witnesses(
//!     &note,
//!     &log.verifier(),
//!     "civitas.example/broker",
//!     &witnesses,
//!     1,
//! )?;
//! assert_eq!(opened, checkpoint);
//! assert_eq!(cosignatures[0].time, 1_700_000_000);
//! # Ok::<(), civitas_audit::Error>(())
//! ```

use std::slice;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::Error;
use crate::merkle::{HASH_LEN, Hash};
use crate::note::{
    self, NoteSignature, Opened, PUBLIC_KEY_LEN, SIGNATURE_LEN, Signer, Verifier, check_key_name,
    check_no_control_characters, format_vkey, key_id, parse_vkey, verify_ed25519,
};

/// The signature type byte of timestamped Ed25519 checkpoint cosignatures (C2SP signed-note,
/// "Signature types"; C2SP tlog-cosignature).
pub const COSIGNATURE_V1_TYPE: u8 = 0x04;

/// The largest cosignature timestamp, `2^63 - 1` (C2SP tlog-cosignature, "Format").
pub const MAX_COSIGNATURE_TIME: u64 = i64::MAX as u64;

/// The length of a cosignature payload after the key ID: a timestamp and a signature.
const COSIGNATURE_LEN: usize = 8 + SIGNATURE_LEN;

/// A tree head of a log: its origin, size and root hash, and optional extension lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

impl Checkpoint {
    /// The checkpoint of the log `origin` at `size` leaves with root hash `root`.
    ///
    /// The origin must be a non-empty line without control characters.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Self, Error> {
        Checkpoint::with_extensions(origin, size, root, Vec::new())
    }

    /// As [`Checkpoint::new`], with extension lines, each a non-empty line without control
    /// characters. C2SP tlog-checkpoint does not recommend them: log monitors cannot audit them.
    pub fn with_extensions(
        origin: &str,
        size: u64,
        root: Hash,
        extensions: Vec<String>,
    ) -> Result<Self, Error> {
        check_line(origin, "the origin is empty")?;
        for extension in &extensions {
            check_line(extension, "an extension line is empty")?;
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The origin: the name of the log.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The tree size: the number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash of the tree of `size` leaves.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The extension lines, without their newlines.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The checkpoint text: origin, size, base64 root hash and extension lines, each ending in
    /// a newline.
    pub fn to_body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        );
        for extension in &self.extensions {
            body.push_str(extension);
            body.push('\n');
        }
        body
    }

    /// Reads a checkpoint text: at least three non-empty lines, each ending in a newline; the
    /// size in decimal without leading zeros (`0` for the empty tree); the root hash in
    /// standard, padded base64 of exactly 32 bytes.
    pub fn parse(body: &str) -> Result<Self, Error> {
        let malformed = |reason| Error::MalformedCheckpoint { reason };
        let lines = body
            .strip_suffix('\n')
            .ok_or(malformed("the text does not end in a newline"))?;
        check_no_control_characters(body)?;
        let mut lines = lines.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(malformed("the text has fewer than three lines"));
        };
        if origin.is_empty() {
            return Err(malformed("the origin is empty"));
        }
        let size = parse_size(size)?;
        let root = parse_root(root)?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(malformed("an extension line is empty"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

/// Checks that `line` can be one line of a checkpoint: non-empty, no control character.
fn check_line(line: &str, empty: &'static str) -> Result<(), Error> {
    if line.is_empty() {
        return Err(Error::MalformedCheckpoint { reason: empty });
    }
    if line.contains('\n') {
        return Err(Error::MalformedCheckpoint {
            reason: "a line holds a newline",
        });
    }
    check_no_control_characters(line)
}

/// Reads a tree size: ASCII decimal, no sign, no leading zeros unless it is `0`.
fn parse_size(line: &str) -> Result<u64, Error> {
    let invalid = || Error::InvalidTreeSize {
        line: line.to_owned(),
    };
    let canonical = !line.is_empty()
        && line.bytes().all(|byte| byte.is_ascii_digit())
        && (line == "0" || !line.starts_with('0'));
    if !canonical {
        return Err(invalid());
    }
    line.parse().map_err(|_| invalid())
}

/// Reads a root hash: standard, padded, canonical base64 of 32 bytes.
fn parse_root(line: &str) -> Result<Hash, Error> {
    let invalid = || Error::InvalidRootHash {
        line: line.to_owned(),
    };
    let bytes = BASE64.decode(line).map_err(|_| invalid())?;
    let root: [u8; HASH_LEN] = bytes.try_into().map_err(|_| invalid())?;
    Ok(root)
}

/// Signs a checkpoint as the log `log`: the signed note of its text.
///
/// C2SP tlog-checkpoint recommends a key name equal to the origin.
pub fn sign_checkpoint(checkpoint: &Checkpoint, log: &Signer) -> String {
    // A checkpoint's text always ends in a newline and holds no control character, and a signer
    // always has a valid name, so the text needs no further check.
    note::sign_checked(&checkpoint.to_body(), &[log])
}

/// Opens a checkpoint of the log `origin`: the note must carry a valid signature by `log`, its
/// text must be a checkpoint and its origin must be `origin`.
///
/// Other signatures, such as cosignatures, are ignored; see
/// [`open_checkpoint_with_witnesses`].
pub fn open_checkpoint(note: &str, log: &Verifier, origin: &str) -> Result<Checkpoint, Error> {
    open_signed(note, log, origin).map(|(checkpoint, _)| checkpoint)
}

/// Opens a checkpoint and returns it with the opened note, whose unknown signatures are the
/// ones the log's key did not make.
fn open_signed(note: &str, log: &Verifier, origin: &str) -> Result<(Checkpoint, Opened), Error> {
    let opened = note::open(note, slice::from_ref(log))?;
    let checkpoint = Checkpoint::parse(&opened.text)?;
    if checkpoint.origin != origin {
        return Err(Error::OriginMismatch {
            expected: origin.to_owned(),
            found: checkpoint.origin,
        });
    }
    Ok((checkpoint, opened))
}

/// The public key of a witness, which verifies its `cosignature/v1` checkpoint cosignatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key_id: u32,
    public_key: [u8; PUBLIC_KEY_LEN],
}

impl CosignatureVerifier {
    /// The witness named `name` with the Ed25519 `public_key`.
    pub fn new(name: &str, public_key: [u8; PUBLIC_KEY_LEN]) -> Result<Self, Error> {
        check_key_name(name)?;
        Ok(CosignatureVerifier {
            name: name.to_owned(),
            key_id: key_id(name, COSIGNATURE_V1_TYPE, &public_key),
            public_key,
        })
    }

    /// The verifier of the cosignatures `witness` makes with [`cosign`].
    pub fn of(witness: &Signer) -> Self {
        let public_key = witness.public_key();
        CosignatureVerifier {
            name: witness.name().to_owned(),
            key_id: key_id(witness.name(), COSIGNATURE_V1_TYPE, &public_key),
            public_key,
        }
    }

    /// Reads a verifier key `<name>+<hex key ID>+<base64(0x04 || public key)>` (C2SP
    /// tlog-cosignature, "Format"), checking that the key ID is the one the rest gives.
    pub fn from_vkey(vkey: &str) -> Result<Self, Error> {
        let (name, public_key) = parse_vkey(vkey, COSIGNATURE_V1_TYPE)?;
        CosignatureVerifier::new(name, public_key)
    }

    /// The verifier key `<name>+<hex key ID>+<base64(0x04 || public key)>`.
    pub fn to_vkey(&self) -> String {
        format_vkey(
            &self.name,
            self.key_id,
            COSIGNATURE_V1_TYPE,
            &self.public_key,
        )
    }

    /// The witness's key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID, computed with signature type `0x04`.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public_key
    }
}

/// A cosignature that verified: which witness made it, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosignature {
    /// The witness's key name.
    pub witness: String,
    /// When the witness cosigned, in seconds since the Unix epoch.
    pub time: u64,
}

/// The message a `cosignature/v1` signs (C2SP tlog-cosignature, "Ed25519 signed message").
fn cosignature_message(time: u64, body: &str) -> String {
    format!("cosignature/v1\ntime {time}\n{body}")
}

/// Adds the cosignature of `witness`, made at `time` (seconds since the Unix epoch), to a
/// checkpoint note.
///
/// This checks the note's syntax and that its text is a checkpoint, not the log's signature:
/// a witness opens the checkpoint with [`open_checkpoint`] and checks its consistency with the
/// last one it cosigned before it calls this.
pub fn cosign(note: &str, witness: &Signer, time: u64) -> Result<String, Error> {
    if time > MAX_COSIGNATURE_TIME {
        return Err(Error::CosignatureTimeOutOfRange { time });
    }
    let parsed = note::parse(note)?;
    Checkpoint::parse(parsed.text)?;
    let verifier = CosignatureVerifier::of(witness);
    let already = parsed
        .signatures
        .iter()
        .any(|signature| signature.name == verifier.name && signature.key_id == verifier.key_id);
    if already {
        return Err(Error::DuplicateSignature {
            name: verifier.name,
            key_id: verifier.key_id,
        });
    }
    if parsed.signatures.len() >= note::MAX_SIGNATURES {
        return Err(Error::TooManySignatures {
            limit: note::MAX_SIGNATURES,
        });
    }
    let signature = witness.sign_bytes(cosignature_message(time, parsed.text).as_bytes());
    let mut payload = Vec::with_capacity(COSIGNATURE_LEN);
    payload.extend_from_slice(&time.to_be_bytes());
    payload.extend_from_slice(&signature);
    let line = NoteSignature {
        name: verifier.name,
        key_id: verifier.key_id,
        signature: payload,
    };
    Ok(format!("{note}{}", line.to_line()))
}

/// Opens a checkpoint as [`open_checkpoint`] does, then verifies the cosignatures of
/// `witnesses` on it and requires at least `required` of them.
///
/// Signature lines of unknown keys are ignored, as C2SP signed-note requires. A known witness's
/// line must be a valid cosignature of this very checkpoint text
/// ([`Error::MalformedCosignature`], [`Error::InvalidCosignature`]) and appear once
/// ([`Error::DuplicateSignature`]). Returns the checkpoint and the verified cosignatures, in
/// the order of their lines.
pub fn open_checkpoint_with_witnesses(
    note: &str,
    log: &Verifier,
    origin: &str,
    witnesses: &[CosignatureVerifier],
    required: usize,
) -> Result<(Checkpoint, Vec<Cosignature>), Error> {
    let (checkpoint, opened) = open_signed(note, log, origin)?;
    let mut cosignatures: Vec<Cosignature> = Vec::new();
    let mut seen: Vec<(&str, u32)> = Vec::new();
    for signature in &opened.unknown_signatures {
        let known = witnesses
            .iter()
            .find(|witness| witness.name == signature.name && witness.key_id == signature.key_id);
        let Some(witness) = known else {
            continue;
        };
        if seen.contains(&(witness.name.as_str(), witness.key_id)) {
            return Err(Error::DuplicateSignature {
                name: witness.name.clone(),
                key_id: witness.key_id,
            });
        }
        seen.push((witness.name.as_str(), witness.key_id));
        let (time, ed25519) =
            split_cosignature(&signature.signature).ok_or_else(|| Error::MalformedCosignature {
                witness: witness.name.clone(),
            })?;
        let message = cosignature_message(time, &opened.text);
        if !verify_ed25519(&witness.public_key, message.as_bytes(), ed25519) {
            return Err(Error::InvalidCosignature {
                witness: witness.name.clone(),
            });
        }
        cosignatures.push(Cosignature {
            witness: witness.name.clone(),
            time,
        });
    }
    if cosignatures.len() < required {
        return Err(Error::NotEnoughCosignatures {
            required,
            verified: cosignatures.len(),
        });
    }
    Ok((checkpoint, cosignatures))
}

/// Splits a cosignature payload into its timestamp and its Ed25519 signature, if it is 72 bytes
/// with a timestamp of at most `2^63 - 1`.
fn split_cosignature(payload: &[u8]) -> Option<(u64, &[u8])> {
    if payload.len() != COSIGNATURE_LEN {
        return None;
    }
    let (time, signature) = payload.split_at(8);
    let time = u64::from_be_bytes(time.try_into().ok()?);
    (time <= MAX_COSIGNATURE_TIME).then_some((time, signature))
}
