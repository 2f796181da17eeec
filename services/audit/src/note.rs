//! Signed notes, as C2SP signed-note v1.0.0 (<https://c2sp.org/signed-note>) defines them: UTF-8
//! text ending in a newline, a blank line, then one or more signature lines
//! `— <key name> <base64(key ID || signature)>`, each ending in a newline.
//!
//! A key is named by its key name and a 4-byte key ID, the first bytes of
//! `SHA-256(key name || 0x0A || signature type || public key)`. This module signs with Ed25519
//! (signature type `0x01`, the signature is over the note text) and reads every signature line,
//! whatever its type: [`open`] verifies the signatures of the keys it is given, rejects the note
//! if any of them fails, and hands back the others, unverified, so that a caller that knows
//! other signature types (such as the cosignatures of [`crate::checkpoint`]) can check them.
//!
//! Beyond the specification, [`open`] rejects two signatures by the same known key, where the Go
//! reference implementation keeps the first, and reads at most [`MAX_SIGNATURES`] signatures
//! (the specification asks verifiers to accept at least 16).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::digest::{Context, SHA256};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use crate::Error;

/// The signature type byte of Ed25519 note signatures (C2SP signed-note, "Signature types").
pub const ED25519_TYPE: u8 = 0x01;

/// The most signature lines [`open`] and [`parse`] read from one note.
pub const MAX_SIGNATURES: usize = 100;

/// The length of an Ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;

/// The length of an Ed25519 seed (private key) in bytes.
pub const SEED_LEN: usize = 32;

/// The length of an Ed25519 signature in bytes.
pub(crate) const SIGNATURE_LEN: usize = 64;

/// The start of every signature line: an em dash (U+2014) and a space.
const SIGNATURE_LINE_PREFIX: &str = "\u{2014} ";

/// The key ID of a key: the first four bytes, read big-endian, of
/// `SHA-256(name || 0x0A || signature_type || public_key)` (C2SP signed-note, "Signatures").
pub fn key_id(name: &str, signature_type: u8, public_key: &[u8]) -> u32 {
    let mut context = Context::new(&SHA256);
    context.update(name.as_bytes());
    context.update(b"\n");
    context.update(&[signature_type]);
    context.update(public_key);
    let digest = context.finish();
    let mut id = [0; 4];
    id.copy_from_slice(&digest.as_ref()[..4]);
    u32::from_be_bytes(id)
}

/// Checks a key name: non-empty, with no Unicode space and no plus sign (C2SP signed-note,
/// "Format").
pub fn check_key_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('+') {
        return Err(Error::InvalidKeyName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// A named Ed25519 signing key.
pub struct Signer {
    name: String,
    key_id: u32,
    key_pair: Ed25519KeyPair,
}

impl Signer {
    /// The signer named `name` whose Ed25519 key pair comes from the 32-byte `seed` (the private
    /// key of RFC 8032 §5.1.5).
    pub fn from_seed(name: &str, seed: &[u8; SEED_LEN]) -> Result<Self, Error> {
        check_key_name(name)?;
        let key_pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| Error::KeyRejected)?;
        let key_id = key_id(name, ED25519_TYPE, key_pair.public_key().as_ref());
        Ok(Signer {
            name: name.to_owned(),
            key_id,
            key_pair,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID of this key as an Ed25519 note key (signature type `0x01`).
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut key = [0; PUBLIC_KEY_LEN];
        key.copy_from_slice(self.key_pair.public_key().as_ref());
        key
    }

    /// The verifier of this signer's note signatures.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            public_key: self.public_key(),
        }
    }

    /// The Ed25519 signature of `message`.
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut signature = [0; SIGNATURE_LEN];
        signature.copy_from_slice(self.key_pair.sign(message).as_ref());
        signature
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key pair stays out of the output.
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

/// A named Ed25519 public key that verifies note signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: u32,
    public_key: [u8; PUBLIC_KEY_LEN],
}

impl Verifier {
    /// The verifier named `name` with the Ed25519 `public_key`.
    pub fn new(name: &str, public_key: [u8; PUBLIC_KEY_LEN]) -> Result<Self, Error> {
        check_key_name(name)?;
        Ok(Verifier {
            name: name.to_owned(),
            key_id: key_id(name, ED25519_TYPE, &public_key),
            public_key,
        })
    }

    /// Reads a verifier key `<name>+<hex key ID>+<base64(0x01 || public key)>` (C2SP
    /// signed-note, "Verifier keys"), checking that the key ID is the one the rest gives.
    pub fn from_vkey(vkey: &str) -> Result<Self, Error> {
        let (name, public_key) = parse_vkey(vkey, ED25519_TYPE)?;
        Verifier::new(name, public_key)
    }

    /// The verifier key `<name>+<hex key ID>+<base64(0x01 || public key)>`.
    pub fn to_vkey(&self) -> String {
        format_vkey(&self.name, self.key_id, ED25519_TYPE, &self.public_key)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public_key
    }

    fn verifies(&self, text: &str, signature: &[u8]) -> bool {
        verify_ed25519(&self.public_key, text.as_bytes(), signature)
    }
}

/// Whether `signature` is the Ed25519 signature of `message` by `public_key`.
pub(crate) fn verify_ed25519(
    public_key: &[u8; PUBLIC_KEY_LEN],
    message: &[u8],
    signature: &[u8],
) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

/// Reads a verifier key of the given signature type with a 32-byte public key, returning its
/// name and key once the key ID is checked.
pub(crate) fn parse_vkey(
    vkey: &str,
    signature_type: u8,
) -> Result<(&str, [u8; PUBLIC_KEY_LEN]), Error> {
    // A key name holds no '+' and a key ID is hex, so the first two '+' are the separators; the
    // base64 after them may hold more.
    let malformed = |reason| Error::MalformedVerifierKey { reason };
    let (name, rest) = vkey
        .split_once('+')
        .ok_or(malformed("no '+' after the key name"))?;
    let (id_hex, key_base64) = rest
        .split_once('+')
        .ok_or(malformed("no '+' after the key ID"))?;
    check_key_name(name)?;
    let is_lower_hex = |byte: u8| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte);
    if id_hex.len() != 8 || !id_hex.bytes().all(is_lower_hex) {
        return Err(malformed("the key ID is not 8 lowercase hex digits"));
    }
    let stated = u32::from_str_radix(id_hex, 16)
        .map_err(|_| malformed("the key ID is not 8 lowercase hex digits"))?;
    let key = BASE64
        .decode(key_base64)
        .map_err(|_| malformed("the key is not standard base64"))?;
    let (&found, public_key) = key.split_first().ok_or(malformed("the key is empty"))?;
    if found != signature_type {
        return Err(Error::UnexpectedSignatureType {
            expected: signature_type,
            found,
        });
    }
    let public_key: [u8; PUBLIC_KEY_LEN] = public_key
        .try_into()
        .map_err(|_| malformed("the public key is not 32 bytes"))?;
    let computed = key_id(name, signature_type, &public_key);
    if stated != computed {
        return Err(Error::KeyIdMismatch {
            name: name.to_owned(),
            stated,
            computed,
        });
    }
    Ok((name, public_key))
}

/// The verifier key `<name>+<hex key ID>+<base64(signature_type || public_key)>`.
pub(crate) fn format_vkey(
    name: &str,
    key_id: u32,
    signature_type: u8,
    public_key: &[u8],
) -> String {
    let mut key = Vec::with_capacity(1 + public_key.len());
    key.push(signature_type);
    key.extend_from_slice(public_key);
    format!("{name}+{key_id:08x}+{}", BASE64.encode(key))
}

/// One signature line of a note, of any signature type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The key ID.
    pub key_id: u32,
    /// What follows the key ID: for Ed25519, the 64-byte signature of the note text.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The signature line, `— <name> <base64(key ID || signature)>`, with its final newline.
    pub fn to_line(&self) -> String {
        let mut payload = Vec::with_capacity(4 + self.signature.len());
        payload.extend_from_slice(&self.key_id.to_be_bytes());
        payload.extend_from_slice(&self.signature);
        format!(
            "{SIGNATURE_LINE_PREFIX}{} {}\n",
            self.name,
            BASE64.encode(payload)
        )
    }

    /// Reads one signature line, without its newline.
    fn from_line(line: &str) -> Result<Self, Error> {
        let malformed = || Error::MalformedSignatureLine {
            line: line.to_owned(),
        };
        let rest = line
            .strip_prefix(SIGNATURE_LINE_PREFIX)
            .ok_or_else(malformed)?;
        let (name, payload) = rest.split_once(' ').ok_or_else(malformed)?;
        check_key_name(name).map_err(|_| malformed())?;
        let payload = BASE64.decode(payload).map_err(|_| malformed())?;
        // Four bytes of key ID and at least one byte of signature.
        if payload.len() < 5 {
            return Err(malformed());
        }
        let (id, signature) = payload.split_at(4);
        let mut key_id = [0; 4];
        key_id.copy_from_slice(id);
        Ok(NoteSignature {
            name: name.to_owned(),
            key_id: u32::from_be_bytes(key_id),
            signature: signature.to_vec(),
        })
    }
}

/// A note split into its text and its signatures, none of them verified yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedNote<'a> {
    /// The text, with its final newline.
    pub text: &'a str,
    /// The signatures, in the order of their lines.
    pub signatures: Vec<NoteSignature>,
}

/// A note whose signatures by known keys all verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The text, with its final newline.
    pub text: String,
    /// The names of the known keys whose signatures verified, in the order of their lines.
    pub verified_by: Vec<String>,
    /// The signatures of keys not given to [`open`], in the order of their lines, unverified.
    pub unknown_signatures: Vec<NoteSignature>,
}

/// Signs `text` with every one of `signers`, in their order.
///
/// The text must end in a newline and hold no ASCII control character but newline.
pub fn sign(text: &str, signers: &[&Signer]) -> Result<String, Error> {
    check_text(text)?;
    if signers.is_empty() {
        return Err(Error::NoSigners);
    }
    for (position, signer) in signers.iter().enumerate() {
        let same_key = |other: &&Signer| other.name == signer.name && other.key_id == signer.key_id;
        if signers[..position].iter().any(same_key) {
            return Err(Error::DuplicateSignature {
                name: signer.name.clone(),
                key_id: signer.key_id,
            });
        }
    }
    Ok(sign_checked(text, signers))
}

/// Signs a text already known to be valid note text.
pub(crate) fn sign_checked(text: &str, signers: &[&Signer]) -> String {
    let mut note = String::with_capacity(text.len() + 1 + signers.len() * 120);
    note.push_str(text);
    note.push('\n');
    for signer in signers {
        let line = NoteSignature {
            name: signer.name.clone(),
            key_id: signer.key_id,
            signature: signer.sign_bytes(text.as_bytes()).to_vec(),
        };
        note.push_str(&line.to_line());
    }
    note
}

/// Checks that `text` can be the text of a note: it ends in a newline and holds no ASCII
/// control character but newline.
pub(crate) fn check_text(text: &str) -> Result<(), Error> {
    if !text.ends_with('\n') {
        return Err(Error::TextNotNewlineTerminated);
    }
    check_no_control_characters(text)
}

/// Checks that `text` holds no ASCII control character but newline.
pub(crate) fn check_no_control_characters(text: &str) -> Result<(), Error> {
    match text.bytes().position(|byte| byte < 0x20 && byte != b'\n') {
        Some(offset) => Err(Error::ControlCharacter { offset }),
        None => Ok(()),
    }
}

/// Splits a note into its text and its signature lines, checking their syntax but no signature.
///
/// The text ends at the last blank line of the note (C2SP signed-note, "Format").
pub fn parse(note: &str) -> Result<ParsedNote<'_>, Error> {
    check_no_control_characters(note)?;
    let blank_line = note.rfind("\n\n").ok_or(Error::MissingSignatureBlock)?;
    let (text, block) = (&note[..=blank_line], &note[blank_line + 2..]);
    if block.is_empty() {
        return Err(Error::MissingSignatureBlock);
    }
    let mut signatures = Vec::new();
    let mut rest = block;
    while !rest.is_empty() {
        let Some((line, next)) = rest.split_once('\n') else {
            // The last line does not end in a newline: the note was cut short.
            return Err(Error::MalformedSignatureLine {
                line: rest.to_owned(),
            });
        };
        if signatures.len() == MAX_SIGNATURES {
            return Err(Error::TooManySignatures {
                limit: MAX_SIGNATURES,
            });
        }
        signatures.push(NoteSignature::from_line(line)?);
        rest = next;
    }
    Ok(ParsedNote { text, signatures })
}

/// Opens a note: checks its syntax, verifies every signature by one of `verifiers` and keeps
/// the others, unverified.
///
/// A signature belongs to a verifier when both its key name and its key ID match; signatures
/// that match only one of them are someone else's. The note is rejected when a signature of a
/// known key does not verify ([`Error::InvalidSignature`]), when a known key signed it twice
/// ([`Error::DuplicateSignature`]), or when no known key signed it
/// ([`Error::NoVerifiedSignature`]).
pub fn open(note: &str, verifiers: &[Verifier]) -> Result<Opened, Error> {
    let parsed = parse(note)?;
    let mut verified_by = Vec::new();
    let mut verified_keys: Vec<(&str, u32)> = Vec::new();
    let mut unknown_signatures = Vec::new();
    for signature in parsed.signatures {
        let known = verifiers.iter().find(|verifier| {
            verifier.name == signature.name && verifier.key_id == signature.key_id
        });
        let Some(verifier) = known else {
            unknown_signatures.push(signature);
            continue;
        };
        if verified_keys.contains(&(verifier.name.as_str(), verifier.key_id)) {
            return Err(Error::DuplicateSignature {
                name: signature.name,
                key_id: signature.key_id,
            });
        }
        if !verifier.verifies(parsed.text, &signature.signature) {
            return Err(Error::InvalidSignature {
                name: signature.name,
                key_id: signature.key_id,
            });
        }
        verified_keys.push((verifier.name.as_str(), verifier.key_id));
        verified_by.push(signature.name);
    }
    if verified_by.is_empty() {
        return Err(Error::NoVerifiedSignature);
    }
    Ok(Opened {
        text: parsed.text.to_owned(),
        verified_by,
        unknown_signatures,
    })
}
