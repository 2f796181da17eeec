//! Token revocation: persisted in the store, so it survives restarts, and applied to the
//! authorizer at once, so it takes effect on the next request.
//!
//! Revoking a token means revoking the revocation id of its **last** block: that token and every
//! token attenuated from it stop working, while the token it was itself attenuated from (if any)
//! keeps working. Revoking an authority block's id revokes the whole family.

use std::sync::Arc;

use civitas_auth::authorizer::{Authorized, Authorizer, NameSet, Operation};
use civitas_http::{ErrorCode, Problem};
use civitas_store::Store;

use crate::clock::Clock;
use crate::entities::refused;

/// The revocation list of one connector.
pub struct Revocations {
    store: Store,
    authorizer: Authorizer,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations").finish_non_exhaustive()
    }
}

/// What to revoke.
#[derive(Debug, Clone)]
pub enum Target {
    /// A token of this department: its last block's revocation id.
    Token(String),
    /// Revocation ids as `civitas token inspect` shows them (hex).
    Ids(Vec<String>),
}

/// Administration needs the admin right on every entity type.
fn check_admin(auth: &Authorized) -> Result<(), Problem> {
    if auth.operation() == Operation::Admin && auth.types() == NameSet::All {
        Ok(())
    } else {
        Err(Problem::new(
            ErrorCode::Forbidden,
            "revocation needs an admin token of this department",
        ))
    }
}

impl Revocations {
    pub fn new(store: Store, authorizer: Authorizer, clock: Arc<dyn Clock>) -> Revocations {
        Revocations {
            store,
            authorizer,
            clock,
        }
    }

    /// Revokes `target`; returns the revocation ids now revoked.
    pub async fn revoke(
        &self,
        auth: &Authorized,
        target: Target,
        reason: &str,
    ) -> Result<Vec<String>, Problem> {
        check_admin(auth)?;
        auth.check_names(Default::default()).map_err(refused)?;
        let ids = match target {
            Target::Token(token) => {
                let ids = self.authorizer.revocation_ids(&token).map_err(|_| {
                    Problem::bad_request("the token to revoke was not issued by this department")
                })?;
                ids.into_iter().last().into_iter().collect()
            }
            Target::Ids(ids) => {
                let mut normalized = Vec::with_capacity(ids.len());
                for id in ids {
                    if id.is_empty() || id.len() > 256 || !id.chars().all(|c| c.is_ascii_hexdigit())
                    {
                        return Err(Problem::bad_request(format!(
                            "{id:?} is not a revocation id (hex)"
                        )));
                    }
                    normalized.push(id.to_ascii_lowercase());
                }
                normalized
            }
        };
        if ids.is_empty() {
            return Err(Problem::bad_request("nothing to revoke"));
        }
        // Stored first: a revocation the store did not keep must not look done.
        self.store
            .revoke(&ids, self.clock.now(), reason)
            .await
            .map_err(|e| Problem::internal(&e))?;
        self.authorizer.revoke(ids.iter().cloned());
        tracing::info!(holder = ?auth.holder(), ids = ?ids, "tokens revoked");
        Ok(ids)
    }

    /// Every revoked id.
    pub async fn list(&self, auth: &Authorized) -> Result<Vec<String>, Problem> {
        check_admin(auth)?;
        auth.check_names(Default::default()).map_err(refused)?;
        self.store
            .all_revoked()
            .await
            .map_err(|e| Problem::internal(&e))
    }
}
