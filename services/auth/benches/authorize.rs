//! Authorization under load: the cost of one authorization (p50, p99) for an authority-only token
//! and for a token with two attenuation blocks, and the number of spurious denials over 100,000
//! authorizations of valid tokens on every core at once (must be 0: biscuit's default time limit
//! refuses valid tokens on a busy machine, which is why the authorizer sets its limits).
//!
//! `cargo bench -p civitas-auth --bench authorize` (release build; no criterion, so the figures are
//! percentiles of individual calls, not means).

use std::io::Write;
use std::time::Instant;

use chrono::{DateTime, Utc};
use civitas_auth::authorizer::{Authorizer, Operation, Request};
use civitas_auth::keys::RootKey;
use civitas_auth::token::{Restrictions, TokenSpec, attenuate, issue};

const TOTAL: usize = 100_000;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
}

/// Nanoseconds as microseconds.
fn micros(nanos: u128) -> f64 {
    nanos as f64 / 1_000.0
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = RootKey::from_seed([5; 32])?;
    let policy = "deny if holder(\"blocked\"), operation(\"write\");";
    let authorizer = Authorizer::new(key.public(), policy, "transport")?;
    let spec = TokenSpec {
        holder: "partner-agency".into(),
        read: vec![
            "https://smartdatamodels.org/dataModel.Parking/ParkingSpot".into(),
            "https://smartdatamodels.org/dataModel.Parking/OffStreetParking".into(),
        ],
        attributes: Some(vec![
            "https://uri.etsi.org/ngsi-ld/status".into(),
            "https://uri.etsi.org/ngsi-ld/location".into(),
        ]),
        purpose: Some("traffic-planning".into()),
        ttl: Some(chrono::Duration::days(30)),
        ..TokenSpec::default()
    };
    let plain = issue(&key, &spec, now())?;
    let once = attenuate(
        &plain,
        &Restrictions {
            read: Some(vec![
                "https://smartdatamodels.org/dataModel.Parking/ParkingSpot".into(),
            ]),
            ..Restrictions::default()
        },
        now(),
    )?;
    let twice = attenuate(
        &once,
        &Restrictions {
            ttl: Some(chrono::Duration::hours(1)),
            ..Restrictions::default()
        },
        now(),
    )?;

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "authorizations on {threads} threads at once, {TOTAL} per token shape"
    )?;
    // "in full": every call in a different second, so no decision is reused; "cached": the same
    // second, as for a client sending many requests with one token.
    for (name, token, cached) in [
        ("authority block only, in full", &plain, false),
        ("two attenuation blocks, in full", &twice, false),
        ("authority block only, cached", &plain, true),
        ("two attenuation blocks, cached", &twice, true),
    ] {
        let started = Instant::now();
        let results: Vec<(Vec<u128>, usize)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|thread| {
                    let authorizer = &authorizer;
                    scope.spawn(move || {
                        let mut durations = Vec::with_capacity(TOTAL / threads + 1);
                        let mut denied = 0;
                        for i in 0..TOTAL / threads {
                            // Within the shortest token's hour, never the same second twice at
                            // once on two threads.
                            let second = if cached {
                                0
                            } else {
                                ((i * threads + thread) % 3_000) as i64
                            };
                            let request = Request::new(
                                Operation::Read,
                                now() + chrono::Duration::seconds(second),
                            );
                            let start = Instant::now();
                            match authorizer.authorize(&[token], &request) {
                                Ok(authorized)
                                    if authorized.allows_attribute(
                                        "https://uri.etsi.org/ngsi-ld/status",
                                    ) => {}
                                _ => denied += 1,
                            }
                            durations.push(start.elapsed().as_nanos());
                        }
                        (durations, denied)
                    })
                })
                .collect();
            workers.into_iter().filter_map(|w| w.join().ok()).collect()
        });
        let elapsed = started.elapsed();
        let denied: usize = results.iter().map(|(_, d)| d).sum();
        let mut durations: Vec<u128> = results.into_iter().flat_map(|(d, _)| d).collect();
        durations.sort_unstable();
        writeln!(
            out,
            "{name}: {} authorizations in {:.2} s ({:.0}/s), p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs, spurious denials {denied}",
            durations.len(),
            elapsed.as_secs_f64(),
            durations.len() as f64 / elapsed.as_secs_f64(),
            micros(percentile(&durations, 0.50)),
            micros(percentile(&durations, 0.99)),
            micros(durations.last().copied().unwrap_or_default()),
        )?;
        if denied > 0 {
            return Err(format!("{denied} valid authorizations were refused").into());
        }
    }
    Ok(())
}
