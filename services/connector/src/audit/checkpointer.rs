//! The checkpointer: signs a C2SP checkpoint of the department's audit log every
//! `checkpoint_interval_ms` when the log grew, and stores it.

use std::sync::Arc;
use std::time::Duration;

use civitas_audit::checkpoint::{Checkpoint, sign_checkpoint};
use civitas_audit::merkle::Hash;
use civitas_audit::note::Signer;
use civitas_store::Store;
use tokio::sync::watch;

use super::SetupError;
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
        Ok(())
    }
}
