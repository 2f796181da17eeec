//! The checkpointer: signs a C2SP checkpoint of the department's audit log every
//! `checkpoint_interval_ms` when the log grew, stores it, and submits the latest checkpoint to
//! the log's witnesses until each has cosigned it (C2SP tlog-witness). A witness that is down or
//! refuses never holds up appends or checkpoints: its cosignature is simply missing, which an
//! auditor requiring it will notice.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use civitas_audit::checkpoint::{Checkpoint, open_checkpoint_with_witnesses, sign_checkpoint};
use civitas_audit::merkle::Hash;
use civitas_audit::note::Signer;
use civitas_audit::witness::AddCheckpoint;
use civitas_store::Store;
use tokio::sync::watch;

use super::{SetupError, Witness, proofs};
use crate::clock::Clock;

pub(super) struct Checkpointer {
    pub(super) store: Store,
    pub(super) log: String,
    pub(super) origin: String,
    pub(super) signer: Signer,
    pub(super) clock: Arc<dyn Clock>,
    /// The size of the latest stored checkpoint, if any (an empty log gets one of size 0).
    pub(super) signed: Option<u64>,
    pub(super) interval: Duration,
    pub(super) witnesses: Arc<RwLock<Vec<Witness>>>,
    /// The tree size each witness last cosigned (by witness name), as far as this process knows.
    pub(super) accepted: HashMap<String, u64>,
    pub(super) client: reqwest::Client,
}

/// How long a witness has to answer.
pub(super) const WITNESS_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a witness did not cosign.
#[derive(Debug, thiserror::Error)]
enum WitnessError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("the witness answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the witness's cosignature does not verify: {0}")]
    BadCosignature(civitas_audit::Error),
    #[error(transparent)]
    Setup(#[from] SetupError),
}

impl Checkpointer {
    pub(super) async fn run(mut self, head: watch::Receiver<(u64, Hash)>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let (size, root) = *head.borrow();
            if self.signed.is_none_or(|signed| size > signed)
                && let Err(error) = self.sign(size, root).await
            {
                tracing::error!(%error, log = %self.log, "cannot store an audit checkpoint");
            }
            self.cosign_latest().await;
            // The appender has stopped (the service is shutting down).
            if head.has_changed().is_err() {
                break;
            }
        }
    }

    async fn sign(&mut self, size: u64, root: Hash) -> Result<(), SetupError> {
        let checkpoint = Checkpoint::new(&self.origin, size, root)?;
        let note = sign_checkpoint(&checkpoint, &self.signer);
        self.store
            .audit_put_checkpoint(&self.log, size, &note, self.clock.now())
            .await?;
        self.signed = Some(size);
        Ok(())
    }

    /// Submits the latest checkpoint to every witness that has not cosigned it yet.
    async fn cosign_latest(&mut self) {
        let witnesses: Vec<Witness> = self
            .witnesses
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if witnesses.is_empty() {
            return;
        }
        let latest = match self.store.audit_latest_checkpoint(&self.log).await {
            Ok(Some(latest)) => latest,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(%error, log = %self.log, "cannot read the latest checkpoint");
                return;
            }
        };
        let (size, note) = latest;
        for witness in witnesses {
            let name = witness.verifier.name().to_owned();
            if self.accepted.get(&name) == Some(&size) {
                continue;
            }
            match self.submit(&witness, size, &note).await {
                Ok(line) => {
                    if let Err(error) = self
                        .store
                        .audit_put_cosignature(&self.log, size, &name, &line)
                        .await
                    {
                        tracing::error!(%error, witness = %name, "cannot store a cosignature");
                        continue;
                    }
                    self.accepted.insert(name, size);
                }
                Err(error) => {
                    tracing::warn!(%error, witness = %name, url = %witness.url, size, "no cosignature");
                }
            }
        }
    }

    /// Asks `witness` to cosign `note` (of `size` entries): its cosignature line. A witness that
    /// knows another size than assumed says so (409), and gets a proof from that size.
    async fn submit(
        &self,
        witness: &Witness,
        size: u64,
        note: &str,
    ) -> Result<String, WitnessError> {
        let name = witness.verifier.name();
        let mut old_size = self.accepted.get(name).copied().unwrap_or(0);
        for attempt in 0..2 {
            let proof = proofs::consistency_proof(&self.store, &self.log, old_size.min(size), size)
                .await
                .map_err(SetupError::from)?;
            let request = AddCheckpoint {
                old_size,
                proof,
                note: note.to_owned(),
            };
            let response = self
                .client
                .post(format!("{}/audit/v1/witness/add-checkpoint", witness.url))
                .header("content-type", "text/plain; charset=utf-8")
                .body(request.to_body())
                .send()
                .await?;
            let status = response.status().as_u16();
            let body = response.text().await?;
            match status {
                200 => {
                    let line = body.lines().next().unwrap_or_default();
                    let line = format!("{line}\n");
                    open_checkpoint_with_witnesses(
                        &format!("{note}{line}"),
                        &self.signer.verifier(),
                        &self.origin,
                        std::slice::from_ref(&witness.verifier),
                        1,
                    )
                    .map_err(WitnessError::BadCosignature)?;
                    return Ok(line);
                }
                409 if attempt == 0 => match body.trim().parse::<u64>() {
                    Ok(known) if known <= size => old_size = known,
                    _ => return Err(WitnessError::Refused { status, body }),
                },
                _ => return Err(WitnessError::Refused { status, body }),
            }
        }
        Err(WitnessError::Refused {
            status: 409,
            body: "the witness's size changed twice".to_owned(),
        })
    }
}
