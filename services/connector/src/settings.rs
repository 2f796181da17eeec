//! The connector's settings: one struct, loaded from a TOML file, then overridden by the environment
//! (`DATABASE_URL`) and the command line. Unknown keys are rejected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything a connector needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The department this connector serves (e.g. `transport`).
    pub department: String,
    /// Address to listen on; port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `sqlite://PATH` or `postgres://…`; required (from here, `DATABASE_URL` or `--database-url`).
    #[serde(default)]
    pub database_url: Option<String>,
    /// The base URL clients reach this connector at; defaults to `http://` + the bound address.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Tenants served besides the default one (clause 4.14). Requests naming any other tenant are
    /// rejected, never silently served from a new tenant.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Serve any syntactically valid tenant. For test deployments only (the ETSI suite invents tenants).
    #[serde(default)]
    pub allow_any_tenant: bool,
    #[serde(default)]
    pub contexts: ContextSettings,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub audit: AuditSettings,
    /// Present on a broker: forwarding to registered context sources (issue 5).
    #[serde(default)]
    pub federation: Option<FederationSettings>,
    /// Present on a department's connector that registers itself at a broker.
    #[serde(default)]
    pub registration: Option<RegistrationSettings>,
}

/// Registering the connector at a broker as the source of the entity types it holds, and keeping
/// the registration current.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationSettings {
    /// The broker's base URL (without `/ngsi-ld/v1`).
    pub broker: String,
    /// A file holding the token the broker accepts for registering these types (its first line);
    /// none: the broker's anonymous policy must allow it.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// How often what the connector holds is compared with what it registered.
    #[serde(default = "default_registration_refresh_s")]
    pub refresh_s: u64,
}

fn default_registration_refresh_s() -> u64 {
    30
}

/// The broker's forwarding: which departments it knows, and how it treats their sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSettings {
    /// The departments whose connectors the broker forwards to. A caller's token goes only to the
    /// department whose root key signed it, at the address configured here.
    #[serde(default)]
    pub departments: Vec<DepartmentSettings>,
    /// How long one source may take to answer one request.
    #[serde(default = "default_source_timeout_ms")]
    pub source_timeout_ms: u64,
    /// Most requests to sources in flight at once, over all federated requests.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// How long a forwarded token stays valid (it is also bound to one request id).
    #[serde(default = "default_relay_ttl_s")]
    pub relay_ttl_s: u64,
    /// How long an entity map (the merged id order of a federated query) can be paged through.
    #[serde(default = "default_entity_map_ttl_s")]
    pub entity_map_ttl_s: u64,
    /// Most entity ids one federated query may span.
    #[serde(default = "default_entity_map_max")]
    pub entity_map_max: usize,
}

/// A department the broker federates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentSettings {
    pub name: String,
    /// Its root public key, `ed25519/<hex>`.
    pub public_key: String,
    /// Its connector's base URL; registrations whose endpoint has this origin belong to it.
    pub url: String,
}

impl Default for FederationSettings {
    fn default() -> FederationSettings {
        FederationSettings {
            departments: Vec::new(),
            source_timeout_ms: default_source_timeout_ms(),
            max_concurrency: default_max_concurrency(),
            relay_ttl_s: default_relay_ttl_s(),
            entity_map_ttl_s: default_entity_map_ttl_s(),
            entity_map_max: default_entity_map_max(),
        }
    }
}

fn default_source_timeout_ms() -> u64 {
    3_000
}
fn default_max_concurrency() -> usize {
    32
}
fn default_relay_ttl_s() -> u64 {
    60
}
fn default_entity_map_ttl_s() -> u64 {
    600
}
fn default_entity_map_max() -> usize {
    1_000_000
}

/// The department's audit log (issue 4).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// A file holding the log's Ed25519 seed as 64 hex digits. Without one, a seed is generated
    /// at first start and kept in the store.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// How often a checkpoint is signed when the log grew, in milliseconds.
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    /// The witnesses this log submits its checkpoints to (C2SP tlog-witness): their cosignatures
    /// are served with the checkpoint.
    #[serde(default)]
    pub witnesses: Vec<WitnessSettings>,
    /// The logs this service witnesses, by their checkpoint key (`origin+keyid+key`; the key's
    /// name is the log's origin).
    #[serde(default)]
    pub watch: Vec<String>,
    /// Whether a request's record is acknowledged once written to a spool file (and merged into
    /// the store after at most `merge_wait_ms`), instead of once committed to the store.
    #[serde(default = "default_true")]
    pub spool: bool,
    /// With a spool, how long records gather before they are merged into the store, in
    /// milliseconds: one merge per this interval at most, however many requests come in. Longer
    /// waits merge bigger batches less often, which costs concurrent requests less; they add to
    /// the delay before a checkpoint covers a record. A reader of the log does not wait for it.
    #[serde(default = "default_merge_wait_ms")]
    pub merge_wait_ms: u64,
    /// The spool's directory (relative to the settings file's folder). Default: beside a SQLite
    /// database file (`FILE-audit-spool`); with another database, `DEPARTMENT-audit-spool` in
    /// the settings file's folder. Settings made in code (no file) and in-memory databases have
    /// no default: without a directory every request waits for its record's commit.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// The folder of the settings file these were read from: where a spool goes by default
    /// when the database is not a SQLite file.
    #[serde(skip)]
    pub settings_folder: Option<PathBuf>,
}

/// A witness of this service's audit log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessSettings {
    /// The witnessing service's base URL; checkpoints go to `URL/audit/v1/witness/add-checkpoint`.
    pub url: String,
    /// The witness's cosignature key (its `witnessKey` at `/.well-known/civitas`).
    pub vkey: String,
}

impl AuditSettings {
    /// The spool directory of `department`'s log in the database at `database_url`: none when
    /// the spool is off; the configured one; beside a SQLite database file; none for an
    /// in-memory one; else in the settings file's folder, if they were read from one.
    pub fn spool_dir_for(&self, database_url: &str, department: &str) -> Option<PathBuf> {
        if !self.spool {
            return None;
        }
        if let Some(dir) = &self.spool_dir {
            return Some(dir.clone());
        }
        let sqlite = database_url
            .strip_prefix("sqlite://")
            .or_else(|| database_url.strip_prefix("sqlite:"));
        let Some(path) = sqlite else {
            let folder = self.settings_folder.as_ref()?;
            return Some(folder.join(format!("{department}-audit-spool")));
        };
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        if path.is_empty() || path.contains(":memory:") || database_url.contains("mode=memory") {
            return None;
        }
        Some(PathBuf::from(format!("{path}-audit-spool")))
    }
}

impl Default for AuditSettings {
    fn default() -> AuditSettings {
        AuditSettings {
            key_file: None,
            checkpoint_interval_ms: default_checkpoint_interval_ms(),
            merge_wait_ms: default_merge_wait_ms(),
            witnesses: Vec::new(),
            watch: Vec::new(),
            spool: true,
            spool_dir: None,
            settings_folder: None,
        }
    }
}

/// The department's keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The public half of the department's root key (`ed25519/<hex>`), published at
    /// `/.well-known/civitas` so that holders and auditors can verify its tokens.
    #[serde(default)]
    pub public_key: Option<String>,
    /// The department's policy folder (`policies/<department>`: `access.toml`, `access.datalog`).
    /// Without one, requests need a token and the department adds no rules of its own.
    #[serde(default)]
    pub policies: Option<PathBuf>,
}

/// How JSON-LD @contexts are obtained.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextSettings {
    /// URL → local file. Requests for these URLs never touch the network (air-gapped sites, tests).
    #[serde(default)]
    pub preload: BTreeMap<String, PathBuf>,
    /// Whether contexts outside the preload map may be fetched over HTTP(S).
    #[serde(default = "yes")]
    pub fetch_remote: bool,
    /// URL prefixes that may be fetched; empty allows every http(s) URL.
    #[serde(default)]
    pub fetch_allow: Vec<String>,
    #[serde(default = "default_fetch_timeout_ms")]
    pub fetch_timeout_ms: u64,
    /// The largest remote context document accepted.
    #[serde(default = "default_max_context_bytes")]
    pub max_bytes: usize,
}

impl Default for ContextSettings {
    fn default() -> ContextSettings {
        ContextSettings {
            preload: BTreeMap::new(),
            fetch_remote: true,
            fetch_allow: Vec::new(),
            fetch_timeout_ms: default_fetch_timeout_ms(),
            max_bytes: default_max_context_bytes(),
        }
    }
}

/// Limits that protect the service from oversized requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body, in bytes (413 beyond it).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest `limit` of a query (clause 5.5.9); larger values are rejected.
    #[serde(default = "default_max_page_size")]
    pub max_page_size: u32,
    /// Page size when the query gives no `limit`.
    #[serde(default = "default_page_size")]
    pub default_page_size: u32,
    /// Most entities in one batch operation.
    #[serde(default = "default_max_batch")]
    pub max_batch_size: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: default_max_body_bytes(),
            max_page_size: default_max_page_size(),
            default_page_size: default_page_size(),
            max_batch_size: default_max_batch(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_listen() -> String {
    "127.0.0.1:9092".to_owned()
}
fn default_fetch_timeout_ms() -> u64 {
    5_000
}
fn default_max_context_bytes() -> usize {
    1 << 20
}
fn default_max_body_bytes() -> usize {
    32 << 20
}
fn default_max_page_size() -> u32 {
    1_000
}
fn default_page_size() -> u32 {
    20
}
fn default_true() -> bool {
    true
}
/// The longest merge wait accepted: beyond a minute, records would pile up in the spool (and
/// requests wait for room) long before a merge, and checkpoints lag as much.
const MAX_MERGE_WAIT_MS: u64 = 60_000;

fn default_merge_wait_ms() -> u64 {
    1_000
}
fn default_checkpoint_interval_ms() -> u64 {
    1_000
}
fn default_max_batch() -> usize {
    10_000
}

/// Errors while loading settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid settings: {0}")]
    Invalid(String),
}

impl Settings {
    /// Minimal settings for a department, everything else at its default.
    pub fn new(department: &str, database_url: &str) -> Settings {
        Settings {
            department: department.to_owned(),
            listen: default_listen(),
            database_url: Some(database_url.to_owned()),
            public_url: None,
            tenants: Vec::new(),
            allow_any_tenant: false,
            contexts: ContextSettings::default(),
            limits: Limits::default(),
            auth: AuthSettings::default(),
            audit: AuditSettings::default(),
            federation: None,
            registration: None,
        }
    }

    /// Reads a TOML file. Relative preload and policy paths are taken relative to the file's folder.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut settings: Settings =
            toml::from_str(&text).map_err(|source| SettingsError::Parse {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for file in settings.contexts.preload.values_mut() {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        if let Some(folder) = &mut settings.auth.policies
            && folder.is_relative()
        {
            *folder = base.join(&*folder);
        }
        if let Some(file) = &mut settings.audit.key_file
            && file.is_relative()
        {
            *file = base.join(&*file);
        }
        if let Some(dir) = &mut settings.audit.spool_dir
            && dir.is_relative()
        {
            *dir = base.join(&*dir);
        }
        settings.audit.settings_folder = Some(base.to_owned());
        if let Some(file) = settings
            .registration
            .as_mut()
            .and_then(|r| r.token_file.as_mut())
            && file.is_relative()
        {
            *file = base.join(&*file);
        }
        Ok(settings)
    }

    /// Checks what serde cannot, and reports problems before the service starts.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.department.is_empty()
            || !self
                .department
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(SettingsError::Invalid(format!(
                "department {:?} must be a simple name",
                self.department
            )));
        }
        if self.database_url.is_none() {
            return Err(SettingsError::Invalid(
                "no database_url (set it in the file, DATABASE_URL or --database-url)".to_owned(),
            ));
        }
        for tenant in &self.tenants {
            civitas_ngsild::names::Tenant::parse(tenant)
                .map_err(|e| SettingsError::Invalid(e.to_string()))?;
        }
        if self.limits.default_page_size == 0
            || self.limits.default_page_size > self.limits.max_page_size
        {
            return Err(SettingsError::Invalid(
                "limits.default_page_size must be between 1 and limits.max_page_size".to_owned(),
            ));
        }
        if !(1..=MAX_MERGE_WAIT_MS).contains(&self.audit.merge_wait_ms) {
            return Err(SettingsError::Invalid(format!(
                "audit.merge_wait_ms must be between 1 and {MAX_MERGE_WAIT_MS}"
            )));
        }
        if let Some(key) = &self.auth.public_key {
            let valid = key
                .strip_prefix("ed25519/")
                .is_some_and(|hex| hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()));
            if !valid {
                return Err(SettingsError::Invalid(format!(
                    "auth.public_key {key:?} is not an ed25519/<64 hex digits> key"
                )));
            }
        }
        if let Some(folder) = &self.auth.policies
            && !folder.is_dir()
        {
            return Err(SettingsError::Invalid(format!(
                "auth.policies: {} is not a folder",
                folder.display()
            )));
        }
        for (url, file) in &self.contexts.preload {
            if !file.is_file() {
                return Err(SettingsError::Invalid(format!(
                    "preloaded context {url}: {} is not a file",
                    file.display()
                )));
            }
        }
        if let Some(federation) = &self.federation {
            if federation.source_timeout_ms == 0 || federation.max_concurrency == 0 {
                return Err(SettingsError::Invalid(
                    "federation.source_timeout_ms and federation.max_concurrency must be positive"
                        .to_owned(),
                ));
            }
            for department in &federation.departments {
                civitas_auth::keys::parse_public(&department.public_key).map_err(|e| {
                    SettingsError::Invalid(format!(
                        "federation department {}: {e}",
                        department.name
                    ))
                })?;
                url::Url::parse(&department.url).map_err(|e| {
                    SettingsError::Invalid(format!(
                        "federation department {}: url {:?}: {e}",
                        department.name, department.url
                    ))
                })?;
            }
        }
        if self.allow_any_tenant {
            tracing::warn!(
                "allow_any_tenant is on: any tenant named in a request is served (test deployments only)"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_directories_by_database_and_settings_file() {
        let read = AuditSettings {
            settings_folder: Some(PathBuf::from("/etc/civitas")),
            ..AuditSettings::default()
        };
        let made = AuditSettings::default();
        let postgres = "postgres://postgres@127.0.0.1:5432/city";
        let dir = |settings: &AuditSettings, url: &str| settings.spool_dir_for(url, "transport");
        assert_eq!(
            dir(&made, "sqlite:///var/lib/transport.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/transport.db-audit-spool"))
        );
        assert_eq!(dir(&made, "sqlite::memory:"), None);
        assert_eq!(dir(&read, "sqlite::memory:"), None);
        // PostgreSQL: in the settings file's folder, and only with a file.
        assert_eq!(
            dir(&read, postgres),
            Some(PathBuf::from("/etc/civitas/transport-audit-spool"))
        );
        assert_eq!(dir(&made, postgres), None);
        let chosen = AuditSettings {
            spool_dir: Some(PathBuf::from("/srv/spool")),
            ..read.clone()
        };
        assert_eq!(dir(&chosen, postgres), Some(PathBuf::from("/srv/spool")));
        let off = AuditSettings {
            spool: false,
            ..chosen
        };
        assert_eq!(dir(&off, postgres), None);
    }

    #[test]
    fn the_merge_wait_is_bounded() {
        let mut settings = Settings::new("transport", "sqlite::memory:");
        settings.validate().expect("the default is valid");
        for (wait, valid) in [(0, false), (1, true), (60_000, true), (60_001, false)] {
            settings.audit.merge_wait_ms = wait;
            assert_eq!(settings.validate().is_ok(), valid, "{wait} ms");
        }
    }

    #[test]
    fn a_relative_spool_directory_is_the_settings_files() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("transport.toml");
        std::fs::write(
            &file,
            "department = \"transport\"\n[audit]\nspool_dir = \"data/spool\"\n",
        )
        .unwrap();
        let settings = Settings::load(&file).unwrap();
        assert_eq!(
            settings.audit.spool_dir,
            Some(folder.path().join("data/spool"))
        );
        assert_eq!(
            settings.audit.settings_folder.as_deref(),
            Some(folder.path())
        );
    }
}
