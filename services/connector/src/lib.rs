//! A department's connector: its NGSI-LD entities, stored in SQLite or PostgreSQL and served over
//! the NGSI-LD HTTP API (ETSI GS CIM 009 clause 6).
//!
//! [`Application::build`] wires settings, store, @context resolver and routes; `main` (in the
//! `civitas` binary) only calls it. Handlers live in [`routes`], one module per NGSI-LD path;
//! the operations they call live in [`entities`].

pub mod audit;
pub mod clock;
pub mod contexts;
pub mod discovery;
pub mod entities;
pub mod federation;
pub mod registration_subscriptions;
pub mod registrations;
pub mod revocations;
mod routes;
pub mod self_registration;
pub mod settings;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use civitas_store::Store;

use civitas_auth::authorizer::{Authorizer, Grant};

use crate::audit::AuditLog;
use crate::clock::{Clock, SystemClock};
use crate::contexts::ContextResolver;
use crate::entities::Entities;
use crate::registration_subscriptions::RegistrationSubscriptions;
use crate::registrations::Registrations;
use crate::revocations::Revocations;
use crate::settings::AuditSettings;
pub use crate::settings::Settings;

/// Everything a handler may use; shared by all workers.
#[derive(Debug)]
pub struct AppState {
    pub settings: Settings,
    pub entities: Entities,
    pub registrations: Registrations,
    pub registration_subscriptions: RegistrationSubscriptions,
    pub contexts: ContextResolver,
    pub authorizer: Authorizer,
    pub revocations: Revocations,
    pub audit: AuditLog,
    /// The broker's forwarding; `None` on a department's connector.
    pub federation: Option<federation::Federation>,
    pub clock: Arc<dyn Clock>,
    pub public_url: String,
}

/// Errors that stop the connector from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
    #[error("cannot open the database: {0}")]
    Store(#[from] civitas_store::Error),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Contexts(#[from] contexts::SetupError),
    #[error("the department's policies are not valid:\n{0}")]
    Policies(String),
    #[error("cannot set up authorization: {0}")]
    Auth(#[from] civitas_auth::Error),
    #[error("cannot open the audit log: {0}")]
    Audit(#[from] audit::SetupError),
    #[error("cannot set up federation: {0}")]
    Federation(String),
    #[error("cannot read the registration token {path}: {source}")]
    RegistrationToken {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A default spool directory (not configured: beside a SQLite file, or in the settings file's
/// folder), if it can be written; else none, said loudly, and every request then waits for its
/// record's commit. A folder of settings is often read-only (`/etc`, a mounted configuration);
/// that must not stop the connector. A configured `spool_dir` that cannot be used does stop it.
fn writable_default_spool(dir: std::path::PathBuf) -> Option<std::path::PathBuf> {
    let probe = dir.join(".write-probe");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe));
    match written {
        Ok(()) => Some(dir),
        Err(error) => {
            tracing::warn!(
                %error,
                dir = %dir.display(),
                "the default audit spool directory cannot be written: every request waits for \
                 its record's commit instead (set [audit] spool_dir to a writable directory)"
            );
            None
        }
    }
}

/// The department's authorizer: its public key, its policies, and the tokens revoked so far.
async fn authorizer(settings: &Settings, store: &Store) -> Result<Authorizer, StartError> {
    let policy = match &settings.auth.policies {
        None => civitas_policy::DepartmentPolicy::default(),
        Some(folder) => civitas_policy::load_department(folder).map_err(|findings| {
            StartError::Policies(
                findings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?,
    };
    let root = match &settings.auth.public_key {
        Some(key) => civitas_auth::keys::parse_public(key)?,
        None => {
            // No key, no token: a fresh key nobody holds verifies nothing.
            tracing::warn!(
                "auth.public_key is not set: no token is accepted, only the anonymous policy applies"
            );
            civitas_auth::keys::RootKey::generate()?.public()
        }
    };
    let anonymous = &policy.anonymous;
    let authorizer = Authorizer::new(root, &policy.datalog, &settings.department)?.with_anonymous(
        Grant::anonymous(
            anonymous.read.clone(),
            anonymous.write.clone(),
            anonymous.attributes.clone(),
        ),
    );
    authorizer.revoke(store.all_revoked().await?);
    Ok(authorizer)
}

/// A connector bound to its port, ready to run.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens the store (applying migrations), binds the listener and builds the server.
    pub async fn build(settings: Settings) -> Result<Application, StartError> {
        Application::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Like [`Application::build`], with an injected clock (tests).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartError> {
        settings.validate()?;
        // reqwest is built without a default TLS provider; ring is the one this workspace uses.
        // Installing it is idempotent; an error only means one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let database_url = settings.database_url.clone().unwrap_or_default();
        let store = Store::open(&database_url).await?;
        entities::fill_first_observations(&store).await?;
        let listener =
            TcpListener::bind(&settings.listen).map_err(|source| StartError::Listen {
                address: settings.listen.clone(),
                source,
            })?;
        let address = listener.local_addr().map_err(|source| StartError::Listen {
            address: settings.listen.clone(),
            source,
        })?;
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{address}"));
        let contexts = ContextResolver::new(
            settings.contexts.clone(),
            store.clone(),
            clock.clone(),
            &public_url,
        )
        .await?;
        let authorizer = authorizer(&settings, &store).await?;
        let federation = match &settings.federation {
            None => None,
            Some(federation) => Some(
                federation::Federation::new(federation.clone(), &settings.department, &public_url)
                    .map_err(StartError::Federation)?,
            ),
        };
        let spool_dir = match settings
            .audit
            .spool_dir_for(&database_url, &settings.department)
        {
            Some(dir) if settings.audit.spool_dir.is_none() => writable_default_spool(dir),
            chosen => chosen,
        };
        let audit_settings = AuditSettings {
            spool_dir,
            ..settings.audit.clone()
        };
        let audit = AuditLog::start(
            &settings.department,
            &audit_settings,
            store.clone(),
            clock.clone(),
        )
        .await?;
        let registration_subscriptions =
            RegistrationSubscriptions::new(store.clone(), clock.clone());
        registration_subscriptions.load_periodic().await?;
        let state = web::Data::new(AppState {
            revocations: Revocations::new(store.clone(), authorizer.clone(), clock.clone()),
            registrations: Registrations::new(store.clone(), clock.clone()),
            registration_subscriptions,
            entities: Entities::new(store, clock.clone()),
            authorizer,
            audit,
            federation,
            clock,
            contexts,
            public_url,
            settings,
        });
        registration_subscriptions::start_ticker(&state);
        if let Some(registration) = &state.settings.registration {
            let token = match &registration.token_file {
                None => None,
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|source| StartError::RegistrationToken {
                            path: path.clone(),
                            source,
                        })?
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                ),
            };
            // Nobody waits here for the first registration: the task retries until it is in.
            drop(self_registration::start(
                state.clone(),
                self_registration::Target {
                    broker: registration.broker.clone(),
                    token,
                    refresh: std::time::Duration::from_secs(registration.refresh_s.max(1)),
                },
            ));
        }
        let server_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(server_state.clone())
                .wrap(actix_web::middleware::from_fn(routes::audit_records))
                .wrap(actix_web::middleware::Compress::default())
                .wrap(actix_web::middleware::from_fn(routes::request_id))
                .configure(routes::configure)
        })
        .listen(listener)
        .map_err(|source| StartError::Listen {
            address: address.to_string(),
            source,
        })?
        .shutdown_timeout(10)
        .run();
        Ok(Application {
            port: address.port(),
            server,
            state,
        })
    }

    /// The port the connector listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base URL clients use.
    pub fn public_url(&self) -> &str {
        &self.state.public_url
    }

    /// Serves until the server is stopped (Ctrl-C / SIGTERM, or a handle's `stop`), then stores
    /// what the audit log still has spooled and stops its merger.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let closer = self.state.audit.closer();
        let served = self.server.await;
        closer.close().await;
        served
    }

    /// The department's audit log (to add witnesses once their addresses are known).
    pub fn audit(&self) -> &audit::AuditLog {
        &self.state.audit
    }

    /// What starts registering this connector at a broker (as `[registration]` in the settings
    /// does), usable once the application itself is running. For a connector whose settings have
    /// no `[registration]`.
    pub fn registrar(&self) -> self_registration::Registrar {
        self_registration::Registrar::new(self.state.clone())
    }

    /// A handle to stop the server from elsewhere.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }
}
