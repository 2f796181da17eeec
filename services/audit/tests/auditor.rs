//! The auditor against honest logs and a tamper matrix: every way a log can lie about its
//! entries, its tiles, its checkpoint, its cosignatures or its history must be caught, with a
//! message that names the problem and where it is.
//!
//! Each log is built in memory (a [`MemoryTree`], its tiles from [`tile_bytes`], its entry
//! bundles, a signed and cosigned checkpoint) and served from a map of paths. Every key comes
//! from a fixed seed and every time is a constant.

use std::collections::HashMap;
use std::sync::LazyLock;

use civitas_audit::Error;
use civitas_audit::auditor::{Policy, Report, Source, State, verify};
use civitas_audit::checkpoint::{Checkpoint, CosignatureVerifier, cosign, sign_checkpoint};
use civitas_audit::merkle::{EMPTY_ROOT, HASH_LEN, Hash, MemoryTree, leaf_hash};
use civitas_audit::note::{self, Signer};
use civitas_audit::tiles::{decode_bundle, encode_bundle, tile_bytes, tiles_for_size};

/// The origin, and key name, of the log under test.
const ORIGIN: &str = "civitas.example/transport";
/// The key names of the two witnesses.
const BROKER: &str = "civitas.example/broker";
const ENVIRONMENT: &str = "civitas.example/environment";
/// When the witnesses cosign, in seconds since the Unix epoch (2026-01-01T00:00:00Z).
const TIME: u64 = 1_767_225_600;

/// A log of this many entries has three full level 0 tiles, a partial one of 232 hashes, and a
/// partial level 1 tile of 3 hashes.
const SIZE: u64 = 1000;

/// A log served from memory, by path.
type Served = HashMap<String, Vec<u8>>;

fn signer(name: &str, seed: u8) -> Signer {
    Signer::from_seed(name, &[seed; 32]).expect("a valid name and seed")
}

static LOG_KEY: LazyLock<Signer> = LazyLock::new(|| signer(ORIGIN, 1));
static BROKER_KEY: LazyLock<Signer> = LazyLock::new(|| signer(BROKER, 2));
static ENVIRONMENT_KEY: LazyLock<Signer> = LazyLock::new(|| signer(ENVIRONMENT, 3));
/// Not the broker's key, under the broker's name.
static IMPOSTOR_KEY: LazyLock<Signer> = LazyLock::new(|| signer(BROKER, 9));

/// Both witnesses are known; `required` of them must have cosigned.
fn policy(required: usize) -> Policy {
    Policy {
        log: LOG_KEY.verifier(),
        origin: ORIGIN.to_owned(),
        witnesses: vec![
            CosignatureVerifier::of(&BROKER_KEY),
            CosignatureVerifier::of(&ENVIRONMENT_KEY),
        ],
        required_witnesses: required,
    }
}

/// Entry `index` of a history: entries of different histories differ, and entries vary in
/// length.
fn entry(history: &str, index: u64) -> Vec<u8> {
    let mut entry = format!("{history}: event {index}").into_bytes();
    entry.resize(entry.len() + (index % 7) as usize, b'.');
    entry
}

/// The entry check of every run: an entry must say which one it is.
fn says_its_index(index: u64, entry: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(entry);
    if text
        .trim_end_matches('.')
        .ends_with(&format!(" event {index}"))
    {
        Ok(())
    } else {
        Err(format!("{text:?} is not event {index}"))
    }
}

/// A log whose entries are those of history "A" up to index `fork_at`, then those of
/// `history_after`.
struct Log {
    entries: Vec<Vec<u8>>,
    tree: MemoryTree,
}

impl Log {
    fn new(size: u64) -> Self {
        Log::forked(size, size, "A")
    }

    fn forked(size: u64, fork_at: u64, history_after: &str) -> Self {
        let mut tree = MemoryTree::new();
        let entries: Vec<Vec<u8>> = (0..size)
            .map(|index| entry(if index < fork_at { "A" } else { history_after }, index))
            .collect();
        for entry in &entries {
            tree.append(entry);
        }
        Log { entries, tree }
    }

    fn root(&self, size: u64) -> Hash {
        self.tree.root(size).expect("the tree holds `size` leaves")
    }

    /// The log as it is served at `size`: its tiles, its entry bundles, and its checkpoint,
    /// signed and cosigned by the broker.
    fn serve(&self, size: u64) -> Served {
        let mut served = Served::new();
        for level in tiles_for_size(size) {
            for tile in level.tiles() {
                let bytes = tile_bytes(&self.tree, tile).expect("the tree has the tile");
                served.insert(tile.path(), bytes);
                if let Some(bundle) = tile.entry_bundle() {
                    let first = (bundle.index() * 256) as usize;
                    let entries = &self.entries[first..first + usize::from(bundle.width())];
                    let bytes = encode_bundle(entries).expect("entries fit a bundle");
                    served.insert(bundle.path(), bytes);
                }
            }
        }
        served.insert(
            "checkpoint".to_owned(),
            checkpoint_note(size, &self.root(size), &[&BROKER_KEY]).into_bytes(),
        );
        served
    }
}

/// A checkpoint of `ORIGIN`, signed by the log and cosigned by `witnesses`.
fn checkpoint_note(size: u64, root: &Hash, witnesses: &[&Signer]) -> String {
    let checkpoint = Checkpoint::new(ORIGIN, size, *root).expect("a valid checkpoint");
    witnesses
        .iter()
        .fold(sign_checkpoint(&checkpoint, &LOG_KEY), |note, witness| {
            cosign(&note, witness, TIME).expect("a cosignable checkpoint")
        })
}

/// The honest log of `SIZE` entries, built once.
static HONEST: LazyLock<Log> = LazyLock::new(|| Log::new(SIZE));

fn run(served: &mut Served, state: Option<&State>) -> Result<(Report, State), Error> {
    verify(served, &policy(1), state, says_its_index)
}

/// Runs the auditor and checks its message, or that it passed.
fn check(served: &mut Served, state: Option<&State>, expected: &str) {
    let outcome = match run(served, state) {
        Ok(_) => "Ok".to_owned(),
        Err(error) => error.to_string(),
    };
    assert_eq!(outcome, expected);
}

/// The state of an honest run over `served`.
fn state_after(served: &mut Served) -> State {
    match run(served, None) {
        Ok((_, state)) => state,
        Err(error) => panic!("the honest run failed: {error}"),
    }
}

// Tampering tools.

fn edit_entries(served: &mut Served, bundle: &str, edit: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let bytes = served.get_mut(bundle).expect("the bundle is served");
    let mut entries = decode_bundle(bytes).expect("the bundle decodes");
    edit(&mut entries);
    *bytes = encode_bundle(&entries).expect("entries fit a bundle");
}

fn set_hash(served: &mut Served, tile: &str, position: usize, hash: &Hash) {
    let bytes = served.get_mut(tile).expect("the tile is served");
    bytes[position * HASH_LEN..(position + 1) * HASH_LEN].copy_from_slice(hash);
}

fn flip_hash_byte(served: &mut Served, tile: &str, position: usize) {
    let bytes = served.get_mut(tile).expect("the tile is served");
    bytes[position * HASH_LEN + 5] ^= 0x40;
}

fn edit_checkpoint(served: &mut Served, edit: impl FnOnce(&str) -> String) {
    let bytes = served
        .get_mut("checkpoint")
        .expect("the checkpoint is served");
    let note = String::from_utf8(bytes.clone()).expect("a UTF-8 note");
    *bytes = edit(&note).into_bytes();
}

/// The key ID of the log's key, as signature errors print it.
fn log_key_id() -> String {
    format!("{:08x}", LOG_KEY.key_id())
}

// Honest logs.

#[test]
fn honest_logs_of_every_shape_pass() {
    // Empty; one partial tile; one full tile; a full and a partial level 0 tile; two levels.
    for size in [0, 1, 2, 255, 256, 257, 511, 512, 1000] {
        let log = Log::new(size);
        let (report, state) =
            run(&mut log.serve(size), None).unwrap_or_else(|error| panic!("size {size}: {error}"));
        assert_eq!(report.origin, ORIGIN);
        assert_eq!((report.size, report.entries_checked), (size, size));
        assert_eq!(report.root, log.root(size), "size {size}");
        assert_eq!(report.cosigned_by.len(), 1);
        assert_eq!(report.cosigned_by[0].witness, BROKER);
        assert_eq!(report.cosigned_by[0].time, TIME);
        assert_eq!(report.extends, None);
        assert_eq!((state.size(), *state.root()), (size, log.root(size)));
    }
}

#[test]
fn every_entry_is_handed_to_the_entry_check_once_in_order() {
    let mut seen = Vec::new();
    let result = verify(&mut HONEST.serve(SIZE), &policy(1), None, |index, entry| {
        seen.push((index, entry.to_vec()));
        Ok(())
    });
    assert!(result.is_ok(), "{result:?}");
    let expected: Vec<(u64, Vec<u8>)> = (0..SIZE).map(|index| (index, entry("A", index))).collect();
    assert!(seen == expected, "{} entries seen", seen.len());
}

#[test]
fn an_entry_the_entry_check_refuses_fails_the_run() {
    let result = verify(&mut HONEST.serve(SIZE), &policy(1), None, |index, _| {
        if index == 700 {
            Err("not a record".to_owned())
        } else {
            Ok(())
        }
    });
    assert_eq!(
        result.map(|_| ()).map_err(|error| error.to_string()),
        Err("entry 700: not a record".to_owned())
    );
}

/// A first run without state, then runs as the log grows, each remembering the last: every
/// one passes, proves the new tree extends the remembered one, and updates the state.
#[test]
fn runs_with_state_follow_the_log_as_it_grows() {
    let log = Log::new(SIZE);
    let mut state: Option<State> = None;
    for size in [0, 1, 3, 255, 256, 600, 600, 767, 768, 1000] {
        let (report, next) = run(&mut log.serve(size), state.as_ref())
            .unwrap_or_else(|error| panic!("size {size}: {error}"));
        assert_eq!(
            report.extends,
            state.as_ref().map(State::size),
            "size {size}"
        );
        assert_eq!((next.size(), *next.root()), (size, log.root(size)));
        assert_eq!(
            next.checkpoint(),
            checkpoint_note(size, &log.root(size), &[&BROKER_KEY])
        );
        state = Some(next);
    }
}

/// Proving that the tree extends the remembered one fetches only the tiles the proof needs.
#[test]
fn the_consistency_proof_fetches_only_the_tiles_it_needs() {
    struct Recording(Served, Vec<String>);
    impl Source for Recording {
        fn get(&mut self, path: &str) -> Result<Option<Vec<u8>>, Error> {
            self.1.push(path.to_owned());
            Ok(self.0.get(path).cloned())
        }
    }
    let state = state_after(&mut HONEST.serve(600));
    let mut source = Recording(HONEST.serve(SIZE), Vec::new());
    let result = verify(&mut source, &policy(1), Some(&state), says_its_index);
    assert!(result.is_ok(), "{result:?}");
    // The checkpoint; the proof from 600 to 1000 (the subtrees [512, 576), [576, 592), [592,
    // 600), [600, 608), [608, 640), [640, 768) and [768, 1000) and [0, 512) for the old root);
    // then the right edge of the tree, and every full tile with its entry bundle.
    let expected = [
        "checkpoint",
        "tile/0/002",
        "tile/0/003.p/232",
        "tile/1/000.p/3",
        "tile/0/003.p/232",
        "tile/1/000.p/3",
        "tile/0/000",
        "tile/entries/000",
        "tile/0/001",
        "tile/entries/001",
        "tile/0/002",
        "tile/entries/002",
        "tile/entries/003.p/232",
    ];
    assert_eq!(source.1, expected);
}

// The tamper matrix: one log of 1,000 entries, tampered with one way at a time.

/// A way to tamper with the served log, and the message it must be caught with.
struct Tamper {
    name: &'static str,
    tamper: fn(&mut Served),
    expected: &'static str,
}

const TAMPERS: &[Tamper] = &[
    Tamper {
        name: "honest",
        tamper: |_| {},
        expected: "Ok",
    },
    // Entries.
    Tamper {
        name: "flipped byte in an entry",
        tamper: |served| edit_entries(served, "tile/entries/000", |entries| entries[17][3] ^= 1),
        expected: "entry 17 does not match its leaf hash in tile/0/000",
    },
    Tamper {
        name: "flipped byte in an entry of the partial bundle",
        tamper: |served| {
            edit_entries(served, "tile/entries/003.p/232", |entries| {
                entries[231][0] ^= 0x20;
            });
        },
        expected: "entry 999 does not match its leaf hash in tile/0/003.p/232",
    },
    Tamper {
        name: "two entries swapped",
        tamper: |served| edit_entries(served, "tile/entries/001", |entries| entries.swap(4, 9)),
        expected: "entry 260 does not match its leaf hash in tile/0/001",
    },
    Tamper {
        name: "two entries swapped across bundles",
        tamper: |served| {
            let last = decode_bundle(&served["tile/entries/000"]).expect("decodes")[255].clone();
            let first = decode_bundle(&served["tile/entries/001"]).expect("decodes")[0].clone();
            edit_entries(served, "tile/entries/000", |entries| entries[255] = first);
            edit_entries(served, "tile/entries/001", |entries| entries[0] = last);
        },
        expected: "entry 255 does not match its leaf hash in tile/0/000",
    },
    Tamper {
        name: "an entry appended to the partial bundle",
        tamper: |served| {
            edit_entries(served, "tile/entries/003.p/232", |entries| {
                entries.push(entry("A", 1000));
            });
        },
        expected: "tile/entries/003.p/232: 21 bytes follow the last entry of the bundle, at byte \
                   3946",
    },
    // Truncation.
    Tamper {
        name: "missing entry bundle",
        tamper: |served| _ = served.remove("tile/entries/001"),
        expected: "tile/entries/001: not served (404)",
    },
    Tamper {
        name: "entry dropped from the partial bundle",
        tamper: |served| {
            edit_entries(served, "tile/entries/003.p/232", |entries| {
                _ = entries.pop()
            });
        },
        expected: "tile/entries/003.p/232: the entry bundle has 231 entries, but its width is \
                   232",
    },
    Tamper {
        name: "entry bundle cut inside an entry",
        tamper: |served| {
            let bytes = served.get_mut("tile/entries/002").expect("served");
            bytes.truncate(bytes.len() - 3);
        },
        expected: "tile/entries/002: the entry at byte 4332 declares 16 bytes, but only 13 \
                   remain",
    },
    Tamper {
        name: "checkpoint claims more than the tiles have",
        tamper: |served| {
            let mut shorter = HONEST.serve(990);
            shorter.insert("checkpoint".to_owned(), served["checkpoint"].clone());
            *served = shorter;
        },
        expected: "tile/0/003.p/232: not served (404)",
    },
    Tamper {
        name: "missing full tile",
        tamper: |served| _ = served.remove("tile/0/001"),
        expected: "tile/0/001: not served (404)",
    },
    Tamper {
        name: "tile cut short",
        tamper: |served| {
            let bytes = served.get_mut("tile/0/001").expect("served");
            bytes.truncate(bytes.len() - HASH_LEN);
        },
        expected: "tile/0/001: a tile of this width has 8192 bytes, but 8160 were given",
    },
    // Tiles.
    Tamper {
        name: "flipped byte in a full level 0 tile",
        tamper: |served| flip_hash_byte(served, "tile/0/002", 100),
        expected: "tile/0/002 does not hash to hash 2 of tile/1/000.p/3",
    },
    Tamper {
        name: "flipped byte in the partial level 0 tile",
        tamper: |served| flip_hash_byte(served, "tile/0/003.p/232", 7),
        expected: "tile/0/003.p/232, tile/1/000.p/3 do not hash to the checkpoint's root",
    },
    Tamper {
        name: "flipped byte in the level 1 tile",
        tamper: |served| flip_hash_byte(served, "tile/1/000.p/3", 1),
        expected: "tile/0/003.p/232, tile/1/000.p/3 do not hash to the checkpoint's root",
    },
    // Forged entries: the entry and the hashes above it rewritten, up to some level.
    Tamper {
        name: "forged entry, its level 0 hash recomputed",
        tamper: |served| {
            let forged = entry("A", 17).into_iter().rev().collect::<Vec<u8>>();
            set_hash(served, "tile/0/000", 17, &leaf_hash(&forged));
            edit_entries(served, "tile/entries/000", |entries| entries[17] = forged);
        },
        expected: "tile/0/000 does not hash to hash 0 of tile/1/000.p/3",
    },
    Tamper {
        name: "forged entry, its level 0 and level 1 hashes recomputed",
        tamper: |served| {
            let forged = entry("A", 17).into_iter().rev().collect::<Vec<u8>>();
            set_hash(served, "tile/0/000", 17, &leaf_hash(&forged));
            edit_entries(served, "tile/entries/000", |entries| entries[17] = forged);
            let mut tree = MemoryTree::new();
            let leaves = served["tile/0/000"].as_chunks::<HASH_LEN>().0.to_vec();
            leaves
                .into_iter()
                .for_each(|leaf| _ = tree.append_leaf_hash(leaf));
            set_hash(
                served,
                "tile/1/000.p/3",
                0,
                &tree.root(256).expect("256 leaves"),
            );
        },
        expected: "tile/0/003.p/232, tile/1/000.p/3 do not hash to the checkpoint's root",
    },
    Tamper {
        name: "forged entry in the partial bundle, its level 0 hash recomputed",
        tamper: |served| {
            let forged = b"A: event 900, forged".to_vec();
            set_hash(served, "tile/0/003.p/232", 900 - 768, &leaf_hash(&forged));
            edit_entries(served, "tile/entries/003.p/232", |entries| {
                entries[900 - 768] = forged;
            });
        },
        expected: "tile/0/003.p/232, tile/1/000.p/3 do not hash to the checkpoint's root",
    },
    // The checkpoint.
    Tamper {
        name: "missing checkpoint",
        tamper: |served| _ = served.remove("checkpoint"),
        expected: "checkpoint: not served (404)",
    },
    Tamper {
        name: "checkpoint not UTF-8",
        tamper: |served| served.get_mut("checkpoint").expect("served")[0] = 0xff,
        expected: "checkpoint: not UTF-8 text",
    },
    Tamper {
        name: "checkpoint size edited",
        tamper: |served| edit_checkpoint(served, |note| note.replacen("\n1000\n", "\n999\n", 1)),
        expected: "checkpoint: the signature by key civitas.example/transport+{log_key_id} does \
                   not verify",
    },
    Tamper {
        name: "checkpoint root edited",
        tamper: |served| {
            let root = base64_of(&HONEST.root(SIZE));
            let other = base64_of(&HONEST.root(999));
            edit_checkpoint(served, |note| note.replacen(&root, &other, 1));
        },
        expected: "checkpoint: the signature by key civitas.example/transport+{log_key_id} does \
                   not verify",
    },
    Tamper {
        name: "checkpoint re-signed by another key",
        tamper: |served| {
            let checkpoint =
                Checkpoint::new(ORIGIN, SIZE, HONEST.root(SIZE)).expect("a valid checkpoint");
            let note = sign_checkpoint(&checkpoint, &signer(ORIGIN, 42));
            let note = cosign(&note, &BROKER_KEY, TIME).expect("cosignable");
            served.insert("checkpoint".to_owned(), note.into_bytes());
        },
        expected: "checkpoint: the note is signed by no known key",
    },
    Tamper {
        name: "checkpoint of another origin",
        tamper: |served| {
            let other = signer("civitas.example/water", 1);
            let checkpoint = Checkpoint::new("civitas.example/water", SIZE, HONEST.root(SIZE))
                .expect("a valid checkpoint");
            let note = cosign(&sign_checkpoint(&checkpoint, &other), &BROKER_KEY, TIME);
            served.insert(
                "checkpoint".to_owned(),
                note.expect("cosignable").into_bytes(),
            );
        },
        expected: "checkpoint: the note is signed by no known key",
    },
    // Cosignatures.
    Tamper {
        name: "stripped cosignature",
        tamper: |served| {
            let note = checkpoint_note(SIZE, &HONEST.root(SIZE), &[]);
            served.insert("checkpoint".to_owned(), note.into_bytes());
        },
        expected: "checkpoint: 0 known witnesses cosigned the checkpoint, but 1 are required",
    },
    Tamper {
        name: "forged cosignature by another key under the witness's name",
        tamper: |served| {
            let note = checkpoint_note(SIZE, &HONEST.root(SIZE), &[&IMPOSTOR_KEY]);
            served.insert("checkpoint".to_owned(), note.into_bytes());
        },
        expected: "checkpoint: 0 known witnesses cosigned the checkpoint, but 1 are required",
    },
    Tamper {
        name: "forged cosignature by another key under the witness's name and key ID",
        tamper: |served| {
            let note = checkpoint_note(SIZE, &HONEST.root(SIZE), &[&IMPOSTOR_KEY]);
            let note = with_witness_key_id(&note, &CosignatureVerifier::of(&BROKER_KEY));
            served.insert("checkpoint".to_owned(), note.into_bytes());
        },
        expected: "checkpoint: the cosignature of civitas.example/broker does not verify",
    },
    Tamper {
        name: "cosignature copied from another checkpoint",
        tamper: |served| {
            let older = checkpoint_note(999, &HONEST.root(999), &[&BROKER_KEY]);
            let cosignature = older.lines().last().expect("a cosignature line");
            let note = checkpoint_note(SIZE, &HONEST.root(SIZE), &[]);
            served.insert(
                "checkpoint".to_owned(),
                format!("{note}{cosignature}\n").into_bytes(),
            );
        },
        expected: "checkpoint: the cosignature of civitas.example/broker does not verify",
    },
];

fn base64_of(hash: &Hash) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(hash)
}

/// The note with the key ID of its last signature replaced by `witness`'s.
fn with_witness_key_id(note: &str, witness: &CosignatureVerifier) -> String {
    let parsed = note::parse(note).expect("a note");
    let mut signatures = parsed.signatures.clone();
    if let Some(last) = signatures.last_mut() {
        last.key_id = witness.key_id();
    }
    let lines: String = signatures
        .iter()
        .map(note::NoteSignature::to_line)
        .collect();
    format!("{}\n{lines}", parsed.text)
}

/// Serves `log` tampered with each way of `tampers` in turn, and checks each message.
fn check_tampers(log: &Served, tampers: &[Tamper]) {
    let mut failures = Vec::new();
    for Tamper {
        name,
        tamper,
        expected,
    } in tampers
    {
        let mut served = log.clone();
        tamper(&mut served);
        let expected = expected.replace("{log_key_id}", &log_key_id());
        let outcome = match run(&mut served, None) {
            Ok(_) => "Ok".to_owned(),
            Err(error) => error.to_string(),
        };
        if outcome != expected {
            failures.push(format!(
                "{name}:\n  got      {outcome}\n  expected {expected}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn tamper_matrix() {
    check_tampers(&HONEST.serve(SIZE), TAMPERS);
}

#[test]
fn two_cosignatures_required_one_given() {
    let mut served = HONEST.serve(SIZE);
    let result = verify(&mut served, &policy(2), None, says_its_index);
    assert_eq!(
        result.map(|_| ()).map_err(|error| error.to_string()),
        Err("checkpoint: 1 known witnesses cosigned the checkpoint, but 2 are required".to_owned())
    );
    let note = checkpoint_note(SIZE, &HONEST.root(SIZE), &[&BROKER_KEY, &ENVIRONMENT_KEY]);
    served.insert("checkpoint".to_owned(), note.into_bytes());
    let (report, _) = verify(&mut served, &policy(2), None, says_its_index)
        .unwrap_or_else(|error| panic!("{error}"));
    let witnesses: Vec<&str> = report
        .cosigned_by
        .iter()
        .map(|c| c.witness.as_str())
        .collect();
    assert_eq!(witnesses, [BROKER, ENVIRONMENT]);
}

#[test]
fn a_failing_source_fails_the_run() {
    struct Failing;
    impl Source for Failing {
        fn get(&mut self, path: &str) -> Result<Option<Vec<u8>>, Error> {
            Err(Error::Fetch {
                path: path.to_owned(),
                source: "connection refused".into(),
            })
        }
    }
    let result = verify(&mut Failing, &policy(1), None, says_its_index);
    assert_eq!(
        result.map(|_| ()).map_err(|error| error.to_string()),
        Err("could not fetch checkpoint".to_owned())
    );
}

// History: what the auditor saw before.

/// A state, an honest log that was seen, then the log that is served, and the message.
#[test]
fn rewritten_history_and_replayed_checkpoints() {
    // (remembered size, served log, served size, expected)
    let cases: [(u64, Log, u64, &str); 8] = [
        (600, Log::new(SIZE), SIZE, "Ok"),
        (SIZE, Log::new(SIZE), SIZE, "Ok"),
        // Rewritten history, same size.
        (
            SIZE,
            Log::forked(SIZE, 500, "C"),
            SIZE,
            "the tree of 1000 is not an extension of the remembered tree of 1000 (fork)",
        ),
        // Rewritten history, then grown.
        (
            600,
            Log::forked(SIZE, 5, "C"),
            SIZE,
            "the tree of 1000 is not an extension of the remembered tree of 600 (fork)",
        ),
        (
            600,
            Log::forked(SIZE, 599, "C"),
            SIZE,
            "the tree of 1000 is not an extension of the remembered tree of 600 (fork)",
        ),
        // Rewritten only after what was seen: an honest extension.
        (600, Log::forked(SIZE, 600, "C"), SIZE, "Ok"),
        // Replayed old checkpoints, with the old tiles.
        (
            12,
            Log::new(SIZE),
            10,
            "checkpoint size 10 is older than the remembered 12 (rollback)",
        ),
        (
            SIZE,
            Log::new(SIZE),
            0,
            "checkpoint size 0 is older than the remembered 1000 (rollback)",
        ),
    ];
    for (remembered, served, served_size, expected) in cases {
        let state = state_after(&mut Log::new(remembered).serve(remembered));
        let mut served = served.serve(served_size);
        let outcome = match run(&mut served, Some(&state)) {
            Ok(_) => "Ok".to_owned(),
            Err(error) => error.to_string(),
        };
        assert_eq!(outcome, expected, "from {remembered} to {served_size}");
    }
}

/// Tiles that lie in the consistency proof are caught there, and named.
#[test]
fn tiles_of_the_consistency_proof_are_checked_against_the_new_root() {
    let state = state_after(&mut HONEST.serve(600));
    let mut served = HONEST.serve(SIZE);
    flip_hash_byte(&mut served, "tile/0/002", 80);
    check(
        &mut served,
        Some(&state),
        "tile/0/002, tile/0/003.p/232, tile/1/000.p/3 do not hash to the checkpoint's root",
    );
}

// The state file.

#[test]
fn the_state_round_trips_through_json() {
    let state = state_after(&mut HONEST.serve(SIZE));
    let json = state.to_json();
    let loaded = State::from_json(&json, &policy(1)).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(loaded, state);
    assert!(json.starts_with("{\n  \"origin\": \"civitas.example/transport\",\n  \"size\": 1000,"));
    assert!(json.ends_with("}\n"));
}

#[test]
fn a_state_of_another_log_or_edited_is_rejected() {
    let json = state_after(&mut HONEST.serve(SIZE)).to_json();
    let edited_size = json.replacen("\"size\": 1000", "\"size\": 999", 1);
    let other_origin = Policy {
        origin: "civitas.example/water".to_owned(),
        ..policy(1)
    };
    let other_key = Policy {
        log: signer(ORIGIN, 42).verifier(),
        ..policy(1)
    };
    let cases: [(&str, &Policy, String); 6] = [
        (&json, &policy(1), "Ok".to_owned()),
        (
            &json,
            &other_origin,
            "the audit state does not belong to this log: it is of the log \
             \"civitas.example/transport\", not \"civitas.example/water\""
                .to_owned(),
        ),
        (
            &json,
            &other_key,
            "the audit state does not belong to this log: its checkpoint: the note is signed by \
             no known key"
                .to_owned(),
        ),
        (
            &edited_size,
            &policy(1),
            "the audit state does not belong to this log: its size and root are not those of \
             its checkpoint"
                .to_owned(),
        ),
        (
            "{}",
            &policy(1),
            "the audit state cannot be read: missing field `origin` at line 1 column 2".to_owned(),
        ),
        (
            &json.replacen("\"root\": \"", "\"root\": \"x", 1),
            &policy(1),
            format!(
                "the audit state cannot be read: \"x{}\" is not a base64 SHA-256 root hash",
                base64_of(&HONEST.root(SIZE))
            ),
        ),
    ];
    for (json, policy, expected) in cases {
        let outcome = match State::from_json(json, policy) {
            Ok(_) => "Ok".to_owned(),
            Err(error) => error.to_string(),
        };
        assert_eq!(outcome, expected);
    }
    // A state handed to another log's run is rejected before anything is fetched.
    let state = State::from_json(&json, &policy(1)).unwrap_or_else(|error| panic!("{error}"));
    let result = verify(
        &mut Served::new(),
        &other_origin,
        Some(&state),
        says_its_index,
    );
    assert_eq!(
        result.map(|_| ()).map_err(|error| error.to_string()),
        Err(
            "the audit state does not belong to this log: it is of the log \
             \"civitas.example/transport\", not \"civitas.example/water\""
                .to_owned()
        )
    );
}

/// The empty tree's checkpoint must carry the empty tree's root.
#[test]
fn an_empty_tree_with_another_root_fails() {
    let mut served = Served::new();
    let note = checkpoint_note(0, &EMPTY_ROOT, &[&BROKER_KEY]);
    served.insert("checkpoint".to_owned(), note.into_bytes());
    check(&mut served, None, "Ok");
    let note = checkpoint_note(0, &leaf_hash(b""), &[&BROKER_KEY]);
    served.insert("checkpoint".to_owned(), note.into_bytes());
    check(
        &mut served,
        None,
        "no tiles (an empty tree) do not hash to the checkpoint's root",
    );
}

// A larger log: three tile levels, full tiles above level 0.

/// 70,000 entries: 273 full level 0 tiles and a partial one of 112, a full level 1 tile and a
/// partial one of 17, and a partial level 2 tile of 1.
const LARGE: u64 = 70_000;

static LARGE_LOG: LazyLock<(Log, Served)> = LazyLock::new(|| {
    let log = Log::new(LARGE);
    let served = log.serve(LARGE);
    (log, served)
});

#[test]
fn a_large_log_passes_and_its_upper_tiles_are_checked() {
    let (log, served) = &*LARGE_LOG;
    let (report, _) = run(&mut served.clone(), None).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        (report.root, report.entries_checked),
        (log.root(LARGE), LARGE)
    );
    check_tampers(served, LARGE_TAMPERS);
}

const LARGE_TAMPERS: &[Tamper] = &[
    Tamper {
        name: "a full level 1 tile",
        tamper: |served| flip_hash_byte(served, "tile/1/000", 200),
        expected: "tile/1/000 does not hash to hash 0 of tile/2/000.p/1",
    },
    Tamper {
        name: "a full level 0 tile under a full level 1 tile",
        tamper: |served| flip_hash_byte(served, "tile/0/100", 0),
        expected: "tile/0/100 does not hash to hash 100 of tile/1/000",
    },
    Tamper {
        name: "a full level 0 tile under the partial level 1 tile",
        tamper: |served| flip_hash_byte(served, "tile/0/270", 255),
        expected: "tile/0/270 does not hash to hash 14 of tile/1/001.p/17",
    },
    Tamper {
        name: "the partial level 1 tile",
        tamper: |served| flip_hash_byte(served, "tile/1/001.p/17", 16),
        expected: "tile/0/273.p/112, tile/1/001.p/17, tile/2/000.p/1 do not hash to the \
                   checkpoint's root",
    },
    Tamper {
        name: "an entry deep in the log",
        tamper: |served| edit_entries(served, "tile/entries/253", |entries| entries[232][0] ^= 1),
        expected: "entry 65000 does not match its leaf hash in tile/0/253",
    },
];

#[test]
fn a_large_log_extends_a_remembered_small_one() {
    let state = state_after(&mut LARGE_LOG.0.serve(600));
    let (report, state) =
        run(&mut LARGE_LOG.1.clone(), Some(&state)).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((report.extends, report.entries_checked), (Some(600), LARGE));
    assert_eq!(state.size(), LARGE);
}
