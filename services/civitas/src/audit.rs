//! `civitas audit`: the auditor's tools. `verify` fetches a service's audit log and checks it
//! the way an auditor who trusts nobody would (`civitas_audit::auditor::verify` over HTTP);
//! `log` lists its records.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use civitas_audit::auditor::{self, Policy, Source, State};
use civitas_audit::checkpoint::CosignatureVerifier;
use civitas_audit::note::Verifier;
use civitas_audit::record::{Decision, Event, Record};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Fetch a service's audit log and verify it: the checkpoint's signature and the required
    /// witness cosignatures, consistency with the checkpoint remembered in --state, that the
    /// tiles hash to the checkpoint's root, and the inclusion of every entry. Exit 0 only if all
    /// holds; else print what failed and exit 1.
    Verify(VerifyArgs),
    /// List a service's audit records (who did what, when, and what was decided), filtered.
    Log(LogArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The service's base URL (e.g. http://127.0.0.1:9092); the log is read from URL/audit/v1/.
    #[arg(long)]
    url: String,
    /// A token with the `audit` right of the service's department.
    #[arg(long, env = "CIVITAS_TOKEN", hide_env_values = true)]
    auth: Option<String>,
    /// A file remembering the last verified checkpoint (and the log's key): the log must extend
    /// it. Created or updated only when the verification succeeds.
    #[arg(long)]
    state: Option<PathBuf>,
    /// The log's verifier key (`origin+keyid+base64`). Default: the key remembered in --state,
    /// else the `auditKey` the service publishes at /.well-known/civitas.
    #[arg(long)]
    key: Option<String>,
    /// A witness's cosignature verifier key; repeat for several.
    #[arg(long = "witness")]
    witnesses: Vec<String>,
    /// How many of the --witness keys must have cosigned the checkpoint (default: all of them).
    #[arg(long)]
    witnesses_required: Option<usize>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// The service's base URL (e.g. http://127.0.0.1:9092).
    #[arg(long)]
    url: String,
    /// A token with the `audit` right of the service's department.
    #[arg(long, env = "CIVITAS_TOKEN", hide_env_values = true)]
    auth: Option<String>,
    /// Only records of this token holder (the service turns the name into its pseudonym).
    #[arg(long)]
    holder: Option<String>,
    /// Only records that name this entity id.
    #[arg(long)]
    entity: Option<String>,
    /// Only records that name this entity type (an expanded IRI, or a name of the core context).
    #[arg(long = "type")]
    entity_type: Option<String>,
    /// Only records of this operation: read, write, admin or audit.
    #[arg(long)]
    operation: Option<String>,
    /// Only allowed, only refused, or only forwarded requests (a broker's writes that only
    /// context sources decided).
    #[arg(long, value_parser = ["allowed", "refused", "forwarded"])]
    decision: Option<String>,
    /// Only the record of this request id (the Civitas-Request-Id response header).
    #[arg(long)]
    request_id: Option<String>,
    /// Only records at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Only records before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// At most this many records (default: all that match).
    #[arg(long)]
    limit: Option<u64>,
    /// Print a JSON array of the records (with their index and leaf hash) instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    // The auditor reads synchronously; its HTTP client runs on a blocking thread.
    tokio::task::spawn_blocking(move || match command {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Log(args) => log(args),
    })
    .await
    .context("the audit command stopped")?
}

/// What `--state` holds: the log's key and the auditor's state.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    /// The log's verifier key.
    key: String,
    /// `civitas_audit::auditor::State` as JSON.
    log: Value,
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.url, args.auth.as_deref())?;
    let remembered = match &args.state {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the state file {}", path.display()))?;
            let file: StateFile = serde_json::from_str(&text).with_context(|| {
                format!(
                    "the state file {} is not a civitas audit state",
                    path.display()
                )
            })?;
            Some(file)
        }
        _ => None,
    };
    let key = match (&args.key, &remembered) {
        (Some(given), Some(file)) if *given != file.key => {
            return fail(
                &args,
                &format!(
                    "the log's key {given} is not the key remembered in the state file ({})",
                    file.key
                ),
            );
        }
        (Some(given), _) => given.clone(),
        (None, Some(file)) => file.key.clone(),
        (None, None) => client.published_key()?,
    };
    let log = Verifier::from_vkey(&key).with_context(|| format!("{key:?} is not a log key"))?;
    let witnesses = args
        .witnesses
        .iter()
        .map(|vkey| {
            CosignatureVerifier::from_vkey(vkey)
                .with_context(|| format!("{vkey:?} is not a witness key"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let required = args.witnesses_required.unwrap_or(witnesses.len());
    if required > witnesses.len() {
        bail!(
            "--witnesses-required {required} is more than the {} --witness keys given",
            witnesses.len()
        );
    }
    let policy = Policy {
        origin: log.name().to_owned(),
        log,
        witnesses,
        required_witnesses: required,
    };
    let state = match &remembered {
        None => None,
        Some(file) => match State::from_json(&file.log.to_string(), &policy) {
            Ok(state) => Some(state),
            Err(error) => return fail(&args, &format!("the state file: {error}")),
        },
    };
    let mut source = HttpSource::new(client);
    let outcome = auditor::verify(&mut source, &policy, state.as_ref(), |_, entry| {
        source_progress_tick();
        Record::from_entry(entry)
            .map(|_| ())
            .map_err(|error| error.to_string())
    });
    finish_progress();
    let (report, new_state) = match outcome {
        Ok(verified) => verified,
        Err(error) => return fail(&args, &with_causes(&error)),
    };
    if let Some(path) = &args.state {
        let file = StateFile {
            key: key.clone(),
            log: serde_json::from_str(&new_state.to_json())?,
        };
        write_atomically(path, &format!("{:#}\n", json!(file)))?;
    }
    let witnesses: Vec<&str> = report
        .cosigned_by
        .iter()
        .map(|cosignature| cosignature.witness.as_str())
        .collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        let summary = json!({
            "verified": true,
            "origin": report.origin,
            "size": report.size,
            "entriesChecked": report.entries_checked,
            "extends": report.extends,
            "cosignedBy": witnesses,
        });
        writeln!(out, "{summary}")?;
    } else {
        let extends = match report.extends {
            Some(size) => format!(", consistent with the remembered checkpoint of {size}"),
            None => String::new(),
        };
        let cosigned = match witnesses.len() {
            0 => String::new(),
            _ => format!(", cosigned by {}", witnesses.join(", ")),
        };
        writeln!(
            out,
            "verified {}: checkpoint of {} entries, {} entries proven included{extends}{cosigned}",
            report.origin, report.size, report.entries_checked
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// An error and its causes, `: `-separated.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        message.push_str(&format!(": {next}"));
        cause = next.source();
    }
    message
}

/// Reports a failed verification: on stderr (and stdout with --json), exit 1.
fn fail(args: &VerifyArgs, problem: &str) -> anyhow::Result<ExitCode> {
    if args.json {
        writeln!(
            std::io::stdout().lock(),
            "{}",
            json!({"verified": false, "problem": problem})
        )?;
    }
    writeln!(
        std::io::stderr().lock(),
        "audit log of {} NOT verified: {problem}",
        args.url
    )?;
    Ok(ExitCode::FAILURE)
}

/// Writes `text` to `path` through a temporary file in the same folder and a rename, so the file
/// is either the old state or the new one.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let folder = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("the state file needs a file name")?
        .to_string_lossy();
    let temporary = folder.join(format!(".{name}.tmp"));
    std::fs::write(&temporary, text)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// A service's audit API, read with a bearer token.
struct Client {
    http: reqwest::blocking::Client,
    base: String,
    auth: Option<String>,
}

impl Client {
    fn new(url: &str, auth: Option<&str>) -> anyhow::Result<Client> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client {
            http,
            base: url.trim_end_matches('/').to_owned(),
            auth: auth.map(|token| token.trim().to_owned()),
        })
    }

    /// GETs `path` (from the service's base): the status and the body.
    fn get(&self, path: &str) -> reqwest::Result<(u16, Vec<u8>)> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = &self.auth {
            request = request.bearer_auth(token);
        }
        let response = request.send()?;
        let status = response.status().as_u16();
        Ok((status, response.bytes()?.to_vec()))
    }

    /// The `auditKey` the service publishes.
    fn published_key(&self) -> anyhow::Result<String> {
        let (status, body) = self
            .get("/.well-known/civitas")
            .with_context(|| format!("cannot reach {}", self.base))?;
        if status != 200 {
            bail!("{}/.well-known/civitas answered {status}", self.base);
        }
        let metadata: Value = serde_json::from_slice(&body)
            .with_context(|| format!("{}/.well-known/civitas is not JSON", self.base))?;
        metadata["auditKey"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{} publishes no auditKey", self.base))
    }
}

/// Why a resource could not be fetched.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error(
        "the service refused the token ({0}): reading the audit log needs a token with the audit right (--auth or CIVITAS_TOKEN)"
    )]
    Refused(u16),
    #[error("the service answered {0}")]
    Status(u16),
}

/// The log as the auditor reads it: `URL/audit/v1/<path>`.
struct HttpSource {
    client: Client,
}

impl HttpSource {
    fn new(client: Client) -> HttpSource {
        HttpSource { client }
    }
}

impl Source for HttpSource {
    fn get(&mut self, path: &str) -> Result<Option<Vec<u8>>, civitas_audit::Error> {
        let fetch_error = |error: FetchError| civitas_audit::Error::Fetch {
            path: path.to_owned(),
            source: Box::new(error),
        };
        let (status, body) = self
            .client
            .get(&format!("/audit/v1/{path}"))
            .map_err(|error| fetch_error(error.into()))?;
        match status {
            200 => Ok(Some(body)),
            404 => Ok(None),
            401 | 403 => Err(fetch_error(FetchError::Refused(status))),
            other => Err(fetch_error(FetchError::Status(other))),
        }
    }
}

thread_local! {
    /// The progress bar of a long verification (on a terminal only).
    static PROGRESS: std::cell::RefCell<Option<indicatif::ProgressBar>> =
        const { std::cell::RefCell::new(None) };
}

/// Counts one verified entry on the progress bar (shown when stderr is a terminal).
fn source_progress_tick() {
    PROGRESS.with(|cell| {
        let mut bar = cell.borrow_mut();
        if bar.is_none() && std::io::stderr().is_terminal() {
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_message("entries proven included");
            *bar = Some(spinner);
        }
        if let Some(bar) = bar.as_ref() {
            bar.inc(1);
        }
    });
}

fn finish_progress() {
    PROGRESS.with(|cell| {
        if let Some(bar) = cell.borrow_mut().take() {
            bar.finish_and_clear();
        }
    });
}

fn log(args: LogArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.url, args.auth.as_deref())?;
    let mut filters: Vec<(&str, &str)> = Vec::new();
    let pairs = [
        ("holder", &args.holder),
        ("entity", &args.entity),
        ("type", &args.entity_type),
        ("operation", &args.operation),
        ("decision", &args.decision),
        ("requestId", &args.request_id),
        ("since", &args.since),
        ("until", &args.until),
    ];
    for (name, value) in &pairs {
        if let Some(value) = value {
            filters.push((name, value.as_str()));
        }
    }
    let mut listed: Vec<Value> = Vec::new();
    let mut after: Option<u64> = None;
    let wanted = args.limit.unwrap_or(u64::MAX);
    while (listed.len() as u64) < wanted {
        let page = (wanted - listed.len() as u64).min(1000);
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in &filters {
            query.append_pair(name, value);
        }
        query.append_pair("limit", &page.to_string());
        if let Some(after) = after {
            query.append_pair("after", &after.to_string());
        }
        let path = format!("/audit/v1/records?{}", query.finish());
        let (status, body) = client
            .get(&path)
            .with_context(|| format!("cannot reach {}", args.url))?;
        match status {
            200 => {}
            401 | 403 => bail!(
                "{} refused the token ({status}): listing audit records needs a token with the audit right",
                args.url
            ),
            _ => bail!(
                "{} answered {status}: {}",
                args.url,
                String::from_utf8_lossy(&body)
            ),
        }
        let page: Value = serde_json::from_slice(&body).context("the listing is not JSON")?;
        let records = page["records"]
            .as_array()
            .context("the listing has no records array")?;
        listed.extend(records.iter().cloned());
        match page["next"].as_u64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    listed.truncate(usize::try_from(wanted).unwrap_or(usize::MAX));
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{:#}", Value::Array(listed))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![HEADER.map(str::to_owned).to_vec()];
    for item in &listed {
        let record: Record = serde_json::from_value(item["record"].clone())
            .context("a listed record is not an audit record")?;
        rows.push(row(item["index"].as_u64().unwrap_or_default(), &record));
    }
    write_table(&mut out, &rows)?;
    writeln!(out, "{} record(s)", listed.len())?;
    Ok(ExitCode::SUCCESS)
}

const HEADER: [&str; 10] = [
    "INDEX",
    "TIME",
    "HOLDER",
    "OPERATION",
    "DECISION",
    "TYPES",
    "ENTITIES",
    "ATTRIBUTES",
    "STATUS",
    "REQUEST",
];

/// One record as a table row.
fn row(index: u64, record: &Record) -> Vec<String> {
    let Event::Access(access) = &record.event;
    let time = chrono::DateTime::from_timestamp_micros(record.time)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| record.time.to_string());
    let decision = match &access.decision {
        Decision::Allowed => "allowed".to_owned(),
        Decision::Refused { status } => format!("refused {status}"),
        Decision::Forwarded => "forwarded".to_owned(),
    };
    let short = |names: &[String]| {
        let shown: Vec<&str> = names.iter().map(|name| short_name(name)).collect();
        if shown.is_empty() {
            "-".to_owned()
        } else {
            shown.join(",")
        }
    };
    let entities = match (&access.ids_digest, access.entity_ids.len(), access.count) {
        (Some(_), _, Some(count)) => format!("{count} (digest)"),
        (Some(_), _, None) => "many (digest)".to_owned(),
        (None, 0, None) => "-".to_owned(),
        (None, 0, Some(count)) => count.to_string(),
        (None, 1, _) => access.entity_ids[0].clone(),
        (None, listed, Some(count)) => format!("{listed} ids, {count}"),
        (None, listed, None) => format!("{listed} ids"),
    };
    vec![
        index.to_string(),
        time,
        access
            .holder
            .clone()
            .unwrap_or_else(|| "anonymous".to_owned()),
        access.operation.clone(),
        decision,
        short(&access.entity_types),
        if entities == "0" {
            "-".to_owned()
        } else {
            entities
        },
        short(&access.attributes),
        access
            .status
            .map(|status| status.to_string())
            .unwrap_or_else(|| "-".to_owned()),
        record.request_id.clone(),
    ]
}

/// The last segment of an expanded name (after `/` or `#`).
fn short_name(name: &str) -> &str {
    name.rsplit(['/', '#']).next().unwrap_or(name)
}

fn write_table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let columns = rows.first().map(Vec::len).unwrap_or_default();
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or_default()
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use civitas_audit::record::{Access, FORMAT_VERSION};

    fn record(access: Access) -> Record {
        Record {
            v: FORMAT_VERSION,
            time: 1_767_225_600_000_000,
            service: "transport".to_owned(),
            request_id: "r-1".to_owned(),
            trace_id: None,
            event: Event::Access(access),
        }
    }

    #[test]
    fn rows_say_who_did_what() {
        let check = |access: Access, expected: [&str; 10]| {
            assert_eq!(row(7, &record(access)), expected.map(str::to_owned));
        };
        check(
            Access {
                holder: Some("h:abc".to_owned()),
                entity_types: vec![
                    "https://smartdatamodels.org/dataModel.Parking/ParkingSpot".to_owned(),
                ],
                entity_ids: vec!["h:e1".to_owned(), "h:e2".to_owned()],
                attributes: vec!["https://smartdatamodels.org/status".to_owned()],
                count: Some(2),
                status: Some(200),
                ..Access::new("read", Decision::Allowed)
            },
            [
                "7",
                "2026-01-01T00:00:00.000Z",
                "h:abc",
                "read",
                "allowed",
                "ParkingSpot",
                "2 ids, 2",
                "status",
                "200",
                "r-1",
            ],
        );
        check(
            Access::new("audit", Decision::Refused { status: 401 }),
            [
                "7",
                "2026-01-01T00:00:00.000Z",
                "anonymous",
                "audit",
                "refused 401",
                "-",
                "-",
                "-",
                "-",
                "r-1",
            ],
        );
        check(
            Access {
                entity_ids: vec!["h:e1".to_owned()],
                count: Some(1),
                ..Access::new("write", Decision::Refused { status: 403 })
            },
            [
                "7",
                "2026-01-01T00:00:00.000Z",
                "anonymous",
                "write",
                "refused 403",
                "-",
                "h:e1",
                "-",
                "-",
                "r-1",
            ],
        );
    }

    #[test]
    fn tables_align_their_columns() {
        let rows = vec![
            vec!["A".to_owned(), "BB".to_owned()],
            vec!["ccc".to_owned(), "d".to_owned()],
        ];
        let mut out = Vec::new();
        write_table(&mut out, &rows).expect("written");
        assert_eq!(String::from_utf8(out).expect("utf-8"), "A    BB\nccc  d\n");
    }
}
