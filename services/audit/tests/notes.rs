//! Signed notes, checkpoints and cosignatures, checked three ways: against the known answers
//! published with C2SP signed-note, tlog-checkpoint and tlog-cosignature and with the Go
//! reference implementation (golang.org/x/mod/sumdb/note), against an independent
//! implementation (the `signed_note` and `tlog_tiles` crates) in both directions, and against
//! a table of tampered notes, each of which must be rejected with its own error.
//!
//! Every key comes from a fixed seed, and every time is a constant.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use civitas_audit::Error;
use civitas_audit::checkpoint::{
    COSIGNATURE_V1_TYPE, Checkpoint, Cosignature, CosignatureVerifier, MAX_COSIGNATURE_TIME,
    cosign, open_checkpoint, open_checkpoint_with_witnesses, sign_checkpoint,
};
use civitas_audit::merkle::{EMPTY_ROOT, Hash, MemoryTree, leaf_hash};
use civitas_audit::note::{
    self, ED25519_TYPE, MAX_SIGNATURES, NoteSignature, Signer, Verifier, check_key_name,
};
use signed_note::Signer as _;

/// The origin, and key name, of the log under test.
const ORIGIN: &str = "civitas.example/broker";
/// When the first witness cosigns, in seconds since the Unix epoch (2026-01-01T00:00:00Z).
const TIME: u64 = 1_767_225_600;

/// A seed that depends on every bit of `label`.
fn seed(label: u8) -> [u8; 32] {
    std::array::from_fn(|index| label.wrapping_mul(151).wrapping_add(index as u8 * 7))
}

fn signer(name: &str, label: u8) -> Signer {
    Signer::from_seed(name, &seed(label)).expect("a valid name and seed")
}

/// The name of an error's variant, from its `Debug` form, or "Ok".
fn outcome<T>(result: &Result<T, Error>) -> String {
    match result {
        Ok(_) => "Ok".to_owned(),
        Err(error) => format!("{error:?}")
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

fn root_of(size: u64) -> Hash {
    let mut tree = MemoryTree::new();
    for index in 0..size {
        tree.append(format!("event {index}").as_bytes());
    }
    tree.root(size).expect("the tree holds `size` leaves")
}

// Known answers.

/// C2SP signed-note v1.0.0, "Verifier keys", "Example": the published verifier key verifies the
/// published note.
#[test]
fn signed_note_spec_example_verifies() {
    let vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    let note = "This is an example message.\n\n\u{2014} example.com/foo \
                Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    let verifier = Verifier::from_vkey(vkey).expect("the spec's vkey");
    assert_eq!(verifier.key_id(), 0x530d_903a);
    assert_eq!(verifier.to_vkey(), vkey);
    let opened = note::open(note, &[verifier]).expect("the spec's note verifies");
    assert_eq!(opened.text, "This is an example message.\n");
    assert_eq!(opened.verified_by, ["example.com/foo"]);
    assert!(opened.unknown_signatures.is_empty());
}

/// The example of the Go reference implementation, golang.org/x/mod/sumdb/note
/// (`note_test.go`, `TestSign`/`TestOpen`), which the `signed_note` crate repeats: from the
/// published private key, we derive the published key ID and verifier key and sign
/// byte-for-byte the published note (Ed25519 signatures are deterministic).
#[test]
fn go_reference_example_signs_byte_for_byte() {
    let skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    let peter = signer_from_skey(skey);
    assert_eq!(peter.key_id(), 0xc74f_20a3);
    assert_eq!(
        peter.verifier().to_vkey(),
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    );

    let text = "If you think cryptography is the answer to your problem,\n\
                then you don't know what your problem is.\n";
    let peter_line = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    let enoch_line = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";
    assert_eq!(
        note::sign(text, &[&peter]).expect("valid text"),
        format!("{text}\n{peter_line}")
    );

    let enoch =
        Verifier::from_vkey("EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop")
            .expect("the reference's vkey");
    let both = format!("{text}\n{peter_line}{enoch_line}");
    let opened = note::open(&both, &[enoch.clone(), peter.verifier()]).expect("both verify");
    assert_eq!(opened.verified_by, ["PeterNeumann", "EnochRoot"]);
    let opened = note::open(&both, &[enoch]).expect("Enoch's verifies");
    assert_eq!(opened.verified_by, ["EnochRoot"]);
    assert_eq!(opened.unknown_signatures.len(), 1);
    assert_eq!(opened.unknown_signatures[0].name, "PeterNeumann");
    assert_eq!(opened.unknown_signatures[0].key_id, 0xc74f_20a3);
}

/// C2SP tlog-cosignature, the cosigned checkpoint at the top: no key is published for it, so
/// only its reading is checked. The witness's payload starts with the timestamp 1679315147, the
/// one of the spec's example signed message.
#[test]
fn tlog_cosignature_spec_example_parses() {
    let example = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\
                   \u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
                   \u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";
    let parsed = note::parse(example).expect("the spec's note parses");
    let checkpoint = Checkpoint::parse(parsed.text).expect("the spec's checkpoint parses");
    assert_eq!(checkpoint.origin(), "example.com/behind-the-sofa");
    assert_eq!(checkpoint.size(), 20_852_163);
    assert_eq!(checkpoint.to_body(), parsed.text);
    let lines: Vec<_> = parsed
        .signatures
        .iter()
        .map(|signature| {
            (
                signature.name.as_str(),
                signature.key_id,
                signature.signature.len(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("example.com/behind-the-sofa", 0x033d_e0ae, 64),
            ("witness.example.com/w1", 0x8d66_cf3f, 72),
        ]
    );
    let time: [u8; 8] = parsed.signatures[1].signature[..8]
        .try_into()
        .expect("8 bytes");
    assert_eq!(u64::from_be_bytes(time), 1_679_315_147);
}

// Interoperability with the `signed_note` and `tlog_tiles` crates.

/// A deterministic stand-in for a random number generator, for `signed_note::generate_key`.
struct CountingRng(u8);

impl rand_core::RngCore for CountingRng {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }
    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }
    fn fill_bytes(&mut self, bytes: &mut [u8]) {
        for byte in bytes {
            self.0 = self.0.wrapping_mul(167).wrapping_add(13);
            *byte = self.0;
        }
    }
    fn try_fill_bytes(&mut self, bytes: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(bytes);
        Ok(())
    }
}

impl rand_core::CryptoRng for CountingRng {}

/// Our signer for the private key `PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>` of the Go
/// reference implementation and of `signed_note`.
fn signer_from_skey(skey: &str) -> Signer {
    // The base64 key may hold '+' too.
    let fields: Vec<&str> = skey.splitn(5, '+').collect();
    let [_, _, name, _, key] = fields[..] else {
        panic!("not a private key: {skey}");
    };
    let key = BASE64.decode(key).expect("base64");
    let seed: [u8; 32] = key[1..].try_into().expect("a 32-byte seed");
    Signer::from_seed(name, &seed).expect("a valid name")
}

/// A key made by `signed_note`, held by both implementations.
struct SharedKey {
    ours: Signer,
    theirs: signed_note::StandardSigner,
    their_verifier: signed_note::StandardVerifier,
    their_vkey: String,
}

fn shared_key(name: &str, label: u8) -> SharedKey {
    let (skey, vkey) = signed_note::generate_key(&mut CountingRng(label), name);
    SharedKey {
        ours: signer_from_skey(&skey),
        theirs: signed_note::StandardSigner::new(&skey).expect("their own key"),
        their_verifier: signed_note::StandardVerifier::new(&vkey).expect("their own vkey"),
        their_vkey: vkey,
    }
}

/// Same seed, same key: the key IDs, verifier keys and (for type 0x04) cosignature key IDs that
/// `signed_note` computes are ours.
#[test]
fn keys_match_signed_note() {
    let names = [
        ORIGIN,
        "civitas.example/connector/parking",
        "PeterNeumann",
        "x",
        "münchen.example/log",
        "oid/1.3.6.1.4.1.44363.47.1",
    ];
    for (label, name) in names.into_iter().enumerate() {
        let key = shared_key(name, label as u8);
        let ours = key.ours.verifier();
        assert_eq!(ours.to_vkey(), key.their_vkey, "{name}");
        let from_their_vkey = Verifier::from_vkey(&key.their_vkey).expect("their vkey");
        assert_eq!(from_their_vkey, ours, "{name}");
        assert_eq!(ours.key_id(), key.theirs.key_id(), "{name}");
        let mut typed_key = vec![ED25519_TYPE];
        typed_key.extend_from_slice(ours.public_key());
        assert_eq!(
            ours.key_id(),
            signed_note::key_id(name, &typed_key),
            "{name}"
        );
        typed_key[0] = COSIGNATURE_V1_TYPE;
        assert_eq!(
            CosignatureVerifier::of(&key.ours).key_id(),
            signed_note::key_id(name, &typed_key),
            "{name}"
        );
    }
}

/// Notes we sign open with `signed_note`, byte for byte the notes it signs, and the notes it
/// signs open with ours, for texts of every shape the format allows.
#[test]
fn notes_interoperate_with_signed_note() {
    let texts = [
        "one line\n",
        "\n",
        "several\nlines\n",
        "a blank line\n\ninside\n",
        "ends in a blank line\n\n",
        "\u{2014} looks like a signature line x08go/ZJkuBS9UG=\n",
        "unicode: Grüße, 東京, \u{1F6B2}\n",
        "trailing space \n",
    ];
    let alice = shared_key("civitas.example/alice", 1);
    let bob = shared_key("civitas.example/bob", 2);
    for text in texts {
        let ours = note::sign(text, &[&alice.ours, &bob.ours]).expect("valid text");

        let mut theirs = signed_note::Note::new(text.as_bytes(), &[]).expect("valid text");
        theirs
            .add_sigs(&[&alice.theirs, &bob.theirs])
            .expect("their signers");
        let theirs = String::from_utf8(theirs.to_bytes()).expect("UTF-8");
        assert_eq!(ours, theirs, "{text:?}");

        let parsed = signed_note::Note::from_bytes(ours.as_bytes()).expect("they parse ours");
        assert_eq!(parsed.text(), text.as_bytes());
        let known = signed_note::VerifierList::new(vec![Box::new(alice.their_verifier.clone())]);
        let (verified, unverified) = parsed.verify(&known).expect("they verify ours");
        assert_eq!(verified.len(), 1);
        assert_eq!(verified[0].name(), "civitas.example/alice");
        assert_eq!(unverified.len(), 1);
        assert_eq!(unverified[0].id(), bob.ours.key_id());

        let opened = note::open(&theirs, &[bob.ours.verifier()]).expect("we verify theirs");
        assert_eq!(opened.text, text);
        assert_eq!(opened.verified_by, ["civitas.example/bob"]);
        assert_eq!(opened.unknown_signatures.len(), 1);
        assert_eq!(opened.unknown_signatures[0].key_id, alice.theirs.key_id());
    }
}

fn their_checkpoint(checkpoint: &Checkpoint) -> tlog_tiles::Checkpoint {
    let extension: String = checkpoint
        .extensions()
        .iter()
        .map(|line| format!("{line}\n"))
        .collect();
    tlog_tiles::Checkpoint::new(
        checkpoint.origin(),
        checkpoint.size(),
        tlog_tiles::Hash(*checkpoint.root()),
        &extension,
    )
    .expect("a valid checkpoint")
}

/// Checkpoints we sign read and verify with `tlog_tiles` and `signed_note`, and the ones they
/// write and sign open with ours.
#[test]
fn checkpoints_interoperate_with_tlog_tiles() {
    let checkpoints = [
        Checkpoint::new(ORIGIN, 0, EMPTY_ROOT),
        Checkpoint::new(ORIGIN, 1, root_of(1)),
        Checkpoint::new(ORIGIN, 1000, root_of(1000)),
        Checkpoint::new(ORIGIN, u64::MAX, leaf_hash(b"the largest tree")),
        Checkpoint::with_extensions(
            ORIGIN,
            7,
            root_of(7),
            vec!["extension one".to_owned(), "— two".to_owned()],
        ),
    ];
    let log = shared_key(ORIGIN, 9);
    for checkpoint in checkpoints {
        let checkpoint = checkpoint.expect("a valid checkpoint");
        let body = checkpoint.to_body();
        let theirs = their_checkpoint(&checkpoint);
        assert_eq!(theirs.to_bytes(), body.as_bytes());

        let ours = sign_checkpoint(&checkpoint, &log.ours);
        let parsed = signed_note::Note::from_bytes(ours.as_bytes()).expect("they parse ours");
        let known = signed_note::VerifierList::new(vec![Box::new(log.their_verifier.clone())]);
        parsed.verify(&known).expect("they verify ours");
        let read = tlog_tiles::Checkpoint::from_bytes(parsed.text()).expect("they read ours");
        assert_eq!(read, theirs);

        let mut their_note = signed_note::Note::new(&theirs.to_bytes(), &[]).expect("valid");
        their_note.add_sigs(&[&log.theirs]).expect("their signer");
        let their_note = String::from_utf8(their_note.to_bytes()).expect("UTF-8");
        assert_eq!(their_note, ours);
        let opened = open_checkpoint(&their_note, &log.ours.verifier(), ORIGIN);
        assert_eq!(opened.expect("we open theirs"), checkpoint);
    }
}

/// A `signed_note` verifier of `cosignature/v1` cosignatures: `signed_note` 0.2 and
/// `tlog_tiles` 0.2 know no cosignatures, so this adapter builds the signed message of C2SP
/// tlog-cosignature ("Ed25519 signed message") and leaves the Ed25519 check to `signed_note`.
struct TheirCosignatureVerifier {
    name: String,
    key_id: u32,
    ed25519: signed_note::StandardVerifier,
}

impl TheirCosignatureVerifier {
    fn new(name: &str, key: &SharedKey) -> Self {
        let mut typed_key = vec![COSIGNATURE_V1_TYPE];
        typed_key.extend_from_slice(&key.ours.public_key());
        TheirCosignatureVerifier {
            name: name.to_owned(),
            key_id: signed_note::key_id(name, &typed_key),
            ed25519: key.their_verifier.clone(),
        }
    }
}

fn spec_cosignature_message(time: u64, body: &[u8]) -> Vec<u8> {
    let mut message = format!("cosignature/v1\ntime {time}\n").into_bytes();
    message.extend_from_slice(body);
    message
}

impl signed_note::Verifier for TheirCosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.key_id
    }
    fn verify(&self, body: &[u8], payload: &[u8]) -> bool {
        let Some((time, signature)) = payload.split_first_chunk::<8>() else {
            return false;
        };
        let message = spec_cosignature_message(u64::from_be_bytes(*time), body);
        self.ed25519.verify(&message, signature)
    }
}

/// A cosignature line made with `signed_note`'s Ed25519 signer over the C2SP tlog-cosignature
/// message.
fn their_cosignature(
    name: &str,
    key: &SharedKey,
    time: u64,
    body: &[u8],
) -> signed_note::Signature {
    let id = TheirCosignatureVerifier::new(name, key).key_id;
    let signature = key
        .theirs
        .sign(&spec_cosignature_message(time, body))
        .expect("Ed25519 signing");
    let payload = [time.to_be_bytes().as_slice(), &signature].concat();
    signed_note::Signature::new(name.to_owned(), id, payload).expect("a valid name")
}

/// Cosignatures we make verify with `signed_note` (through the adapter above), and the ones
/// made with `signed_note` verify with ours, extension lines included.
#[test]
fn cosignatures_interoperate_with_signed_note() {
    let log = shared_key(ORIGIN, 9);
    let w1 = shared_key("witness.example/w1", 21);
    let w2 = shared_key("witness.example/w2", 22);
    let checkpoint =
        Checkpoint::with_extensions(ORIGIN, 5, root_of(5), vec!["extension".to_owned()])
            .expect("a valid checkpoint");
    let body = checkpoint.to_body();

    let signed = sign_checkpoint(&checkpoint, &log.ours);
    let once = cosign(&signed, &w1.ours, TIME).expect("a checkpoint note");
    let ours = cosign(&once, &w2.ours, TIME + 7).expect("a checkpoint note");
    let parsed = signed_note::Note::from_bytes(ours.as_bytes()).expect("they parse ours");
    let known = signed_note::VerifierList::new(vec![
        Box::new(log.their_verifier.clone()),
        Box::new(TheirCosignatureVerifier::new("witness.example/w1", &w1)),
        Box::new(TheirCosignatureVerifier::new("witness.example/w2", &w2)),
    ]);
    let (verified, unverified) = parsed.verify(&known).expect("they verify ours");
    let names: Vec<_> = verified.iter().map(|signature| signature.name()).collect();
    assert_eq!(names, [ORIGIN, "witness.example/w1", "witness.example/w2"]);
    assert!(unverified.is_empty());
    let w1_line = Fixture::line(&ours, "witness.example/w1");
    let retimed = ours.replace(w1_line, &reencode(w1_line, |payload| payload[11] ^= 1));
    let retimed = signed_note::Note::from_bytes(retimed.as_bytes()).expect("they parse it");
    assert!(
        retimed.verify(&known).is_err(),
        "the adapter rejects a cosignature whose time changed"
    );

    let log_signature = signed_note::Signature::from_bytes(
        signed.lines().last().expect("a signature line").as_bytes(),
    )
    .expect("their parser reads our line");
    let theirs = signed_note::Note::new(
        body.as_bytes(),
        &[
            log_signature,
            their_cosignature("witness.example/w1", &w1, TIME, body.as_bytes()),
            their_cosignature("witness.example/w2", &w2, TIME + 7, body.as_bytes()),
        ],
    )
    .expect("valid");
    let theirs = String::from_utf8(theirs.to_bytes()).expect("UTF-8");
    assert_eq!(
        theirs, ours,
        "Ed25519 is deterministic, so the notes are the same"
    );
    let witnesses = [
        CosignatureVerifier::of(&w1.ours),
        CosignatureVerifier::of(&w2.ours),
    ];
    let opened =
        open_checkpoint_with_witnesses(&theirs, &log.ours.verifier(), ORIGIN, &witnesses, 2);
    let expected = vec![
        Cosignature {
            witness: "witness.example/w1".to_owned(),
            time: TIME,
        },
        Cosignature {
            witness: "witness.example/w2".to_owned(),
            time: TIME + 7,
        },
    ];
    assert_eq!(opened.expect("we verify theirs"), (checkpoint, expected));
}

// Rules on names, keys, texts and checkpoint bodies.

#[test]
fn key_names() {
    let cases = [
        ("civitas.example/broker", "Ok"),
        ("oid/1.3.6.1.4.1", "Ok"),
        ("münchen.example", "Ok"),
        ("\u{2014}", "Ok"),
        ("", "InvalidKeyName"),
        ("a b", "InvalidKeyName"),
        ("a\tb", "InvalidKeyName"),
        ("a\u{a0}b", "InvalidKeyName"),
        ("a\u{2003}b", "InvalidKeyName"),
        ("a\u{3000}b", "InvalidKeyName"),
        ("a+b", "InvalidKeyName"),
        ("+", "InvalidKeyName"),
    ];
    for (name, expected) in cases {
        assert_eq!(outcome(&check_key_name(name)), expected, "{name:?}");
        let from_seed = Signer::from_seed(name, &seed(1));
        assert_eq!(outcome(&from_seed), expected, "{name:?}");
        assert_eq!(outcome(&Verifier::new(name, [7; 32])), expected, "{name:?}");
        assert_eq!(
            outcome(&CosignatureVerifier::new(name, [7; 32])),
            expected,
            "{name:?}"
        );
    }
}

#[test]
fn verifier_keys() {
    let spec = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    let witness = CosignatureVerifier::of(&signer("witness.example/w1", 3)).to_vkey();
    let cases: Vec<(String, &str, &str)> = vec![
        (spec.to_owned(), "Ok", "UnexpectedSignatureType"),
        (witness.clone(), "UnexpectedSignatureType", "Ok"),
        (
            spec.replace("530d903a", "530d903b"),
            "KeyIdMismatch",
            "UnexpectedSignatureType",
        ),
        (
            spec.replace("530d903a", "530D903A"),
            "MalformedVerifierKey",
            "MalformedVerifierKey",
        ),
        (
            spec.replace("530d903a", "530d903"),
            "MalformedVerifierKey",
            "MalformedVerifierKey",
        ),
        (
            spec.replace("530d903a", "0x30d903a"),
            "MalformedVerifierKey",
            "MalformedVerifierKey",
        ),
        (
            spec.replace("example.com/foo", "example.com foo"),
            "InvalidKeyName",
            "InvalidKeyName",
        ),
        (
            spec.replace("example.com/foo+", "+"),
            "InvalidKeyName",
            "InvalidKeyName",
        ),
        (
            "example.com/foo".to_owned(),
            "MalformedVerifierKey",
            "MalformedVerifierKey",
        ),
        (
            "example.com/foo+530d903a".to_owned(),
            "MalformedVerifierKey",
            "MalformedVerifierKey",
        ),
        (
            format!("{spec}="),
            "MalformedVerifierKey",
            "MalformedVerifierKey",
        ),
        (
            spec.replace("+Aeky", "+Aek_"),
            "MalformedVerifierKey",
            "MalformedVerifierKey",
        ),
        (
            format!("a+00000000+{}", BASE64.encode([1; 32])),
            "MalformedVerifierKey",
            "UnexpectedSignatureType",
        ),
        (
            format!("a+00000000+{}", BASE64.encode([1; 34])),
            "MalformedVerifierKey",
            "UnexpectedSignatureType",
        ),
        (
            format!("a+00000000+{}", BASE64.encode([2; 33])),
            "UnexpectedSignatureType",
            "UnexpectedSignatureType",
        ),
    ];
    for (vkey, as_note_key, as_cosignature_key) in cases {
        let verifier = Verifier::from_vkey(&vkey);
        assert_eq!(outcome(&verifier), as_note_key, "{vkey}");
        if let Ok(verifier) = verifier {
            assert_eq!(verifier.to_vkey(), vkey);
        }
        let cosigner = CosignatureVerifier::from_vkey(&vkey);
        assert_eq!(outcome(&cosigner), as_cosignature_key, "{vkey}");
        if let Ok(cosigner) = cosigner {
            assert_eq!(cosigner.to_vkey(), vkey);
        }
    }
}

#[test]
fn signing_checks_its_input() {
    let alice = signer("civitas.example/alice", 1);
    let alice_again = signer("civitas.example/alice", 1);
    let alice_other_key = signer("civitas.example/alice", 2);
    let cases: [(&str, &[&Signer], &str); 9] = [
        ("text\n", &[&alice], "Ok"),
        ("text\n", &[&alice, &alice_other_key], "Ok"),
        ("text", &[&alice], "TextNotNewlineTerminated"),
        ("", &[&alice], "TextNotNewlineTerminated"),
        ("text\r\n", &[&alice], "ControlCharacter"),
        ("tab\there\n", &[&alice], "ControlCharacter"),
        ("nul\0\n", &[&alice], "ControlCharacter"),
        ("text\n", &[], "NoSigners"),
        ("text\n", &[&alice, &alice_again], "DuplicateSignature"),
    ];
    for (text, signers, expected) in cases {
        let note = note::sign(text, signers);
        assert_eq!(outcome(&note), expected, "{text:?}");
        if let Ok(note) = note {
            let verifiers: Vec<_> = signers.iter().map(|signer| signer.verifier()).collect();
            let opened = note::open(&note, &verifiers).expect("our own note opens");
            assert_eq!(opened.text, text);
            assert_eq!(opened.verified_by.len(), signers.len());
        }
    }
}

#[test]
fn signer_debug_shows_no_secret() {
    let alice = signer("civitas.example/alice", 1);
    let debug = format!("{alice:?}");
    assert_eq!(
        debug,
        format!(
            "Signer {{ name: \"civitas.example/alice\", key_id: {:08x}, .. }}",
            alice.key_id()
        )
    );
}

#[test]
fn checkpoint_bodies() {
    let root = BASE64.encode(root_of(3));
    let cases: Vec<(String, &str)> = vec![
        (format!("o\n3\n{root}\n"), "Ok"),
        (format!("o\n0\n{root}\n"), "Ok"),
        (format!("o\n18446744073709551615\n{root}\n"), "Ok"),
        (
            format!("civitas.example/broker\n3\n{root}\next\n— more\n"),
            "Ok",
        ),
        (format!("an origin with spaces\n3\n{root}\n"), "Ok"),
        (String::new(), "MalformedCheckpoint"),
        (format!("o\n3\n{root}"), "MalformedCheckpoint"),
        ("o\n3\n".to_owned(), "MalformedCheckpoint"),
        (format!("\n3\n{root}\n"), "MalformedCheckpoint"),
        (format!("o\n3\n{root}\n\n"), "MalformedCheckpoint"),
        (
            format!("o\n3\n{root}\next\n\nmore\n"),
            "MalformedCheckpoint",
        ),
        (format!("o\r\n3\n{root}\n"), "ControlCharacter"),
        (format!("o\n\n{root}\n"), "InvalidTreeSize"),
        (format!("o\n03\n{root}\n"), "InvalidTreeSize"),
        (format!("o\n00\n{root}\n"), "InvalidTreeSize"),
        (format!("o\n+3\n{root}\n"), "InvalidTreeSize"),
        (format!("o\n-0\n{root}\n"), "InvalidTreeSize"),
        (format!("o\n 3\n{root}\n"), "InvalidTreeSize"),
        (format!("o\n3 \n{root}\n"), "InvalidTreeSize"),
        (format!("o\n0x3\n{root}\n"), "InvalidTreeSize"),
        (format!("o\n\u{0663}\n{root}\n"), "InvalidTreeSize"),
        (
            format!("o\n18446744073709551616\n{root}\n"),
            "InvalidTreeSize",
        ),
        ("o\n3\n\n".to_owned(), "InvalidRootHash"),
        (
            format!("o\n3\n{}\n", root.trim_end_matches('=')),
            "InvalidRootHash",
        ),
        (
            format!("o\n3\n{}\n", BASE64.encode([1; 31])),
            "InvalidRootHash",
        ),
        (
            format!("o\n3\n{}\n", BASE64.encode([1; 33])),
            "InvalidRootHash",
        ),
        (
            format!("o\n3\n{}\n", BASE64.encode([0xff; 32]).replace('/', "_")),
            "InvalidRootHash",
        ),
        // "AQ...E=" with non-zero bits past the last byte: not the canonical encoding.
        (
            format!("o\n3\n{}F=\n", &BASE64.encode([1; 32])[..42]),
            "InvalidRootHash",
        ),
    ];
    for (body, expected) in cases {
        let checkpoint = Checkpoint::parse(&body);
        assert_eq!(outcome(&checkpoint), expected, "{body:?}");
        if let Ok(checkpoint) = checkpoint {
            assert_eq!(checkpoint.to_body(), body, "parsing and writing round-trip");
        }
    }
}

#[test]
fn checkpoint_fields() {
    let root = root_of(2);
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (ORIGIN, vec![], "Ok"),
        (ORIGIN, vec!["one", "two"], "Ok"),
        ("", vec![], "MalformedCheckpoint"),
        ("two\nlines", vec![], "MalformedCheckpoint"),
        ("tab\t", vec![], "ControlCharacter"),
        (ORIGIN, vec![""], "MalformedCheckpoint"),
        (ORIGIN, vec!["one\ntwo"], "MalformedCheckpoint"),
        (ORIGIN, vec!["bell\u{7}"], "ControlCharacter"),
    ];
    for (origin, extensions, expected) in cases {
        let extensions = extensions.into_iter().map(str::to_owned).collect();
        let checkpoint = Checkpoint::with_extensions(origin, 2, root, extensions);
        assert_eq!(outcome(&checkpoint), expected, "{origin:?}");
        if let Ok(checkpoint) = checkpoint {
            let parsed = Checkpoint::parse(&checkpoint.to_body()).expect("round-trip");
            assert_eq!(parsed, checkpoint);
        }
    }
}

#[test]
fn cosigning_checks_its_input() {
    let log = signer(ORIGIN, 1);
    let witness = signer("witness.example/w1", 21);
    let checkpoint = Checkpoint::new(ORIGIN, 4, root_of(4)).expect("valid");
    let signed = sign_checkpoint(&checkpoint, &log);
    let cosigned = cosign(&signed, &witness, TIME).expect("a checkpoint note");
    let plain_note = note::sign("not a checkpoint\n", &[&log]).expect("valid");
    let crowded = format!("{signed}{}", unknown_lines(MAX_SIGNATURES - 1));
    let cases: Vec<(&str, String, u64, &str)> = vec![
        ("a checkpoint", signed.clone(), TIME, "Ok"),
        ("at time 0", signed.clone(), 0, "Ok"),
        (
            "at the latest time",
            signed.clone(),
            MAX_COSIGNATURE_TIME,
            "Ok",
        ),
        (
            "after 2^63 - 1",
            signed.clone(),
            MAX_COSIGNATURE_TIME + 1,
            "CosignatureTimeOutOfRange",
        ),
        ("cosigned already", cosigned, TIME + 1, "DuplicateSignature"),
        ("not a checkpoint", plain_note, TIME, "MalformedCheckpoint"),
        (
            "not a note",
            checkpoint.to_body(),
            TIME,
            "MissingSignatureBlock",
        ),
        ("full of signatures", crowded, TIME, "TooManySignatures"),
    ];
    let witnesses = [CosignatureVerifier::of(&witness)];
    for (name, note, time, expected) in cases {
        let cosigned = cosign(&note, &witness, time);
        assert_eq!(outcome(&cosigned), expected, "{name}");
        if let Ok(cosigned) = cosigned {
            let (_, cosignatures) =
                open_checkpoint_with_witnesses(&cosigned, &log.verifier(), ORIGIN, &witnesses, 1)
                    .expect("our own cosignature verifies");
            assert_eq!(cosignatures[0].time, time, "{name}");
        }
    }
}

// Tampering.

/// A log, its witnesses and a cosigned checkpoint to tamper with.
struct Fixture {
    log: Signer,
    /// Another key under the log's name.
    impostor: Signer,
    w1: Signer,
    w2: Signer,
    /// A witness the reader does not know.
    w3: Signer,
    body: String,
    /// The checkpoint, signed by the log and cosigned by `w1` and `w2`.
    note: String,
    /// The checkpoint one leaf earlier, signed by the log and cosigned by `w1`.
    earlier: String,
}

impl Fixture {
    fn new() -> Self {
        let log = signer(ORIGIN, 1);
        let impostor = signer(ORIGIN, 2);
        let w1 = signer("witness.example/w1", 21);
        let w2 = signer("witness.example/w2", 22);
        let w3 = signer("witness.example/w3", 23);
        let checkpoint = Checkpoint::new(ORIGIN, 1234, root_of(1234)).expect("valid");
        let note = sign_checkpoint(&checkpoint, &log);
        let note = cosign(&note, &w1, TIME).expect("a checkpoint note");
        let note = cosign(&note, &w2, TIME + 7).expect("a checkpoint note");
        let earlier = Checkpoint::new(ORIGIN, 1233, root_of(1233)).expect("valid");
        let earlier = cosign(&sign_checkpoint(&earlier, &log), &w1, TIME - 60).expect("valid");
        Fixture {
            log,
            impostor,
            w1,
            w2,
            w3,
            body: checkpoint.to_body(),
            note,
            earlier,
        }
    }

    /// The line of `note` signed under `name`, with its newline.
    fn line<'a>(note: &'a str, name: &str) -> &'a str {
        let prefix = format!("\u{2014} {name} ");
        note.split_inclusive('\n')
            .find(|line| line.starts_with(&prefix))
            .expect("a line by that name")
    }

    fn log_line(&self) -> &str {
        Fixture::line(&self.note, ORIGIN)
    }

    fn w1_line(&self) -> &str {
        Fixture::line(&self.note, "witness.example/w1")
    }

    /// The note with the first occurrence of `old` replaced.
    fn replace(&self, old: &str, new: &str) -> String {
        assert!(self.note.contains(old), "{old:?} is in the note");
        self.note.replacen(old, new, 1)
    }
}

/// A signature line whose payload is that of `line` changed by `change`.
fn reencode(line: &str, change: impl FnOnce(&mut Vec<u8>)) -> String {
    let (head, payload) = line.trim_end().rsplit_once(' ').expect("a signature line");
    let mut payload = BASE64.decode(payload).expect("base64");
    change(&mut payload);
    format!("{head} {}\n", BASE64.encode(payload))
}

/// `line` with the ASCII character at `index` changed to another base64 character.
fn flip_char(line: &str, index: usize) -> String {
    let mut bytes = line.as_bytes().to_vec();
    bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ASCII changed for ASCII")
}

fn unknown_lines(count: usize) -> String {
    (0..count)
        .map(|index| {
            NoteSignature {
                name: format!("unknown.example/{index}"),
                key_id: index as u32,
                signature: vec![7; 64],
            }
            .to_line()
        })
        .collect()
}

/// The signature line of `signer` over `message`, under `name` and `key_id`.
fn forged_line(name: &str, key_id: u32, payload: Vec<u8>) -> String {
    NoteSignature {
        name: name.to_owned(),
        key_id,
        signature: payload,
    }
    .to_line()
}

fn cosignature_payload(signer: &Signer, time: u64, body: &str) -> Vec<u8> {
    // Signing through a one-signer note gives the Ed25519 signature of any message that ends in
    // a newline: here, the C2SP tlog-cosignature message.
    let message = format!("cosignature/v1\ntime {time}\n{body}");
    let note = note::sign(&message, &[signer]).expect("valid text");
    let line = note.lines().last().expect("a signature line");
    let (_, payload) = line.rsplit_once(' ').expect("a signature line");
    let signature = &BASE64.decode(payload).expect("base64")[4..];
    [time.to_be_bytes().as_slice(), signature].concat()
}

struct Tamper {
    what: &'static str,
    note: fn(&Fixture) -> String,
    required: usize,
    expected: &'static str,
}

#[test]
fn tampered_notes_are_rejected() {
    let fixture = Fixture::new();
    let w1_id = CosignatureVerifier::of(&fixture.w1).key_id();
    let cases = [
        Tamper {
            what: "nothing changed",
            note: |f| f.note.clone(),
            required: 2,
            expected: "Ok",
        },
        Tamper {
            what: "unknown signatures besides",
            note: |f| {
                let note = cosign(&f.note, &f.w3, TIME).expect("valid");
                format!("{note}{}", unknown_lines(3))
            },
            required: 2,
            expected: "Ok",
        },
        Tamper {
            what: "a byte of the origin flipped",
            note: |f| f.replace("civitas.example/broker\n", "civitas.examplE/broker\n"),
            required: 2,
            expected: "InvalidSignature",
        },
        Tamper {
            what: "a byte of the size flipped",
            note: |f| f.replace("\n1234\n", "\n1235\n"),
            required: 2,
            expected: "InvalidSignature",
        },
        Tamper {
            what: "a byte of the root flipped",
            note: |f| {
                let root = f.body.lines().nth(2).expect("a root line");
                f.replace(root, &flip_char(root, 20))
            },
            required: 2,
            expected: "InvalidSignature",
        },
        Tamper {
            what: "a line added to the text",
            note: |f| f.replace(&f.body, &format!("{}extension\n", f.body)),
            required: 2,
            expected: "InvalidSignature",
        },
        Tamper {
            what: "a byte of the log's signature flipped",
            note: |f| {
                let line = f.log_line();
                f.replace(line, &flip_char(line, line.len() - 30))
            },
            required: 2,
            expected: "InvalidSignature",
        },
        Tamper {
            what: "cut inside the last signature line",
            note: |f| f.note[..f.note.len() - 10].to_owned(),
            required: 2,
            expected: "MalformedSignatureLine",
        },
        Tamper {
            what: "cut after the text",
            note: |f| f.body.clone(),
            required: 2,
            expected: "MissingSignatureBlock",
        },
        Tamper {
            what: "blank line missing",
            note: |f| f.replace(&format!("{}\n", f.body), &f.body),
            required: 2,
            expected: "MissingSignatureBlock",
        },
        Tamper {
            what: "every signature stripped",
            note: |f| format!("{}\n", f.body),
            required: 2,
            expected: "MissingSignatureBlock",
        },
        Tamper {
            what: "the log's signature stripped",
            note: |f| f.replace(f.log_line(), ""),
            required: 2,
            expected: "NoVerifiedSignature",
        },
        Tamper {
            what: "signed by another key under the log's name",
            note: |f| {
                let impostor = note::sign(&f.body, &[&f.impostor]).expect("valid");
                f.replace(f.log_line(), Fixture::line(&impostor, ORIGIN))
            },
            required: 2,
            expected: "NoVerifiedSignature",
        },
        Tamper {
            what: "signed by another key under the log's name and key ID",
            note: |f| {
                let impostor = note::sign(&f.body, &[&f.impostor]).expect("valid");
                let log_id = f.log.key_id().to_be_bytes();
                let line = reencode(Fixture::line(&impostor, ORIGIN), |payload| {
                    payload[..4].copy_from_slice(&log_id);
                });
                f.replace(f.log_line(), &line)
            },
            required: 2,
            expected: "InvalidSignature",
        },
        Tamper {
            what: "the log's signature line twice",
            note: |f| f.replace(f.log_line(), &f.log_line().repeat(2)),
            required: 2,
            expected: "DuplicateSignature",
        },
        Tamper {
            what: "a hyphen for the em dash",
            note: |f| f.replace(f.log_line(), &f.log_line().replacen('\u{2014}', "-", 1)),
            required: 2,
            expected: "MalformedSignatureLine",
        },
        Tamper {
            what: "a signature that is not base64",
            note: |f| f.replace(f.log_line(), &f.log_line().replacen('=', "!", 1)),
            required: 2,
            expected: "MalformedSignatureLine",
        },
        Tamper {
            what: "a signature line without a signature",
            note: |f| format!("{}{}", f.note, forged_line("x.example", 1, Vec::new())),
            required: 2,
            expected: "MalformedSignatureLine",
        },
        Tamper {
            what: "carriage returns before newlines",
            note: |f| f.note.replace('\n', "\r\n"),
            required: 2,
            expected: "ControlCharacter",
        },
        Tamper {
            what: "more signature lines than read",
            note: |f| format!("{}{}", f.note, unknown_lines(MAX_SIGNATURES)),
            required: 2,
            expected: "TooManySignatures",
        },
        Tamper {
            what: "the log's key signing something else than a checkpoint",
            note: |f| note::sign("hello\n", &[&f.log]).expect("valid"),
            required: 0,
            expected: "MalformedCheckpoint",
        },
        Tamper {
            what: "a checkpoint of another origin, cosigned",
            note: |f| {
                let other = Checkpoint::new("civitas.example/connector", 1234, root_of(1234));
                let note = sign_checkpoint(&other.expect("valid"), &f.log);
                let note = cosign(&note, &f.w1, TIME).expect("valid");
                cosign(&note, &f.w2, TIME).expect("valid")
            },
            required: 2,
            expected: "OriginMismatch",
        },
        Tamper {
            what: "the cosignature of another checkpoint",
            note: |f| f.replace(f.w1_line(), Fixture::line(&f.earlier, "witness.example/w1")),
            required: 2,
            expected: "InvalidCosignature",
        },
        Tamper {
            what: "a cosignature's time changed",
            note: |f| {
                let line = reencode(f.w1_line(), |payload| payload[7] ^= 1);
                f.replace(f.w1_line(), &line)
            },
            required: 2,
            expected: "InvalidCosignature",
        },
        Tamper {
            what: "a cosignature's time past 2^63 - 1",
            note: |f| {
                let line = reencode(f.w1_line(), |payload| payload[4] |= 0x80);
                f.replace(f.w1_line(), &line)
            },
            required: 2,
            expected: "MalformedCosignature",
        },
        Tamper {
            what: "a cosignature without its time",
            note: |f| {
                let line = reencode(f.w1_line(), |payload| {
                    payload.drain(4..12);
                });
                f.replace(f.w1_line(), &line)
            },
            required: 2,
            expected: "MalformedCosignature",
        },
        Tamper {
            what: "a cosignature forged with another key",
            note: |f| {
                let id = CosignatureVerifier::of(&f.w1).key_id();
                let payload = cosignature_payload(&f.impostor, TIME, &f.body);
                f.replace(f.w1_line(), &forged_line("witness.example/w1", id, payload))
            },
            required: 2,
            expected: "InvalidCosignature",
        },
        Tamper {
            what: "a cosignature's signature flipped",
            note: |f| {
                let line = f.w1_line();
                f.replace(line, &flip_char(line, line.len() - 30))
            },
            required: 2,
            expected: "InvalidCosignature",
        },
        Tamper {
            what: "a cosignature stripped",
            note: |f| f.replace(f.w1_line(), ""),
            required: 2,
            expected: "NotEnoughCosignatures",
        },
        Tamper {
            what: "a cosignature line twice",
            note: |f| f.replace(f.w1_line(), &f.w1_line().repeat(2)),
            required: 2,
            expected: "DuplicateSignature",
        },
        Tamper {
            what: "fewer witnesses than required",
            note: |f| f.note.clone(),
            required: 3,
            expected: "NotEnoughCosignatures",
        },
        Tamper {
            what: "an unknown witness's cosignature counted",
            note: |f| cosign(&f.note, &f.w3, TIME).expect("valid"),
            required: 3,
            expected: "NotEnoughCosignatures",
        },
        Tamper {
            what: "a witness's plain note signature for its cosignature",
            note: |f| {
                let plain = note::sign(&f.body, &[&f.w1]).expect("valid");
                f.replace(f.w1_line(), Fixture::line(&plain, "witness.example/w1"))
            },
            required: 2,
            expected: "NotEnoughCosignatures",
        },
        Tamper {
            what: "the log's signature under a witness's name and cosignature key ID",
            note: |f| {
                let id = CosignatureVerifier::of(&f.w1).key_id();
                let line = reencode(f.log_line(), |payload| {
                    payload[..4].copy_from_slice(&id.to_be_bytes());
                });
                let line = line.replacen(ORIGIN, "witness.example/w1", 1);
                f.replace(f.w1_line(), &line)
            },
            required: 2,
            expected: "MalformedCosignature",
        },
    ];
    assert_ne!(
        w1_id,
        fixture.w1.key_id(),
        "a key has one ID per signature type"
    );

    let witnesses = [
        CosignatureVerifier::of(&fixture.w1),
        CosignatureVerifier::of(&fixture.w2),
    ];
    let log = fixture.log.verifier();
    for case in cases {
        let note = (case.note)(&fixture);
        let opened = open_checkpoint_with_witnesses(&note, &log, ORIGIN, &witnesses, case.required);
        assert_eq!(outcome(&opened), case.expected, "{}: {opened:?}", case.what);
    }
}

/// The details of a few rejections, beyond their variant.
#[test]
fn rejections_say_what_failed() {
    let fixture = Fixture::new();
    let witnesses = [
        CosignatureVerifier::of(&fixture.w1),
        CosignatureVerifier::of(&fixture.w2),
    ];
    let log = fixture.log.verifier();
    let open = |note: &str, origin: &str, required| {
        open_checkpoint_with_witnesses(note, &log, origin, &witnesses, required)
    };

    let cases = [
        (
            open(&fixture.note, "civitas.example/connector", 2),
            Error::OriginMismatch {
                expected: "civitas.example/connector".to_owned(),
                found: ORIGIN.to_owned(),
            },
        ),
        (
            open(&fixture.note, ORIGIN, 5),
            Error::NotEnoughCosignatures {
                required: 5,
                verified: 2,
            },
        ),
        (
            open(
                &fixture
                    .note
                    .replace(Fixture::line(&fixture.note, "witness.example/w2"), ""),
                ORIGIN,
                2,
            ),
            Error::NotEnoughCosignatures {
                required: 2,
                verified: 1,
            },
        ),
        (
            open(&fixture.note.replace("\n1234\n", "\n1235\n"), ORIGIN, 2),
            Error::InvalidSignature {
                name: ORIGIN.to_owned(),
                key_id: fixture.log.key_id(),
            },
        ),
        (
            open(
                &fixture.replace(fixture.w1_line(), &fixture.w1_line().repeat(2)),
                ORIGIN,
                2,
            ),
            Error::DuplicateSignature {
                name: "witness.example/w1".to_owned(),
                key_id: witnesses[0].key_id(),
            },
        ),
    ];
    for (result, expected) in cases {
        let error = result.expect_err("rejected");
        assert_eq!(format!("{error:?}"), format!("{expected:?}"));
    }

    // Opening a checkpoint without witnesses ignores cosignatures, broken or not.
    let retimed = reencode(fixture.w1_line(), |payload| payload[11] ^= 1);
    let retimed = fixture.note.replace(fixture.w1_line(), &retimed);
    assert_eq!(
        outcome(&open_checkpoint(&retimed, &log, ORIGIN)),
        "Ok",
        "cosignatures are not the log's"
    );
    assert_eq!(outcome(&open(&retimed, ORIGIN, 0)), "InvalidCosignature");
}

/// A witness's cosignatures over a growing log: each names the checkpoint it was made for.
#[test]
fn cosignatures_follow_the_log() {
    let log = signer(ORIGIN, 1);
    let witness = signer("witness.example/w1", 21);
    let witnesses = [CosignatureVerifier::of(&witness)];
    let mut tree = MemoryTree::new();
    let mut previous: Option<String> = None;
    for size in 1..=16u64 {
        tree.append(format!("event {size}").as_bytes());
        let checkpoint =
            Checkpoint::new(ORIGIN, size, tree.root(size).expect("stored")).expect("valid");
        let note = cosign(&sign_checkpoint(&checkpoint, &log), &witness, TIME + size)
            .expect("a checkpoint note");
        let (opened, cosignatures) =
            open_checkpoint_with_witnesses(&note, &log.verifier(), ORIGIN, &witnesses, 1)
                .expect("verifies");
        assert_eq!(opened, checkpoint);
        assert_eq!(cosignatures[0].time, TIME + size);
        if let Some(previous) = previous {
            // The previous checkpoint's cosignature does not carry over.
            let old = Fixture::line(&previous, "witness.example/w1");
            let new = Fixture::line(&note, "witness.example/w1");
            let swapped = note.replace(new, old);
            let result =
                open_checkpoint_with_witnesses(&swapped, &log.verifier(), ORIGIN, &witnesses, 1);
            assert_eq!(outcome(&result), "InvalidCosignature", "size {size}");
        }
        previous = Some(note);
    }
}
