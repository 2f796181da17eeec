//! `civitas keygen` and `civitas token issue | attenuate | inspect | revoke`: a department's root
//! key and the capability tokens it signs, all offline except `revoke`, which asks the connector.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use civitas_auth::keys::{RootKey, parse_public};
use civitas_auth::token::{self, ANY, Restrictions, TokenSpec};
use civitas_connector::clock::{Clock, SystemClock};
use civitas_ngsild::context::{self, ActiveContext};
use serde_json::Value;

/// Arguments of `civitas keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private key (created with mode 0600; never overwritten).
    #[arg(long)]
    out: PathBuf,
}

/// `civitas token …`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Mint a token signed by a department's root key; prints it (base64url).
    Issue(IssueArgs),
    /// Narrow a token offline, without the issuer; prints the new token.
    Attenuate(AttenuateArgs),
    /// Show a token's blocks and revocation ids (and, with --key or --public-key, whether it verifies).
    Inspect(InspectArgs),
    /// Revoke a token at its department's connector: it and every token attenuated from it stop
    /// working at once (the caller authenticates with an admin token of that department).
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The token to revoke.
    #[arg(long)]
    token: String,
    /// The connector's base URL (e.g. http://127.0.0.1:9092).
    #[arg(long)]
    url: String,
    /// An admin token of the connector's department.
    #[arg(long, env = "CIVITAS_TOKEN", hide_env_values = true)]
    auth: Option<String>,
    /// Why the token is revoked (kept with the revocation).
    #[arg(long, default_value = "")]
    reason: String,
}

/// Flags shared by issue and attenuate.
#[derive(Debug, clap::Args)]
struct RestrictionFlags {
    /// Entity types that may be read (names are expanded with --context; '*' for all).
    #[arg(long, value_delimiter = ',')]
    read: Option<Vec<String>>,
    /// Entity types that may be written.
    #[arg(long, value_delimiter = ',')]
    write: Option<Vec<String>>,
    /// Attributes that may be seen or written (default: all).
    #[arg(long, value_delimiter = ',')]
    attrs: Option<Vec<String>>,
    /// The purpose the token is for.
    #[arg(long)]
    purpose: Option<String>,
    /// How long the token lives, e.g. 90s, 15m, 12h, 30d.
    #[arg(long)]
    ttl: Option<String>,
    /// The tenant(s) the token may address.
    #[arg(long, value_delimiter = ',')]
    tenant: Option<Vec<String>>,
    /// Raw datalog added to the block.
    #[arg(long)]
    datalog: Option<String>,
    /// A JSON-LD @context file used to expand type and attribute names (else: the core context).
    #[arg(long)]
    context: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// The department's private root key file (from `civitas keygen`).
    #[arg(long)]
    key: PathBuf,
    /// Who the token is for.
    #[arg(long)]
    holder: String,
    /// May administer the connector (revoke tokens).
    #[arg(long)]
    admin: bool,
    /// May read the audit log.
    #[arg(long)]
    audit: bool,
    #[command(flatten)]
    flags: RestrictionFlags,
}

#[derive(Debug, clap::Args)]
pub struct AttenuateArgs {
    /// The token to narrow.
    #[arg(long, env = "CIVITAS_TOKEN", hide_env_values = true)]
    token: String,
    /// Remove every write right.
    #[arg(long)]
    read_only: bool,
    #[command(flatten)]
    flags: RestrictionFlags,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The token to show.
    #[arg(long, env = "CIVITAS_TOKEN", hide_env_values = true)]
    token: String,
    /// Verify against this private key file's public half.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Verify against this public key (`ed25519/<hex>`).
    #[arg(long)]
    public_key: Option<String>,
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let key = RootKey::generate()?;
    write_private(&args.out, &key.to_file_text())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", key.public_string())?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a private key file readable by its owner only, refusing to replace an existing file.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| {
        format!(
            "creating {} (an existing key is never overwritten)",
            path.display()
        )
    })?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

pub async fn run(command: TokenCommand) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now();
    match command {
        TokenCommand::Revoke(args) => return revoke(args).await,
        TokenCommand::Issue(args) => {
            let key = read_key(&args.key)?;
            let names = Names::new(args.flags.context.as_deref())?;
            let spec = TokenSpec {
                holder: args.holder,
                read: names.expand(args.flags.read.unwrap_or_default()),
                write: names.expand(args.flags.write.unwrap_or_default()),
                attributes: args.flags.attrs.map(|a| names.expand(a)),
                purpose: args.flags.purpose,
                tenants: args.flags.tenant,
                ttl: args.flags.ttl.as_deref().map(parse_duration).transpose()?,
                admin: args.admin,
                audit: args.audit,
                datalog: args.flags.datalog,
            };
            writeln!(std::io::stdout(), "{}", token::issue(&key, &spec, now)?)?;
        }
        TokenCommand::Attenuate(args) => {
            let names = Names::new(args.flags.context.as_deref())?;
            let write = if args.read_only {
                Some(Vec::new())
            } else {
                args.flags.write.map(|w| names.expand(w))
            };
            let restrictions = Restrictions {
                read: args.flags.read.map(|r| names.expand(r)),
                write,
                attributes: args.flags.attrs.map(|a| names.expand(a)),
                purposes: args.flags.purpose.map(|p| vec![p]),
                tenants: args.flags.tenant,
                ttl: args.flags.ttl.as_deref().map(parse_duration).transpose()?,
                datalog: args.flags.datalog,
            };
            writeln!(
                std::io::stdout(),
                "{}",
                token::attenuate(&args.token, &restrictions, now)?
            )?;
        }
        TokenCommand::Inspect(args) => {
            let public = match (&args.key, &args.public_key) {
                (Some(path), _) => Some(read_key(path)?.public()),
                (None, Some(text)) => Some(parse_public(text)?),
                (None, None) => None,
            };
            let inspection = token::inspect(&args.token, public.as_ref())?;
            let mut out = std::io::stdout().lock();
            for (index, (source, id)) in inspection
                .blocks
                .iter()
                .zip(&inspection.revocation_ids)
                .enumerate()
            {
                let title = if index == 0 {
                    "authority block".to_owned()
                } else {
                    format!("block {index}")
                };
                writeln!(out, "== {title} (revocation id {id})")?;
                writeln!(out, "{}", source.trim_end())?;
            }
            match inspection.verified {
                Some(true) => writeln!(out, "signature: valid for the given root key")?,
                Some(false) => {
                    writeln!(out, "signature: NOT valid for the given root key")?;
                    return Ok(ExitCode::FAILURE);
                }
                None => writeln!(out, "signature: not checked (pass --key or --public-key)")?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `civitas token revoke`: `POST /admin/v1/revocations` at the connector.
async fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let url = format!("{}/admin/v1/revocations", args.url.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({ "token": args.token.trim(), "reason": args.reason }));
    if let Some(auth) = &args.auth {
        request = request.bearer_auth(auth.trim());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = body["detail"].as_str().unwrap_or("no details");
        bail!("revocation refused ({status}): {detail}");
    }
    let mut out = std::io::stdout().lock();
    for id in body["revoked"].as_array().into_iter().flatten() {
        writeln!(out, "revoked {}", id.as_str().unwrap_or_default())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A department's root key file: read if it exists, created (mode 0600) otherwise.
pub fn ensure_key(path: &Path) -> anyhow::Result<RootKey> {
    if path.exists() {
        return read_key(path);
    }
    let key = RootKey::generate()?;
    write_private(path, &key.to_file_text())?;
    Ok(key)
}

/// Mints a token into `path` unless the file exists (tokens are secrets: mode 0600).
pub fn ensure_token(path: &Path, key: &RootKey, spec: &TokenSpec) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let token = token::issue(key, spec, SystemClock.now())?;
    write_private(path, &format!("{token}\n"))
}

fn read_key(path: &Path) -> anyhow::Result<RootKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    RootKey::parse(&text).with_context(|| format!("{} is not a root key file", path.display()))
}

/// Parses `90s`, `15m`, `12h`, `30d`.
fn parse_duration(text: &str) -> anyhow::Result<chrono::Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a duration like 90s, 15m, 12h or 30d"))?;
    let duration = match unit {
        "s" => chrono::Duration::try_seconds(number),
        "m" => chrono::Duration::try_minutes(number),
        "h" => chrono::Duration::try_hours(number),
        "d" => chrono::Duration::try_days(number),
        _ => None,
    };
    match duration {
        Some(d) if d > chrono::Duration::zero() => Ok(d),
        _ => bail!("{text:?} is not a duration like 90s, 15m, 12h or 30d"),
    }
}

/// Expands type and attribute names the way the connector will: with the given @context file and
/// the core context (names that are already IRIs stay as they are).
struct Names(ActiveContext);

impl Names {
    fn new(context_file: Option<&Path>) -> anyhow::Result<Names> {
        let core: Arc<Value> = Arc::new(serde_json::from_str(context::CORE_CONTEXT_V1_8)?);
        let local = match context_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let document: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                document
                    .get("@context")
                    .cloned()
                    .with_context(|| format!("{} has no @context", path.display()))?
            }
            None => Value::Array(Vec::new()),
        };
        let mut loader = |url: &str| {
            if url == context::CORE_CONTEXT_URL {
                Ok(core.clone())
            } else {
                Err(civitas_ngsild::Error::ContextNotLoaded(url.to_owned()))
            }
        };
        let mut items = match local {
            Value::Array(items) => items,
            single => vec![single],
        };
        items.push(Value::String(context::CORE_CONTEXT_URL.to_owned()));
        let with_core = Value::Array(items);
        let active = ActiveContext::empty()
            .process(&with_core, &mut loader)
            .context(
                "the @context file names remote contexts; give a self-contained context file",
            )?;
        Ok(Names(active))
    }

    fn expand(&self, names: Vec<String>) -> Vec<String> {
        names
            .into_iter()
            .map(|name| {
                if name == ANY {
                    name
                } else {
                    self.0.expand_name(&name)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("90s").ok(),
            Some(chrono::Duration::seconds(90))
        );
        assert_eq!(parse_duration("30d").ok(), Some(chrono::Duration::days(30)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn names_expand_like_the_connector_does() {
        let names = Names::new(None).expect("core context");
        assert_eq!(
            names.expand(vec![
                "Bench".into(),
                "*".into(),
                "https://example.org/Spot".into()
            ]),
            [
                "https://uri.etsi.org/ngsi-ld/default-context/Bench",
                "*",
                "https://example.org/Spot"
            ]
        );
    }
}
