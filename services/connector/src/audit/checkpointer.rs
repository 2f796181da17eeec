//! The checkpointer and the log's witnesses.
//!
//! The [`Checkpointer`] signs a C2SP checkpoint of the department's audit log every
//! `checkpoint_interval_ms` when the log grew, stores it, and publishes it to the witness tasks.
//!
//! Each witness of the log has a task of its own ([`Cosigners::spawn`]) that submits the latest
//! checkpoint to it (C2SP tlog-witness `add-checkpoint`) with a consistency proof from the size
//! the witness last cosigned, checks the cosignature it answers with and stores it, to be served
//! with the checkpoint. A witness that answers 409 with the size it knows gets one more request,
//! with a proof from that size. Failures are retried with a growing delay, also when the log does
//! not grow, until the witness has cosigned the latest checkpoint. Witnesses never hold up the
//! appender or the checkpointer, nor each other: a witness that is down or slow only leaves its
//! cosignature missing, which an auditor requiring it will notice.

use std::sync::Arc;
use std::time::Duration;

use civitas_audit::checkpoint::{Checkpoint, sign_checkpoint};
use civitas_audit::merkle::Hash;
use civitas_audit::note::{Signer, Verifier};
use civitas_audit::witness::{AddCheckpoint, SIZE_MEDIA_TYPE, cosignature_lines, parse_size_body};
use civitas_store::Store;
use tokio::sync::watch;

use super::{SetupError, Witness, proofs};
use crate::clock::Clock;

/// How long a witness has to answer one request.
const WITNESS_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest wait between two submissions to a witness that fails.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// The largest answer read from a witness: a few signature lines.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// The latest stored checkpoint: its size and note (`None` before the first one).
type Latest = Option<(u64, String)>;

pub(super) struct Checkpointer {
    pub(super) store: Store,
    pub(super) log: String,
    pub(super) origin: String,
    pub(super) signer: Signer,
    pub(super) clock: Arc<dyn Clock>,
    /// The size of the latest stored checkpoint, if any (an empty log gets one of size 0).
    pub(super) signed: Option<u64>,
    pub(super) interval: Duration,
    /// Where each new checkpoint goes to the witness tasks.
    pub(super) published: watch::Sender<Latest>,
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
        // Nobody listens once every witness task has stopped; that is not an error.
        let _ = self.published.send(Some((size, note)));
        Ok(())
    }
}

/// Starts the witness tasks of a log: what each of them needs.
pub(super) struct Cosigners {
    store: Store,
    log: String,
    verifier: Verifier,
    latest: watch::Receiver<Latest>,
    client: reqwest::Client,
    /// The first wait after a failure (the checkpoint interval); it doubles up to
    /// [`MAX_RETRY_DELAY`].
    retry: Duration,
}

impl Cosigners {
    /// The witness tasks of the log `log` whose checkpoint key is `verifier`, following the
    /// checkpoints published on `latest`.
    pub(super) fn new(
        store: Store,
        log: String,
        verifier: Verifier,
        latest: watch::Receiver<Latest>,
        retry: Duration,
    ) -> Result<Cosigners, SetupError> {
        let client = reqwest::Client::builder()
            .timeout(WITNESS_TIMEOUT)
            .build()
            .map_err(SetupError::WitnessClient)?;
        Ok(Cosigners {
            store,
            log,
            verifier,
            latest,
            client,
            retry: retry.min(MAX_RETRY_DELAY),
        })
    }

    /// Starts submitting the log's checkpoints to `witness` (on the current Tokio runtime). The
    /// task ends when the checkpointer does.
    pub(super) fn spawn(&self, witness: Witness) {
        let submitter = Submitter {
            store: self.store.clone(),
            log: self.log.clone(),
            verifier: self.verifier.clone(),
            key: format!(
                "{}+{:08x}",
                witness.verifier.name(),
                witness.verifier.key_id()
            ),
            witness,
            client: self.client.clone(),
        };
        tokio::spawn(submitter.run(self.latest.clone(), self.retry));
    }
}

/// Why a witness did not cosign a checkpoint.
#[derive(Debug, thiserror::Error)]
enum SubmitError {
    #[error("the witness cannot be reached: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the witness answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the witness knows a tree of {known} entries, more than the {size} signed")]
    WitnessAhead { known: u64, size: u64 },
    #[error("the witness's answer holds no valid cosignature: {0}")]
    BadCosignature(civitas_audit::Error),
    #[error("the witness's answer is larger than {MAX_ANSWER_BYTES} bytes")]
    AnswerTooLarge,
    #[error(transparent)]
    Proof(#[from] proofs::ProofError),
    #[error(transparent)]
    Store(#[from] civitas_store::Error),
}

/// Submits the log's checkpoints to one witness.
struct Submitter {
    store: Store,
    log: String,
    /// The log's checkpoint key, to check the cosignatures against the checkpoint.
    verifier: Verifier,
    witness: Witness,
    /// The witness's key as stored with its cosignatures: name and key ID.
    key: String,
    client: reqwest::Client,
}

impl Submitter {
    async fn run(self, mut latest: watch::Receiver<Latest>, retry: Duration) {
        // The size the witness last cosigned, as far as this task knows; a 409 corrects it.
        let mut old_size = 0;
        let mut cosigned: Option<u64> = None;
        let mut delay = retry;
        loop {
            let current = latest.borrow_and_update().clone();
            if let Some((size, note)) = current
                && cosigned != Some(size)
            {
                match self
                    .cosign(&mut old_size, size, &note, cosigned.is_none())
                    .await
                {
                    Ok(()) => {
                        cosigned = Some(size);
                        old_size = size;
                        delay = retry;
                    }
                    Err(error) => {
                        tracing::warn!(
                            %error,
                            log = %self.log,
                            witness = %self.key,
                            url = %self.witness.url,
                            size,
                            retry_in_ms = delay.as_millis(),
                            "a witness did not cosign the audit checkpoint"
                        );
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(MAX_RETRY_DELAY);
                        // The checkpointer has stopped (the service is shutting down).
                        if latest.has_changed().is_err() {
                            break;
                        }
                        continue;
                    }
                }
            }
            if latest.changed().await.is_err() {
                break;
            }
        }
    }

    /// Gets the witness's cosignature of the checkpoint `note` of `size` entries and stores it.
    /// After a restart (`first`), a cosignature already stored is not asked for again.
    async fn cosign(
        &self,
        old_size: &mut u64,
        size: u64,
        note: &str,
        first: bool,
    ) -> Result<(), SubmitError> {
        if first {
            let stored = self.store.audit_cosignatures(&self.log, size).await?;
            if cosignature_lines(
                note,
                &stored.concat(),
                &self.verifier,
                &self.witness.verifier,
            )
            .is_ok()
            {
                *old_size = size;
                return Ok(());
            }
        }
        let lines = self.submit(old_size, size, note).await?;
        self.store
            .audit_put_cosignature(&self.log, size, &self.key, &lines)
            .await?;
        Ok(())
    }

    /// Asks the witness to cosign: its valid cosignature lines. A witness that knows another
    /// size than `old_size` says so (409) and gets one more request, with a proof from that size.
    async fn submit(
        &self,
        old_size: &mut u64,
        size: u64,
        note: &str,
    ) -> Result<String, SubmitError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            if *old_size > size {
                return Err(SubmitError::WitnessAhead {
                    known: *old_size,
                    size,
                });
            }
            let proof = if *old_size == 0 || *old_size == size {
                Vec::new()
            } else {
                proofs::consistency_proof(&self.store, &self.log, *old_size, size).await?
            };
            let request = AddCheckpoint {
                old_size: *old_size,
                proof,
                note: note.to_owned(),
            };
            let response = self
                .client
                .post(format!(
                    "{}/audit/v1/witness/add-checkpoint",
                    self.witness.url
                ))
                .header("content-type", "text/plain; charset=utf-8")
                .body(request.to_body())
                .send()
                .await?;
            let status = response.status().as_u16();
            let is_size = response
                .headers()
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.trim() == SIZE_MEDIA_TYPE);
            if response
                .content_length()
                .is_some_and(|length| length > MAX_ANSWER_BYTES as u64)
            {
                return Err(SubmitError::AnswerTooLarge);
            }
            let bytes = response.bytes().await?;
            if bytes.len() > MAX_ANSWER_BYTES {
                return Err(SubmitError::AnswerTooLarge);
            }
            let body = String::from_utf8_lossy(&bytes);
            match status {
                200 => {
                    return cosignature_lines(note, &body, &self.verifier, &self.witness.verifier)
                        .map_err(SubmitError::BadCosignature);
                }
                409 if is_size => match parse_size_body(&body) {
                    // Later attempts start from the size the witness named, whatever happens.
                    Some(known) => {
                        *old_size = known;
                        if attempts > 1 {
                            return Err(refused(status, &body));
                        }
                    }
                    None => return Err(refused(status, &body)),
                },
                _ => return Err(refused(status, &body)),
            }
        }
    }
}

/// A refusal, with the start of the witness's explanation.
fn refused(status: u16, body: &str) -> SubmitError {
    SubmitError::Refused {
        status,
        body: body.trim().chars().take(200).collect(),
    }
}
