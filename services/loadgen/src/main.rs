//! `civitas-loadgen`: drives a Civitas connector over HTTP and reports throughput and latency.
//!
//! * `create` — single-entity create (`POST /ngsi-ld/v1/entities`), one new entity per request;
//! * `retrieve` — single-entity retrieve (`GET /ngsi-ld/v1/entities/{id}`) of entities already stored
//!   (`--populate` loads them first, untimed);
//! * `batch` — batch upsert (`POST /ngsi-ld/v1/entityOperations/upsert`) of many entities;
//! * `query` — the same query (`GET /ngsi-ld/v1/entities?…`) again and again, against a connector
//!   or a broker (several tokens: `--auth "T1, T2"`);
//! * `append` — no HTTP: appends audit records to a connector's audit log in this process, and
//!   reports records per second and how long until a signed checkpoint covers them.
//!
//! Entities are generated deterministically (Smart Data Models `ParkingSpot`s, normalized, sent as
//! `application/json` with the Parking @context in a Link header). Only `http://` URLs on the
//! loopback interface are accepted, and every run is bounded both in requests and in time.
//! Each run prints one summary line: counts, requests/s, entities/s, p50/p99/max latency.
//! `--auth TOKEN` (or `CIVITAS_TOKEN`) sends a capability token with every request, the untimed
//! ones included; without it the requests are anonymous.

mod append;
mod drive;
mod generate;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, LINK};
use serde_json::Value;

use crate::drive::{Done, Outcome, percentile};

/// The longest a run may last, whatever `--duration` says.
const MAX_DURATION_SECS: u64 = 900;
/// The most requests a run may send, whatever the counts say.
const MAX_REQUESTS: u64 = 10_000_000;

/// Load generator for Civitas connectors (loopback only).
#[derive(Debug, Parser)]
#[command(name = "civitas-loadgen", version, about, long_about = None)]
struct Cli {
    /// A capability token, sent as `Authorization: Bearer TOKEN` with every request (warm-up and
    /// --populate included). Without it, requests are anonymous: the connector's anonymous policy
    /// must allow them. May be given before or after the command.
    #[arg(long, global = true, env = "CIVITAS_TOKEN", hide_env_values = true)]
    auth: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create entities one per request (POST /ngsi-ld/v1/entities).
    Create(CreateArgs),
    /// Retrieve stored entities one per request (GET /ngsi-ld/v1/entities/{id}).
    Retrieve(RetrieveArgs),
    /// Upsert entities in batches (POST /ngsi-ld/v1/entityOperations/upsert).
    Batch(BatchArgs),
    /// Send one query again and again (GET /ngsi-ld/v1/entities?QUERY).
    Query(QueryArgs),
    /// Append audit records to an audit log in this process (no HTTP): records per second and
    /// merge delay.
    Append(append::AppendArgs),
}

#[derive(Debug, clap::Args)]
struct Common {
    /// The connector's base URL, e.g. http://127.0.0.1:9192 (loopback only).
    #[arg(long)]
    url: String,
    /// Requests in flight at once (one connection each).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Time budget of the timed run, in seconds (at most 900): the run stops when it is used up.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Worker threads of the load generator's runtime (1 leaves the most CPU to the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Prefix of the generated entity ids; the entity number follows it.
    #[arg(long, default_value = "urn:ngsi-ld:ParkingSpot:bench:")]
    id_prefix: String,
    /// @context sent in a Link header; an empty value sends none (core context only).
    #[arg(long, default_value = generate::PARKING_CONTEXT)]
    context: String,
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    #[command(flatten)]
    common: Common,
    /// Entities to create (one request each).
    #[arg(long, default_value_t = 5_000)]
    requests: u64,
    /// Number of the first entity (entities first..first+requests are created; they must not exist).
    #[arg(long, default_value_t = 0)]
    first: u64,
}

#[derive(Debug, clap::Args)]
struct RetrieveArgs {
    #[command(flatten)]
    common: Common,
    /// Retrieve requests to send (timed).
    #[arg(long, default_value_t = 50_000)]
    requests: u64,
    /// Entities to pick from: numbers first..first+entities, chosen pseudo-randomly per request.
    #[arg(long, default_value_t = 10_000)]
    entities: u64,
    /// Number of the first entity.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Upsert those entities first (untimed), in batches of 1,000.
    #[arg(long)]
    populate: bool,
    /// Untimed requests sent before the timed run (connections, caches).
    #[arg(long, default_value_t = 500)]
    warmup: u64,
    /// Extra query string for each retrieve, e.g. `options=keyValues`.
    #[arg(long)]
    query: Option<String>,
}

#[derive(Debug, clap::Args)]
struct QueryArgs {
    #[command(flatten)]
    common: Common,
    /// The query string, e.g. `type=ParkingSpot&limit=20`.
    #[arg(long)]
    query: String,
    /// Queries to send (timed).
    #[arg(long, default_value_t = 5_000)]
    requests: u64,
    /// Untimed queries sent before the timed run.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// Fail the run unless every answer has exactly this many entities.
    #[arg(long)]
    expect: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct BatchArgs {
    #[command(flatten)]
    common: Common,
    /// Entities to upsert in all.
    #[arg(long, default_value_t = 100_000)]
    entities: u64,
    /// Entities per request.
    #[arg(long, default_value_t = 1_000)]
    batch_size: u64,
    /// Number of the first entity.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// `options` of the upsert: `replace` (the default) or `update`.
    #[arg(long)]
    options: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let threads = match &cli.command {
        Command::Create(args) => args.common.threads,
        Command::Retrieve(args) => args.common.threads,
        Command::Batch(args) => args.common.threads,
        Command::Query(args) => args.common.threads,
        Command::Append(args) => args.threads(),
    };
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let auth = cli.auth;
    let outcome = match runtime {
        Ok(runtime) => runtime.block_on(async move {
            match cli.command {
                Command::Create(args) => create(args, auth).await,
                Command::Retrieve(args) => retrieve(args, auth).await,
                Command::Batch(args) => batch(args, auth).await,
                Command::Query(args) => query(args, auth).await,
                Command::Append(args) => append::run(args).await,
            }
        }),
        Err(error) => Err(error.into()),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            let _ = writeln!(std::io::stderr().lock(), "error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What every command shares: the client, the base URL, the bounds.
struct Target {
    client: reqwest::Client,
    base: String,
    concurrency: usize,
    budget: Duration,
    id_prefix: String,
}

impl Target {
    fn new(common: &Common, auth: Option<&str>) -> anyhow::Result<Target> {
        let url = url::Url::parse(&common.url).with_context(|| format!("--url {}", common.url))?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        if url.scheme() != "http" || !loopback {
            bail!(
                "--url must be an http:// URL on the loopback interface (127.0.0.1, [::1], localhost), not {url}"
            );
        }
        if common.concurrency == 0 || common.concurrency > 1_024 {
            bail!("--concurrency must be between 1 and 1024");
        }
        if common.duration == 0 || common.duration > MAX_DURATION_SECS {
            bail!("--duration must be between 1 and {MAX_DURATION_SECS} seconds");
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if !common.context.is_empty() {
            let link = format!(
                "<{}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"",
                common.context
            );
            headers.insert(LINK, HeaderValue::from_str(&link).context("--context")?);
        }
        if let Some(token) = auth {
            let token = token.trim();
            if token.is_empty() {
                bail!("--auth (or CIVITAS_TOKEN) is empty");
            }
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .context("--auth: the token is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(common.concurrency)
            .build()
            .context("building the HTTP client")?;
        Ok(Target {
            client,
            base: url.as_str().trim_end_matches('/').to_owned(),
            concurrency: common.concurrency,
            budget: Duration::from_secs(common.duration),
            id_prefix: common.id_prefix.clone(),
        })
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}/ngsi-ld/v1{path}", self.base)
    }
}

fn check_count(count: u64, what: &str) -> anyhow::Result<()> {
    if count == 0 || count > MAX_REQUESTS {
        bail!("{what} must be between 1 and {MAX_REQUESTS}");
    }
    Ok(())
}

async fn create(args: CreateArgs, auth: Option<String>) -> anyhow::Result<ExitCode> {
    check_count(args.requests, "--requests")?;
    let target = Target::new(&args.common, auth.as_deref())?;
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (args.first..args.first + args.requests)
            .map(|index| {
                generate::parking_spot(&target.id_prefix, index)
                    .to_string()
                    .into_bytes()
            })
            .collect(),
    );
    let client = target.client.clone();
    let url = target.endpoint("/entities");
    let outcome = drive::run(
        target.concurrency,
        args.requests,
        target.budget,
        move |index| {
            let request = client
                .post(&url)
                .header(CONTENT_TYPE, "application/json")
                .body(bodies[index as usize].clone());
            async move { single(request, StatusCode::CREATED).await }
        },
    )
    .await;
    report("create", &outcome, 1, target.concurrency)
}

async fn retrieve(args: RetrieveArgs, auth: Option<String>) -> anyhow::Result<ExitCode> {
    check_count(args.requests, "--requests")?;
    check_count(args.entities, "--entities")?;
    let target = Target::new(&args.common, auth.as_deref())?;
    if args.populate {
        populate(&target, args.first, args.entities).await?;
    }
    let query = args.query.map(|q| format!("?{q}")).unwrap_or_default();
    let urls: Arc<Vec<String>> = Arc::new(
        (args.first..args.first + args.entities)
            .map(|index| {
                target.endpoint(&format!(
                    "/entities/{}{query}",
                    generate::entity_id(&target.id_prefix, index)
                ))
            })
            .collect(),
    );
    let pick = {
        let entities = args.entities;
        move |request: u64| (generate::SplitMix64(request).next() % entities) as usize
    };
    let op = {
        let client = target.client.clone();
        let urls = Arc::clone(&urls);
        move |request: u64| {
            let request = client.get(&urls[pick(request)]);
            async move { single(request, StatusCode::OK).await }
        }
    };
    if args.warmup > 0 {
        let client = target.client.clone();
        let urls = Arc::clone(&urls);
        let warm = drive::run(
            target.concurrency,
            args.warmup,
            target.budget,
            move |request| {
                let request = client.get(&urls[pick(u64::MAX - request)]);
                async move { single(request, StatusCode::OK).await }
            },
        )
        .await;
        if warm.failed > 0 {
            bail!(
                "the warm-up failed ({} of {} requests); are the entities stored (--populate), and may these requests read them (--auth)? first error: {}",
                warm.failed,
                warm.requests,
                warm.errors.first().map(String::as_str).unwrap_or("-")
            );
        }
    }
    let outcome = drive::run(target.concurrency, args.requests, target.budget, op).await;
    report("retrieve", &outcome, 1, target.concurrency)
}

async fn query(args: QueryArgs, auth: Option<String>) -> anyhow::Result<ExitCode> {
    check_count(args.requests, "--requests")?;
    let target = Target::new(&args.common, auth.as_deref())?;
    let url = target.endpoint(&format!("/entities?{}", args.query));
    let expect = args.expect;
    let op = {
        let client = target.client.clone();
        move |_: u64| {
            let request = client.get(&url);
            async move { listed(request, expect).await }
        }
    };
    if args.warmup > 0 {
        let warm = drive::run(target.concurrency, args.warmup, target.budget, op.clone()).await;
        if warm.failed > 0 {
            bail!(
                "the warm-up failed ({} of {} requests); first error: {}",
                warm.failed,
                warm.requests,
                warm.errors.first().map(String::as_str).unwrap_or("-")
            );
        }
    }
    let outcome = drive::run(target.concurrency, args.requests, target.budget, op).await;
    report("query", &outcome, 1, target.concurrency)
}

/// Sends a query and checks its answer is a list (of `expect` entities, when given).
async fn listed(request: reqwest::RequestBuilder, expect: Option<usize>) -> Done {
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(body) if status == StatusCode::OK => {
                    match serde_json::from_slice::<Value>(&body) {
                        Ok(Value::Array(items))
                            if expect.is_none_or(|expected| items.len() == expected) =>
                        {
                            Done::ok(1)
                        }
                        Ok(Value::Array(items)) => Done::failed(
                            1,
                            format!("{} entities, not {}", items.len(), expect.unwrap_or(0)),
                        ),
                        _ => Done::failed(1, format!("not a list: {}", excerpt(&body))),
                    }
                }
                Ok(body) => Done::failed(1, format!("{status}: {}", excerpt(&body))),
                Err(error) => Done::failed(1, format!("reading the response: {error}")),
            }
        }
        Err(error) => Done::failed(1, format!("sending: {error}")),
    }
}

async fn batch(args: BatchArgs, auth: Option<String>) -> anyhow::Result<ExitCode> {
    check_count(args.entities, "--entities")?;
    if args.batch_size == 0 || args.batch_size > 100_000 {
        bail!("--batch-size must be between 1 and 100000");
    }
    let target = Target::new(&args.common, auth.as_deref())?;
    let bodies = Arc::new(batch_bodies(
        &target.id_prefix,
        args.first,
        args.entities,
        args.batch_size,
    ));
    let mut url = target.endpoint("/entityOperations/upsert");
    if let Some(options) = &args.options {
        url.push_str(&format!("?options={options}"));
    }
    let client = target.client.clone();
    let count = bodies.len() as u64;
    let worker_bodies = Arc::clone(&bodies);
    let outcome = drive::run(target.concurrency, count, target.budget, move |index| {
        let (size, body) = &worker_bodies[index as usize];
        let size = *size;
        let request = client
            .post(&url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone());
        async move { batch_request(request, size).await }
    })
    .await;
    report("batch", &outcome, args.batch_size, target.concurrency)
}

/// Batch bodies for entities first..first+entities: (entities in the batch, JSON array).
fn batch_bodies(prefix: &str, first: u64, entities: u64, batch_size: u64) -> Vec<(u64, Vec<u8>)> {
    let end = first + entities;
    (first..end)
        .step_by(batch_size as usize)
        .map(|start| {
            let stop = (start + batch_size).min(end);
            let items: Vec<Value> = (start..stop)
                .map(|index| generate::parking_spot(prefix, index))
                .collect();
            (stop - start, Value::Array(items).to_string().into_bytes())
        })
        .collect()
}

/// Upserts entities first..first+count in batches of 1,000, untimed.
async fn populate(target: &Target, first: u64, count: u64) -> anyhow::Result<()> {
    let url = target.endpoint("/entityOperations/upsert");
    for (size, body) in batch_bodies(&target.id_prefix, first, count, 1_000) {
        let request = target
            .client
            .post(&url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let done = batch_request(request, size).await;
        if done.failed > 0 {
            bail!(
                "populating failed: {}",
                done.error.unwrap_or_else(|| "?".to_owned())
            );
        }
    }
    Ok(())
}

/// Sends a single-entity request and reads the whole response.
async fn single(request: reqwest::RequestBuilder, expected: StatusCode) -> Done {
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(_) if status == expected => Done::ok(1),
                Ok(body) => Done::failed(1, format!("{status}: {}", excerpt(&body))),
                Err(error) => Done::failed(1, format!("reading the response: {error}")),
            }
        }
        Err(error) => Done::failed(1, format!("sending: {error}")),
    }
}

/// Sends a batch upsert and counts its entities: 201/204 all succeeded, 207 per the report.
async fn batch_request(request: reqwest::RequestBuilder, size: u64) -> Done {
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Done::failed(size, format!("sending: {error}")),
    };
    let status = response.status();
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(error) => return Done::failed(size, format!("reading the response: {error}")),
    };
    match status {
        StatusCode::CREATED | StatusCode::NO_CONTENT => Done::ok(size),
        StatusCode::MULTI_STATUS => {
            let report: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let count = |key: &str| {
                report
                    .get(key)
                    .and_then(Value::as_array)
                    .map_or(0, |a| a.len() as u64)
            };
            let failed = count("errors");
            Done {
                ok: count("success"),
                failed,
                error: (failed > 0).then(|| format!("207: {}", excerpt(&body))),
            }
        }
        _ => Done::failed(size, format!("{status}: {}", excerpt(&body))),
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(300).collect()
}

/// Prints the summary line (stdout) and the first errors (stderr).
fn report(
    name: &str,
    outcome: &Outcome,
    entities_per_request: u64,
    concurrency: usize,
) -> anyhow::Result<ExitCode> {
    let seconds = outcome.elapsed.as_secs_f64();
    let rate = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{name}: {} requests ({entities_per_request} {} per request, concurrency {concurrency}) in {seconds:.2} s: \
         {} entities ok, {} failed; {:.0} requests/s, {:.0} entities/s; \
         latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{}",
        outcome.requests,
        if entities_per_request == 1 {
            "entity"
        } else {
            "entities"
        },
        outcome.ok,
        outcome.failed,
        rate(outcome.requests),
        rate(outcome.ok),
        ms(percentile(&outcome.latencies, 50.0)),
        ms(percentile(&outcome.latencies, 99.0)),
        ms(percentile(&outcome.latencies, 100.0)),
        if outcome.timed_out {
            " (stopped by --duration)"
        } else {
            ""
        },
    )?;
    let mut err = std::io::stderr().lock();
    for error in &outcome.errors {
        writeln!(err, "  error: {error}")?;
    }
    Ok(if outcome.failed == 0 && outcome.requests > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).expect("valid command line")
    }

    #[test]
    fn auth_is_a_global_option() {
        let url = "http://127.0.0.1:9192";
        let after = parse(&["civitas-loadgen", "retrieve", "--url", url, "--auth", "t0k"]);
        let before = parse(&["civitas-loadgen", "--auth", "t0k", "batch", "--url", url]);
        assert_eq!(after.auth.as_deref(), Some("t0k"));
        assert_eq!(before.auth.as_deref(), Some("t0k"));
    }

    /// The head of the one request `civitas-loadgen create` sends with `auth`, as a server sees it.
    async fn request_head(auth: Option<&str>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut buffer = [0; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let read = socket.read(&mut buffer).await.expect("read");
                if read == 0 {
                    break;
                }
                head.extend_from_slice(&buffer[..read]);
            }
            let reply = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
            socket.write_all(reply).await.expect("write");
            String::from_utf8_lossy(&head).to_ascii_lowercase()
        });
        let cli = parse(&["civitas-loadgen", "create", "--url", &url]);
        let Command::Create(args) = cli.command else {
            panic!("create expected");
        };
        let target = Target::new(&args.common, auth).expect("target");
        let _ = target
            .client
            .get(target.endpoint("/entities/x"))
            .send()
            .await;
        server.await.expect("server")
    }

    #[tokio::test]
    async fn the_token_goes_with_every_request() {
        assert!(
            request_head(Some(" t0k\n"))
                .await
                .contains("\r\nauthorization: bearer t0k\r\n")
        );
        assert!(!request_head(None).await.contains("authorization"));
        let cli = parse(&["civitas-loadgen", "create", "--url", "http://127.0.0.1:1"]);
        let Command::Create(args) = cli.command else {
            panic!("create expected");
        };
        assert!(Target::new(&args.common, Some(" ")).is_err());
    }
}
