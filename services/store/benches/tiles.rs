//! Reading an audit log's leaf hashes a tile at a time, as the tiles endpoint and proofs do: the
//! level-0 hashes of every full tile (256 leaves) of a log of 65,536 entries, three rounds.
//!
//! `cargo bench -p civitas-store --bench tiles` runs on a temporary SQLite file;
//! `DATABASE_URL=postgres://…/db cargo bench -p civitas-store --bench tiles` on an existing,
//! empty PostgreSQL database (the log is appended once and reused by later runs).

use std::io::Write;
use std::time::Instant;

use civitas_store::Store;

const LOG: &str = "bench";
const LEAVES: u64 = 65_536;
const TILE: u64 = 256;
const BATCH: u64 = 1_000;

fn leaf_hash(index: u64) -> [u8; 32] {
    let mut hash = [0; 32];
    hash[..8].copy_from_slice(&index.to_be_bytes());
    hash
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let directory = tempfile::tempdir()?;
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}/tiles.db", directory.path().display()));
    let store = Store::open(&url).await?;
    let mut size = store.audit_size(LOG).await?;
    while size < LEAVES {
        let end = (size + BATCH).min(LEAVES);
        let entries: Vec<Vec<u8>> = (size..end).map(|i| i.to_be_bytes().to_vec()).collect();
        let hashes: Vec<(u8, u64, [u8; 32])> = (size..end).map(|i| (0, i, leaf_hash(i))).collect();
        store.audit_append(LOG, size, &entries, &hashes).await?;
        size = end;
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} backend, a log of {LEAVES} leaves",
        store.backend_name()
    )?;
    for round in 1..=3 {
        let started = Instant::now();
        for tile in 0..LEAVES / TILE {
            let asked: Vec<(u8, u64)> = (tile * TILE..(tile + 1) * TILE).map(|i| (0, i)).collect();
            let hashes = store.audit_hashes(LOG, &asked).await?;
            if hashes
                .iter()
                .enumerate()
                .any(|(offset, hash)| *hash != Some(leaf_hash(tile * TILE + offset as u64)))
            {
                return Err(format!("tile {tile} read back wrong").into());
            }
        }
        let elapsed = started.elapsed();
        writeln!(
            out,
            "round {round}: {} tiles in {:.1} ms, {:.3} ms per tile",
            LEAVES / TILE,
            elapsed.as_secs_f64() * 1e3,
            elapsed.as_secs_f64() * 1e3 / (LEAVES / TILE) as f64
        )?;
    }
    Ok(())
}
