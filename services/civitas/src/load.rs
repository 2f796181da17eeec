//! `civitas load`: bulk-load NGSI-LD entities into a connector through its batch upsert endpoint
//! (`POST /ngsi-ld/v1/entityOperations/upsert`), with a progress bar.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Arguments of `civitas load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The connector's base URL, e.g. http://127.0.0.1:9092.
    #[arg(long)]
    url: String,
    /// A capability token to send as `Authorization: Bearer`.
    #[arg(long, env = "CIVITAS_TOKEN", hide_env_values = true)]
    auth: Option<String>,
    /// The tenant to load into (`NGSILD-Tenant`).
    #[arg(long)]
    tenant: Option<String>,
    /// @context URL for entities that carry none (sent as a Link header).
    #[arg(long)]
    context: Option<String>,
    /// Entities per request.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// JSON / JSON-LD files (an entity or an array of entities), or folders of them.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Counts of a load. A batch that partly fails answers with a `BatchOperationResult`, which does
/// not say which entities were new, so only the number stored is known for every batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub stored: usize,
    pub errors: Vec<String>,
}

/// Where and how to send entities.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub auth: Option<String>,
    pub tenant: Option<String>,
    pub context: Option<String>,
    pub batch_size: usize,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let mut files = Vec::new();
    for path in &args.files {
        collect_files(path, &mut files)?;
    }
    let mut entities = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", file.display()))?;
        match value {
            Value::Array(items) => entities.extend(items),
            Value::Object(_) => entities.push(value),
            _ => bail!(
                "{} holds neither an entity nor an array of entities",
                file.display()
            ),
        }
    }
    let target = Target {
        url: args.url,
        auth: args.auth,
        tenant: args.tenant,
        context: args.context,
        batch_size: args.batch_size,
    };
    let progress = ProgressBar::new(entities.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} entities {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = upsert(&target, entities, &progress).await?;
    progress.finish_and_clear();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} stored, {} failed",
        report.stored,
        report.errors.len()
    )?;
    for error in report.errors.iter().take(20) {
        writeln!(out, "  {error}")?;
    }
    if report.errors.len() > 20 {
        writeln!(out, "  … and {} more", report.errors.len() - 20)?;
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            let is_json = entry
                .extension()
                .is_some_and(|e| e == "json" || e == "jsonld");
            if entry.is_dir() || is_json {
                collect_files(&entry, files)?;
            }
        }
        Ok(())
    } else if path.is_file() {
        files.push(path.to_owned());
        Ok(())
    } else {
        bail!("{} does not exist", path.display())
    }
}

/// Upserts `entities` in batches: entities with an inline @context go as JSON-LD, the others as
/// JSON with the target's Link context.
pub async fn upsert(
    target: &Target,
    entities: Vec<Value>,
    progress: &ProgressBar,
) -> anyhow::Result<LoadReport> {
    let client = reqwest::Client::builder().build()?;
    let endpoint = format!(
        "{}/ngsi-ld/v1/entityOperations/upsert",
        target.url.trim_end_matches('/')
    );
    let (with_context, without): (Vec<Value>, Vec<Value>) = entities
        .into_iter()
        .partition(|e| e.get("@context").is_some());
    let mut report = LoadReport::default();
    for (batch_entities, json_ld) in [(with_context, true), (without, false)] {
        for batch in batch_entities.chunks(target.batch_size) {
            let mut request = client
                .post(&endpoint)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    if json_ld {
                        "application/ld+json"
                    } else {
                        "application/json"
                    },
                )
                .body(Value::Array(batch.to_vec()).to_string());
            if !json_ld && let Some(context) = &target.context {
                request = request.header(
                        reqwest::header::LINK,
                        format!("<{context}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\""),
                    );
            }
            if let Some(token) = &target.auth {
                request = request.bearer_auth(token);
            }
            if let Some(tenant) = &target.tenant {
                request = request.header("NGSILD-Tenant", tenant);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("sending a batch to {endpoint}"))?;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            match status {
                201 | 204 => report.stored += batch.len(),
                207 => {
                    report.stored += body["success"].as_array().map_or(0, Vec::len);
                    for error in body["errors"].as_array().into_iter().flatten() {
                        report.errors.push(format!(
                            "{}: {}",
                            error["entityId"].as_str().unwrap_or("(no id)"),
                            error["error"]["detail"].as_str().unwrap_or("failed")
                        ));
                    }
                }
                _ => bail!(
                    "{endpoint} answered {status}: {}",
                    body["detail"].as_str().unwrap_or("(no detail)")
                ),
            }
            progress.inc(batch.len() as u64);
        }
    }
    Ok(report)
}
