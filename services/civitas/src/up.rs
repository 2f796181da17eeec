//! `civitas up`: the whole local data space in one process: one connector per department on
//! embedded SQLite under the state folder, each enforcing its department's key and policies
//! (`DIR/policies/<department>/`, the demo city's on first start, editable afterwards), the demo
//! city loaded on first start with the department's admin token, and `DIR/endpoints.json` written
//! once everything answers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use civitas_auth::token::{ANY, TokenSpec};
use civitas_connector::{Application, Settings, self_registration};
use indicatif::ProgressBar;
use serde::Deserialize;
use serde_json::json;

use crate::demo;
use crate::load::{self, Target};
use crate::tokens;

/// Arguments of `civitas up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// A data-space file (TOML) naming the departments; default: transport, environment, water.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where databases, contexts and endpoints.json are kept.
    #[arg(long, default_value = ".civitas")]
    state_dir: PathBuf,
    /// The broker's port; the portal gets N+1 and the connectors N+2, N+3, … in config order.
    /// 0 picks free ports (endpoints.json says which).
    #[arg(long, default_value_t = 9090)]
    base_port: u16,
}

/// The data-space file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpConfig {
    #[serde(default = "default_departments")]
    departments: Vec<Department>,
    /// Load the demo city into departments it knows (transport, environment, water) on first start.
    #[serde(default = "yes")]
    demo: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Department {
    name: String,
    #[serde(default)]
    tenants: Vec<String>,
    /// Overrides the embedded SQLite database (e.g. a postgres:// URL).
    #[serde(default)]
    database_url: Option<String>,
}

fn yes() -> bool {
    true
}

/// The demo city's policies (`policies/` in the repository), written to the state folder on first
/// start: (department, file name, contents).
const DEMO_POLICIES: &[(&str, &str, &str)] = &[
    (
        "transport",
        "access.toml",
        include_str!("../../../policies/transport/access.toml"),
    ),
    (
        "transport",
        "access.datalog",
        include_str!("../../../policies/transport/access.datalog"),
    ),
    (
        "environment",
        "access.toml",
        include_str!("../../../policies/environment/access.toml"),
    ),
    (
        "water",
        "access.toml",
        include_str!("../../../policies/water/access.toml"),
    ),
];

/// A department's policy folder under the state folder, created on first start (the demo city's
/// policy for departments it knows, otherwise no anonymous access). An existing folder is the
/// operator's and is left as it is.
fn ensure_policies(policies_dir: &Path, department: &str) -> anyhow::Result<PathBuf> {
    let folder = policies_dir.join(department);
    if folder.exists() {
        return Ok(folder);
    }
    std::fs::create_dir_all(&folder)?;
    let mut wrote = false;
    for (name, file, text) in DEMO_POLICIES {
        if *name == department {
            std::fs::write(folder.join(file), text)?;
            wrote = true;
        }
    }
    if !wrote {
        std::fs::write(
            folder.join("access.toml"),
            "# No access without a token.\n[anonymous]\nread = []\n",
        )?;
    }
    Ok(folder)
}

fn default_departments() -> Vec<Department> {
    ["transport", "environment", "water"]
        .into_iter()
        .map(|name| Department {
            name: name.to_owned(),
            tenants: Vec::new(),
            database_url: None,
        })
        .collect()
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?
        }
        None => UpConfig {
            departments: default_departments(),
            demo: true,
        },
    };
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let state_dir = std::path::absolute(&args.state_dir)?;
    let data_dir = state_dir.join("data");
    let contexts_dir = state_dir.join("contexts");
    std::fs::create_dir_all(&data_dir)?;
    std::fs::create_dir_all(&contexts_dir)?;
    let mut preload = BTreeMap::new();
    for context in demo::ALL_CONTEXTS {
        let path = contexts_dir.join(context.file_name);
        std::fs::write(&path, context.document)
            .with_context(|| format!("writing {}", path.display()))?;
        preload.insert(context.url.to_owned(), path);
    }

    let keys_dir = state_dir.join("keys");
    let tokens_dir = state_dir.join("tokens");
    let policies_dir = state_dir.join("policies");
    std::fs::create_dir_all(&keys_dir)?;
    std::fs::create_dir_all(&tokens_dir)?;
    let mut keys = BTreeMap::new();
    let mut tokens = BTreeMap::new();

    // Every connector witnesses the others' audit logs: each log's key is known before any
    // connector starts (its seed is kept in DIR/keys/<department>.audit).
    let mut audit_keys = BTreeMap::new();
    let broker_name = BROKER.to_owned();
    for department in config
        .departments
        .iter()
        .map(|d| &d.name)
        .chain(std::iter::once(&broker_name))
    {
        let department = Department {
            name: department.clone(),
            tenants: Vec::new(),
            database_url: None,
        };
        let path = keys_dir.join(format!("{}.audit", department.name));
        let seed = ensure_audit_seed(&path)
            .with_context(|| format!("the audit key of {}", department.name))?;
        let (log_vkey, witness_vkey) =
            civitas_connector::audit::public_keys(&department.name, &seed)?;
        audit_keys.insert(department.name.clone(), (path, log_vkey, witness_vkey));
    }

    let mut applications = Vec::new();
    let mut department_keys = BTreeMap::new();
    for (index, department) in config.departments.iter().enumerate() {
        let key_path = keys_dir.join(format!("{}.key", department.name));
        let key = tokens::ensure_key(&key_path)
            .with_context(|| format!("the root key of {}", department.name))?;
        for (name, spec) in demo_tokens(&department.name) {
            let path = tokens_dir.join(format!("{name}.biscuit"));
            tokens::ensure_token(&path, &key, &spec)?;
            tokens.insert(name, path);
        }
        department_keys.insert(department.name.clone(), key.public_string());
        keys.insert(department.name.clone(), key_path);
        // Port 0 asks the system for free ports; endpoints.json then tells where everything is.
        let port = match args.base_port {
            0 => 0,
            base => base
                .checked_add(2 + index as u16)
                .context("--base-port is too high")?,
        };
        let database_url = department.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                data_dir.join(format!("{}.db", department.name)).display()
            )
        });
        let mut settings = Settings::new(&department.name, &database_url);
        settings.listen = format!("127.0.0.1:{port}");
        settings.tenants = department.tenants.clone();
        settings.contexts.preload = preload.clone();
        settings.auth.public_key = Some(key.public_string());
        settings.auth.policies = Some(
            ensure_policies(&policies_dir, &department.name)
                .with_context(|| format!("the policies of {}", department.name))?,
        );
        if let Some((path, _, _)) = audit_keys.get(&department.name) {
            settings.audit.key_file = Some(path.clone());
        }
        settings.audit.watch = audit_keys
            .iter()
            .filter(|(name, _)| **name != department.name)
            .map(|(_, (_, log_vkey, _))| log_vkey.clone())
            .collect();
        let application = Application::build(settings).await.with_context(|| {
            format!("starting the {} connector on port {port}", department.name)
        })?;
        applications.push((department.name.clone(), application));
    }
    // The broker serves every tenant a department does: departments register there per tenant.
    let mut tenants: Vec<String> = config
        .departments
        .iter()
        .flat_map(|department| department.tenants.iter().cloned())
        .collect();
    tenants.sort();
    tenants.dedup();
    let broker = start_broker(
        &args,
        tenants,
        &state_dir,
        &preload,
        &policies_dir,
        &audit_keys,
        &department_keys,
        &applications,
        &mut keys,
        &mut tokens,
    )
    .await?;
    applications.push((BROKER.to_owned(), broker));
    for (name, application) in &applications {
        for (other, other_application) in &applications {
            if other == name {
                continue;
            }
            if let Some((_, _, witness_vkey)) = audit_keys.get(other) {
                application
                    .audit()
                    .add_witness(civitas_connector::audit::Witness {
                        url: other_application.public_url().to_owned(),
                        verifier: civitas_audit::checkpoint::CosignatureVerifier::from_vkey(
                            witness_vkey,
                        )?,
                    });
            }
        }
    }
    let mut connectors = BTreeMap::new();
    let mut broker_url = String::new();
    let mut registrars = Vec::new();
    let mut servers = Vec::new();
    for (name, application) in applications {
        if name == BROKER {
            broker_url = application.public_url().to_owned();
        } else {
            connectors.insert(name.clone(), application.public_url().to_owned());
            registrars.push((name, application.registrar()));
        }
        servers.push(actix_web::rt::spawn(application.run_until_stopped()));
    }

    if config.demo {
        for (name, url) in &connectors {
            let marker = data_dir.join(format!("{name}.demo-loaded"));
            let entities = demo::entities(name);
            if marker.exists() || entities.is_empty() {
                continue;
            }
            tracing::info!(department = %name, entities = entities.len(), "loading the demo city");
            let admin = tokens
                .get(&format!("admin.{name}"))
                .context("the department's admin token")?;
            let target = Target {
                url: url.clone(),
                auth: Some(std::fs::read_to_string(admin)?.trim().to_owned()),
                tenant: None,
                context: None,
                batch_size: 500,
            };
            let progress = ProgressBar::new(entities.len() as u64);
            let report = load::upsert(&target, entities, &progress).await?;
            progress.finish_and_clear();
            if !report.errors.is_empty() {
                let first: Vec<&str> = report.errors.iter().take(3).map(String::as_str).collect();
                anyhow::bail!(
                    "loading the demo city into {name} failed for {} entities, e.g. {}",
                    report.errors.len(),
                    first.join("; ")
                );
            }
            std::fs::write(&marker, b"")?;
        }
    }

    // Each connector registers itself at the broker as the source of the types it holds, and
    // keeps that registration current; the tour starts once the broker has all of them.
    let broker_admin = std::fs::read_to_string(
        tokens
            .get(&format!("admin.{BROKER}"))
            .context("the broker's admin token")?,
    )?;
    let mut registered = Vec::new();
    for (name, registrar) in registrars {
        let receiver = registrar.start(self_registration::Target {
            broker: broker_url.clone(),
            token: Some(broker_admin.trim().to_owned()),
            refresh: REGISTRATION_REFRESH,
        });
        registered.push((name, receiver));
    }
    for (name, receiver) in registered {
        anyhow::ensure!(
            self_registration::wait(receiver, Duration::from_secs(30)).await,
            "{name} could not register at the broker within 30 s (see the log above)"
        );
    }

    let endpoints =
        json!({ "broker": broker_url, "connectors": connectors, "keys": keys, "tokens": tokens });
    let endpoints_path = state_dir.join("endpoints.json");
    std::fs::write(&endpoints_path, serde_json::to_string_pretty(&endpoints)?)?;
    print_tour(&state_dir, &endpoints_path, &broker_url, &connectors)?;

    for server in servers {
        server.await.context("a connector stopped unexpectedly")??;
    }
    Ok(ExitCode::SUCCESS)
}

/// The broker's name among the services (its department name in settings and audit records).
const BROKER: &str = "broker";

/// How often a connector compares the types it holds with what it registered at the broker.
const REGISTRATION_REFRESH: Duration = Duration::from_secs(10);

/// Starts the broker (not yet serving): its own key, store, audit log and policy (anyone may read
/// what it holds itself: registrations of the departments' connectors, never their data), and
/// federation over the departments' connectors.
#[expect(clippy::too_many_arguments, reason = "up's shared state, passed once")]
async fn start_broker(
    args: &UpArgs,
    tenants: Vec<String>,
    state_dir: &Path,
    preload: &BTreeMap<String, PathBuf>,
    policies_dir: &Path,
    audit_keys: &BTreeMap<String, (PathBuf, String, String)>,
    department_keys: &BTreeMap<String, String>,
    connectors: &[(String, Application)],
    keys: &mut BTreeMap<String, PathBuf>,
    tokens: &mut BTreeMap<String, PathBuf>,
) -> anyhow::Result<Application> {
    let key_path = state_dir.join("keys").join(format!("{BROKER}.key"));
    let key = tokens::ensure_key(&key_path).context("the broker's root key")?;
    for (name, spec) in demo_tokens(BROKER) {
        let path = state_dir.join("tokens").join(format!("{name}.biscuit"));
        tokens::ensure_token(&path, &key, &spec)?;
        tokens.insert(name, path);
    }
    keys.insert(BROKER.to_owned(), key_path);
    let policy = policies_dir.join(BROKER);
    if !policy.exists() {
        std::fs::create_dir_all(&policy)?;
        std::fs::write(
            policy.join("access.toml"),
            "# The broker holds no department's data: anyone may read what it holds itself
# (the departments' registrations); only its administrator changes it.
[anonymous]
read = [\"*\"]
",
        )?;
    }
    let mut settings = Settings::new(
        BROKER,
        &format!(
            "sqlite://{}",
            state_dir
                .join("data")
                .join(format!("{BROKER}.db"))
                .display()
        ),
    );
    settings.listen = format!("127.0.0.1:{}", args.base_port);
    settings.tenants = tenants;
    settings.contexts.preload = preload.clone();
    settings.auth.public_key = Some(key.public_string());
    settings.auth.policies = Some(policy);
    if let Some((path, _, _)) = audit_keys.get(BROKER) {
        settings.audit.key_file = Some(path.clone());
    }
    settings.audit.watch = audit_keys
        .iter()
        .filter(|(name, _)| *name != BROKER)
        .map(|(_, (_, log_vkey, _))| log_vkey.clone())
        .collect();
    settings.federation = Some(civitas_connector::settings::FederationSettings {
        departments: connectors
            .iter()
            .filter_map(|(name, application)| {
                Some(civitas_connector::settings::DepartmentSettings {
                    name: name.clone(),
                    public_key: department_keys.get(name)?.clone(),
                    url: application.public_url().to_owned(),
                })
            })
            .collect(),
        ..Default::default()
    });
    Application::build(settings)
        .await
        .with_context(|| format!("starting the broker on port {}", args.base_port))
}

/// The demo tokens of a department: its administrator and its auditor; at transport, also a partner
/// agency that reads parking availability but no payment data. Transport and environment also
/// give the city's planning agency a read token each: the federated query of the tour uses both.
fn demo_tokens(department: &str) -> Vec<(String, TokenSpec)> {
    let year = Some(chrono::Duration::days(365));
    let mut specs = vec![];
    if department == "transport" || department == "environment" {
        specs.push((
            format!("agency.{department}"),
            TokenSpec {
                holder: "planning-agency".to_owned(),
                read: vec![ANY.to_owned()],
                ttl: Some(chrono::Duration::days(90)),
                ..TokenSpec::default()
            },
        ));
    }
    specs.extend([
        (
            format!("admin.{department}"),
            TokenSpec {
                holder: format!("admin.{department}"),
                read: vec![ANY.to_owned()],
                write: vec![ANY.to_owned()],
                admin: true,
                audit: true,
                ttl: year,
                ..TokenSpec::default()
            },
        ),
        (
            format!("auditor.{department}"),
            TokenSpec {
                holder: "auditor".to_owned(),
                audit: true,
                ttl: year,
                ..TokenSpec::default()
            },
        ),
    ]);
    if department == "transport" {
        let parking = |name: &str| format!("https://smartdatamodels.org/dataModel.Parking/{name}");
        specs.push((
            "partner-agency.transport".to_owned(),
            TokenSpec {
                holder: "partner-agency".to_owned(),
                read: vec![parking("ParkingSpot"), parking("OffStreetParking")],
                attributes: Some(vec![
                    "https://uri.etsi.org/ngsi-ld/status".to_owned(),
                    "https://uri.etsi.org/ngsi-ld/location".to_owned(),
                    "https://smartdatamodels.org/name".to_owned(),
                    parking("category"),
                    parking("availableSpotNumber"),
                    parking("totalSpotNumber"),
                    parking("refParkingSite"),
                ]),
                purpose: Some("traffic-planning".to_owned()),
                ttl: Some(chrono::Duration::days(90)),
                ..TokenSpec::default()
            },
        ));
    }
    specs
}

fn print_tour(
    state_dir: &Path,
    endpoints: &Path,
    broker: &str,
    connectors: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "Civitas is up. State: {}", state_dir.display())?;
    writeln!(out, "  broker                 {broker}")?;
    for (name, url) in connectors {
        writeln!(out, "  connector {name:<12} {url}")?;
    }
    writeln!(out, "Endpoints: {}", endpoints.display())?;
    writeln!(
        out,
        "Department keys, policies and demo tokens: {0}/keys, {0}/policies, {0}/tokens",
        state_dir.display()
    )?;
    if let Some(transport) = connectors.get("transport") {
        let parking = "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld";
        let link = format!("-H 'Link: <{parking}>; rel=\"http://www.w3.org/ns/json-ld#context\"'");
        let tokens = state_dir.join("tokens");
        let site = format!(
            "{transport}/ngsi-ld/v1/entities/urn:ngsi-ld:OffStreetParking:civitas:000?options=keyValues"
        );
        writeln!(out, "\nTry:")?;
        writeln!(
            out,
            "  # Anyone may read parking spots' availability:\n  curl -s '{transport}/ngsi-ld/v1/entities?type=ParkingSpot&limit=2&options=keyValues' {link}"
        )?;
        writeln!(
            out,
            "  # A parking site needs a token; the partner agency's shows no payment data:\n  curl -s '{site}' {link} \\\n    -H \"Authorization: Bearer $(cat {})\"",
            tokens.join("partner-agency.transport.biscuit").display()
        )?;
        writeln!(
            out,
            "  # The department's admin sees everything:\n  curl -s '{site}' {link} \\\n    -H \"Authorization: Bearer $(cat {})\"",
            tokens.join("admin.transport.biscuit").display()
        )?;
    }
    if connectors.contains_key("transport") && connectors.contains_key("environment") {
        let tokens = state_dir.join("tokens");
        writeln!(
            out,
            "  # One question for the whole city, through the broker, with two departments' tokens
  # (water is not asked: the agency has no token of it; NGSILD-Warning says so):
  curl -si '{broker}/ngsi-ld/v1/entities?idPattern=urn:ngsi-ld:.*&limit=3&count=true&options=keyValues' \\
    -H \"Authorization: Bearer $(cat {}), $(cat {})\"",
            tokens.join("agency.transport.biscuit").display(),
            tokens.join("agency.environment.biscuit").display()
        )?;
    }
    writeln!(out, "\nPress Ctrl-C to stop.")?;
    out.flush()
}

/// The seed of a department's audit log in `path` (64 hex digits), created once (mode 0600).
fn ensure_audit_seed(path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    if !path.exists() {
        use ring::rand::SecureRandom;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
        let hex: String = seed.iter().map(|byte| format!("{byte:02x}")).collect();
        tokens::write_private(path, &format!("{hex}\n"))?;
    }
    Ok(civitas_connector::audit::read_key_file(path)?)
}
