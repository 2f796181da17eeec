//! Our JSON-LD processing against the `json-ld` crate (0.21, a full JSON-LD 1.1 processor) on the
//! same typical Smart Data Model entity (a `ParkingSpot`, normalized) and the same @context (the
//! Parking context, then the NGSI-LD core context), loaded offline, processed once and reused:
//!
//! * `expand/*` — ours: `expand::entity` + `canonical::decode_entity` (payload → validated model);
//!   json-ld: `Expand::expand_full` with the processed context (payload → expanded document);
//! * `compact/*` — ours: `render::entity`; json-ld: `Compact::compact_full` of the expanded document;
//! * `expand+compact/*` — both steps;
//! * `context_processing/*` — processing the request context from parsed documents (paid once per
//!   distinct context; both callers cache the result).
//!
//! Neither side parses or serializes JSON text here. `json-ld` takes its processed context by value,
//! so its expansion clones it each time: that is part of its API's cost.
//!
//! `cargo bench -p civitas-ngsild --features compare-json-ld --bench compare_json_ld`

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::io::Write;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use civitas_ngsild::render::RenderOptions;
use civitas_ngsild::{canonical, expand, render};
use criterion::{Criterion, criterion_group, criterion_main};
use json_ld::rdf_types::vocabulary::no_vocabulary_mut;
use json_ld::syntax::{IntoJsonWithContext, Parse, TryFromJson};
use json_ld::{Compact, Expand, IriBuf, Process, RemoteDocument};

/// Runs a future that never waits (every document is in memory) to completion.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

fn parse(text: &str) -> json_ld::syntax::Value {
    json_ld::syntax::Value::parse_str(text)
        .expect("valid JSON")
        .0
}

/// An offline loader answering the two context URLs from the bundled documents.
fn loader() -> HashMap<IriBuf, RemoteDocument> {
    let mut documents = HashMap::new();
    for (url, text) in [
        (
            civitas_ngsild::context::CORE_CONTEXT_URL,
            civitas_ngsild::context::CORE_CONTEXT_V1_8,
        ),
        (common::PARKING_CONTEXT_URL, common::PARKING_CONTEXT),
    ] {
        let iri = IriBuf::new(url.to_owned()).expect("an IRI");
        documents.insert(
            iri.clone(),
            RemoteDocument::new(Some(iri), None, parse(text)),
        );
    }
    documents
}

fn compare(c: &mut Criterion) {
    // Ours.
    let documents = common::Documents::load();
    let ctx = documents.active_context();
    let payload = common::parking_spot();
    let options = RenderOptions::default();
    let canonical = expand::entity(&payload, &ctx, expand::Payload::Entity).expect("expands");
    let entity = canonical::decode_entity(&canonical, canonical::Trust::Caller).expect("decodes");

    // json-ld, with the same context and entity.
    let loader = loader();
    let local_context = json_ld::syntax::context::Context::try_from_json(parse(
        &common::request_context().to_string(),
    ))
    .expect("a JSON-LD context");
    let processed = block_on(local_context.process(no_vocabulary_mut(), &loader, None))
        .expect("the context processes");
    let input = parse(&payload.to_string());
    let expand_ld = || {
        block_on(input.expand_full(
            no_vocabulary_mut(),
            processed.processed.clone(),
            None,
            &loader,
            json_ld::expansion::Options::default(),
            (),
        ))
        .expect("json-ld expands")
    };
    let expanded = expand_ld();
    let compacted = block_on(expanded.compact_full(
        no_vocabulary_mut(),
        processed.as_ref(),
        &loader,
        json_ld::compaction::Options::default(),
    ))
    .expect("json-ld compacts");
    // Both give back the payload's attribute names.
    let text = compacted.to_string();
    if std::env::var_os("CIVITAS_BENCH_SHOW").is_some() {
        let rendered = serde_json::Value::Object(render::entity(&entity, &ctx, &options));
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "civitas canonical:  {}",
            serde_json::Value::Object(canonical.clone())
        );
        let _ = writeln!(err, "civitas compacted:  {rendered}");
        let objects: Vec<json_ld::syntax::Value> = expanded
            .clone()
            .into_iter()
            .map(|object| object.into_json_with(no_vocabulary_mut()))
            .collect();
        let _ = writeln!(
            err,
            "json-ld expanded:   {}",
            json_ld::syntax::Value::Array(objects.into_iter().collect())
        );
        let _ = writeln!(err, "json-ld compacted:  {text}");
    }
    for name in [
        "refParkingSite",
        "status",
        "parkingPermit",
        "location",
        "unitCode",
    ] {
        assert!(
            text.contains(name),
            "json-ld's compaction lost {name}: {text}"
        );
    }

    let mut group = c.benchmark_group("expand");
    group.bench_function("civitas", |b| {
        b.iter(|| {
            let canonical =
                expand::entity(black_box(&payload), &ctx, expand::Payload::Entity).expect("ok");
            canonical::decode_entity(&canonical, canonical::Trust::Caller).expect("ok")
        });
    });
    group.bench_function("json-ld", |b| b.iter(expand_ld));
    group.finish();

    let mut group = c.benchmark_group("compact");
    group.bench_function("civitas", |b| {
        b.iter(|| render::entity(black_box(&entity), &ctx, &options));
    });
    group.bench_function("json-ld", |b| {
        b.iter(|| {
            block_on(black_box(&expanded).compact_full(
                no_vocabulary_mut(),
                processed.as_ref(),
                &loader,
                json_ld::compaction::Options::default(),
            ))
            .expect("ok")
        });
    });
    group.finish();

    let mut group = c.benchmark_group("expand+compact");
    group.bench_function("civitas", |b| {
        b.iter(|| {
            let canonical =
                expand::entity(black_box(&payload), &ctx, expand::Payload::Entity).expect("ok");
            let entity =
                canonical::decode_entity(&canonical, canonical::Trust::Caller).expect("ok");
            render::entity(&entity, &ctx, &options)
        });
    });
    group.bench_function("json-ld", |b| {
        b.iter(|| {
            let expanded = expand_ld();
            block_on(expanded.compact_full(
                no_vocabulary_mut(),
                processed.as_ref(),
                &loader,
                json_ld::compaction::Options::default(),
            ))
            .expect("ok")
        });
    });
    group.finish();

    let mut group = c.benchmark_group("context_processing");
    group.bench_function("civitas", |b| b.iter(|| documents.active_context()));
    group.bench_function("json-ld", |b| {
        b.iter(|| block_on(local_context.process(no_vocabulary_mut(), &loader, None)).expect("ok"));
    });
    group.finish();
}

criterion_group!(benches, compare);
criterion_main!(benches);
