//! `civitas-loadgen append`: drives a connector's audit log in this process, without HTTP.
//!
//! It opens the store at `--database-url`, starts the connector's own [`AuditLog`] on it (the
//! appender with its group commit, and the checkpointer), and has `--concurrency` tasks append
//! records the way request handlers do: each builds a record shaped like a retrieve's, calls
//! [`AuditLog::append`] and waits until it is durably queued: committed, or with `--spool DIR`
//! written to the spool (as a connector does by default on a SQLite file). `--rate` paces them
//! (records per second in all); without it they append as fast as the log takes them.
//!
//! A poller reads the latest signed checkpoint from the store every `--poll-ms`. A record's
//! **merge delay** is the time from the moment its append returned (it is queued) to the first
//! poll that saw a checkpoint covering it: the delay with which an auditor can first prove it,
//! give or take one poll. The summary gives records per second, append latency and merge delay.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use civitas_audit::record::{Access, Decision, Event, FORMAT_VERSION, Record, sha256_hex};
use civitas_connector::audit::AuditLog;
use civitas_connector::clock::SystemClock;
use civitas_connector::settings::AuditSettings;
use civitas_store::Store;
use tokio::time::Instant;

use crate::drive::percentile;

/// Arguments of `civitas-loadgen append`.
#[derive(Debug, clap::Args)]
pub struct AppendArgs {
    /// The store: `sqlite://PATH` (a file) or a PostgreSQL URL on the loopback interface.
    #[arg(long)]
    database_url: String,
    /// The log to append to (its department name); it must be empty or absent.
    #[arg(long, default_value = "loadgen")]
    department: String,
    /// Tasks appending at once, each waiting for its record to be durably queued.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Records to append (at most 10,000,000).
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Records per second in all; without it, as fast as the log takes them.
    #[arg(long)]
    rate: Option<u64>,
    /// Time budget of the run, in seconds (at most 900).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// `[audit] checkpoint_interval_ms` of the log.
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// `[audit] merge_wait_ms` of the log (with `--spool`).
    #[arg(long, default_value_t = 1000)]
    merge_wait_ms: u64,
    /// How often the latest checkpoint is read, in milliseconds.
    #[arg(long, default_value_t = 1)]
    poll_ms: u64,
    /// Worker threads of the runtime (the connector's HTTP workers are one per core).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Acknowledge records once written to a spool in this directory (`[audit] spool_dir`)
    /// instead of once committed.
    #[arg(long)]
    spool: Option<std::path::PathBuf>,
}

impl AppendArgs {
    /// The runtime's worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// What one appending task saw: per record, its index, when its append returned, how long it
/// took.
type Acks = Vec<(u64, Instant, Duration)>;

pub async fn run(args: AppendArgs) -> anyhow::Result<ExitCode> {
    check(&args)?;
    let store = Store::open(&args.database_url)
        .await
        .with_context(|| "opening the store".to_owned())?;
    let settings = AuditSettings {
        checkpoint_interval_ms: args.checkpoint_interval_ms,
        merge_wait_ms: args.merge_wait_ms,
        spool_dir: args.spool.clone(),
        ..AuditSettings::default()
    };
    let log = Arc::new(
        AuditLog::start(
            &args.department,
            &settings,
            store.clone(),
            Arc::new(SystemClock),
        )
        .await
        .context("starting the audit log")?,
    );
    let size_before = store.audit_size(log.name()).await?;
    if size_before > 0 {
        bail!(
            "the audit log {} already holds {size_before} entries; give a fresh database or another --department",
            log.name()
        );
    }
    // Let the first checkpoint (of the empty log) be signed before the clock starts.
    tokio::time::sleep(Duration::from_millis(
        args.checkpoint_interval_ms.min(1_000) + 50,
    ))
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let store = store.clone();
        let name = log.name().to_owned();
        let stop = Arc::clone(&stop);
        let period = Duration::from_millis(args.poll_ms);
        tokio::spawn(async move { poll_checkpoints(&store, &name, period, &stop).await })
    };

    let start = Instant::now();
    let budget = Duration::from_secs(args.duration);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let log = Arc::clone(&log);
        let next = Arc::clone(&next);
        let (total, rate, department) = (args.records, args.rate, args.department.clone());
        tasks.spawn(async move {
            let mut acks: Acks = Vec::new();
            let mut failures = 0u64;
            let mut first_error = None;
            loop {
                if start.elapsed() >= budget {
                    break;
                }
                let number = next.fetch_add(1, Ordering::Relaxed);
                if number >= total {
                    break;
                }
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(number as f64 / rate as f64);
                    tokio::time::sleep_until(due).await;
                }
                let record = record(&log, &department, number);
                let sent = Instant::now();
                match log.append(record).await {
                    Ok(index) => {
                        let done = Instant::now();
                        acks.push((index, done, done - sent));
                    }
                    Err(error) => {
                        failures += 1;
                        first_error.get_or_insert_with(|| error.to_string());
                    }
                }
            }
            (acks, failures, first_error)
        });
    }
    let mut acks: Acks = Vec::new();
    let mut failures = 0;
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (task_acks, task_failures, error) = joined.context("an appending task failed")?;
        acks.extend(task_acks);
        failures += task_failures;
        errors.extend(error);
    }
    let elapsed = start.elapsed();
    let appended = acks.len() as u64;

    // Wait until a checkpoint covers everything appended (or give up after a few intervals).
    let final_size = size_before + appended;
    let deadline = Instant::now() + Duration::from_millis(3 * args.checkpoint_interval_ms + 5_000);
    while Instant::now() < deadline {
        match store.audit_latest_checkpoint(log.name()).await? {
            Some((size, _)) if size >= final_size => break,
            _ => tokio::time::sleep(Duration::from_millis(args.poll_ms)).await,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seen = poller.await.context("the checkpoint poller failed")??;

    let mut latencies: Vec<Duration> = acks.iter().map(|&(_, _, latency)| latency).collect();
    latencies.sort_unstable();
    let (mut delays, uncovered) = merge_delays(&acks, &seen);
    delays.sort_unstable();
    let checkpoints = seen.len().saturating_sub(1);
    let seconds = elapsed.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "append: {appended} records ({} failed, concurrency {}, {}, checkpoint interval {} ms) in {seconds:.2} s: \
         {:.0} records/s; append latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         merge delay p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({checkpoints} checkpoints seen, polled every {} ms{})",
        failures,
        args.concurrency,
        args.rate
            .map_or_else(|| "unpaced".to_owned(), |rate| format!("{rate}/s offered")),
        args.checkpoint_interval_ms,
        if seconds > 0.0 {
            appended as f64 / seconds
        } else {
            0.0
        },
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(percentile(&latencies, 100.0)),
        ms(percentile(&delays, 50.0)),
        ms(percentile(&delays, 99.0)),
        ms(percentile(&delays, 100.0)),
        args.poll_ms,
        if uncovered > 0 {
            format!("; {uncovered} records never covered")
        } else {
            String::new()
        },
    )?;
    let mut err = std::io::stderr().lock();
    for error in errors.iter().take(5) {
        writeln!(err, "  error: {error}")?;
    }
    Ok(if failures == 0 && uncovered == 0 && appended > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check(args: &AppendArgs) -> anyhow::Result<()> {
    let url = &args.database_url;
    let allowed = if let Some(path) = url.strip_prefix("sqlite://") {
        !path.is_empty() && !url.contains(":memory:")
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let parsed = url::Url::parse(url).with_context(|| format!("--database-url {url}"))?;
        matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
    } else {
        false
    };
    if !allowed {
        bail!("--database-url must be sqlite://PATH or a PostgreSQL URL on the loopback interface");
    }
    if args.concurrency == 0 || args.concurrency > 1_024 {
        bail!("--concurrency must be between 1 and 1024");
    }
    if args.records == 0 || args.records > 10_000_000 {
        bail!("--records must be between 1 and 10000000");
    }
    if args.duration == 0 || args.duration > 900 {
        bail!("--duration must be between 1 and 900 seconds");
    }
    if args.rate == Some(0) {
        bail!("--rate must be at least 1");
    }
    if args.checkpoint_interval_ms == 0 || args.checkpoint_interval_ms > 60_000 {
        bail!("--checkpoint-interval-ms must be between 1 and 60000");
    }
    if args.poll_ms == 0 || args.poll_ms > 1_000 {
        bail!("--poll-ms must be between 1 and 1000");
    }
    Ok(())
}

/// A record like the one of a token holder's retrieve of one entity (≈ 500 bytes).
fn record(log: &AuditLog, department: &str, number: u64) -> Record {
    let pseudonymizer = log.pseudonymizer();
    let mut access = Access {
        holder: Some(pseudonymizer.pseudonym("bench")),
        revocation_ids: vec![sha256_hex(b"loadgen token")],
        entity_types: vec!["https://smartdatamodels.org/dataModel.Parking/ParkingSpot".to_owned()],
        attributes: ["category", "location", "name", "status"]
            .iter()
            .map(|name| format!("https://smartdatamodels.org/dataModel.Parking/{name}"))
            .collect(),
        count: Some(1),
        status: Some(200),
        ..Access::new("read", Decision::Allowed)
    };
    let id = crate::generate::entity_id("urn:ngsi-ld:ParkingSpot:bench:", number % 100_000);
    access.set_entity_ids(pseudonymizer, [id.as_str()]);
    Record {
        v: FORMAT_VERSION,
        time: 1_800_000_000_000_000 + number as i64,
        service: department.to_owned(),
        request_id: format!("00000000-0000-4000-8000-{number:012x}"),
        trace_id: None,
        event: Event::Access(access),
    }
}

/// Reads the latest checkpoint's size every `period` until `stop`: when each new size was first
/// seen, in order (sizes only grow).
async fn poll_checkpoints(
    store: &Store,
    log: &str,
    period: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<(u64, Instant)>> {
    let mut seen: Vec<(u64, Instant)> = Vec::new();
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        if let Some((size, _)) = store.audit_latest_checkpoint(log).await? {
            let now = Instant::now();
            if seen.last().is_none_or(|&(last, _)| size > last) {
                seen.push((size, now));
            }
        }
    }
    Ok(seen)
}

/// Each record's merge delay (from its acknowledgement to the first checkpoint seen covering it;
/// zero if that was seen first), and how many records no checkpoint seen covers.
fn merge_delays(acks: &Acks, seen: &[(u64, Instant)]) -> (Vec<Duration>, u64) {
    let mut delays = Vec::with_capacity(acks.len());
    let mut uncovered = 0;
    for &(index, acked, _) in acks {
        // The first checkpoint whose size exceeds the index covers the record.
        let first = seen.partition_point(|&(size, _)| size <= index);
        match seen.get(first) {
            Some(&(_, at)) => delays.push(at.saturating_duration_since(acked)),
            None => uncovered += 1,
        }
    }
    (delays, uncovered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_delays_run_to_the_first_covering_checkpoint() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let acks: Acks = vec![
            (0, at(0), Duration::ZERO),
            (1, at(5), Duration::ZERO),
            (2, at(30), Duration::ZERO),
            (3, at(40), Duration::ZERO),
        ];
        // Size 2 seen at 10 ms covers 0 and 1, size 3 at 50 ms covers 2; nothing covers 3.
        let seen = [(0, at(0)), (2, at(10)), (3, at(50))];
        let (delays, uncovered) = merge_delays(&acks, &seen);
        assert_eq!(
            delays,
            [
                Duration::from_millis(10),
                Duration::from_millis(5),
                Duration::from_millis(20)
            ]
        );
        assert_eq!(uncovered, 1);
    }

    #[test]
    fn only_local_stores_are_driven() {
        let args = |url: &str| AppendArgs {
            database_url: url.to_owned(),
            department: "loadgen".to_owned(),
            concurrency: 16,
            records: 10,
            rate: None,
            duration: 10,
            checkpoint_interval_ms: 100,
            merge_wait_ms: 500,
            poll_ms: 1,
            threads: 2,
            spool: None,
        };
        assert!(check(&args("sqlite:///tmp/x.db")).is_ok());
        assert!(check(&args("postgres://postgres@127.0.0.1:5432/bench")).is_ok());
        assert!(check(&args("postgres://postgres@db.example:5432/bench")).is_err());
        assert!(check(&args("sqlite::memory:")).is_err());
        assert!(check(&args("mysql://127.0.0.1/x")).is_err());
    }
}
