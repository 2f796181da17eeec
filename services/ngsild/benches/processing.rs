//! Cost of our JSON-LD processing of a typical Smart Data Model entity (a `ParkingSpot`) against a
//! cached, already processed @context (the Parking context + the NGSI-LD core context):
//!
//! * `ours/expand` — request payload → canonical form → validated model (`expand::entity` +
//!   `canonical::decode_entity`), what every write does per entity;
//! * `ours/compact` — model → compacted normalized rendering (`render::entity`), what every read does;
//! * `ours/expand+compact` — both;
//! * `ours/read_path` — a stored record's text → rendered JSON text (`canonical::decode_stored`,
//!   `render::entity`, `serde_json::to_string`), a retrieve without HTTP and SQL;
//! * `ours/context_processing` — processing the context itself, paid once per distinct request
//!   context (then cached by the connector).
//!
//! `cargo bench -p civitas-ngsild --bench processing`. The same entity through the `json-ld` crate:
//! `cargo bench -p civitas-ngsild --features compare-json-ld --bench compare_json_ld`.

mod common;

use civitas_ngsild::render::RenderOptions;
use civitas_ngsild::{canonical, expand, render};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn ours(c: &mut Criterion) {
    let documents = common::Documents::load();
    let ctx = documents.active_context();
    let payload = common::parking_spot();
    let options = RenderOptions::default();
    let expanded = expand::entity(&payload, &ctx, expand::Payload::Entity).expect("expands");
    let entity = canonical::decode_entity(&expanded, canonical::Trust::Caller).expect("decodes");
    let stored = canonical::encode_stored(&entity);
    let rendered = render::entity(&entity, &ctx, &options);
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        payload
            .as_object()
            .expect("object")
            .keys()
            .collect::<Vec<_>>(),
        "the round trip gives back the payload's names"
    );

    let mut group = c.benchmark_group("ours");
    group.bench_function("expand", |b| {
        b.iter(|| {
            let canonical =
                expand::entity(black_box(&payload), &ctx, expand::Payload::Entity).expect("ok");
            canonical::decode_entity(&canonical, canonical::Trust::Caller).expect("ok")
        });
    });
    group.bench_function("compact", |b| {
        b.iter(|| render::entity(black_box(&entity), &ctx, &options));
    });
    group.bench_function("expand+compact", |b| {
        b.iter(|| {
            let canonical =
                expand::entity(black_box(&payload), &ctx, expand::Payload::Entity).expect("ok");
            let entity =
                canonical::decode_entity(&canonical, canonical::Trust::Caller).expect("ok");
            render::entity(&entity, &ctx, &options)
        });
    });
    group.bench_function("read_path", |b| {
        b.iter(|| {
            let entity = canonical::decode_stored(black_box(&stored)).expect("ok");
            serde_json::to_string(&render::entity(&entity, &ctx, &options)).expect("ok")
        });
    });
    group.bench_function("context_processing", |b| {
        b.iter(|| documents.active_context());
    });
    group.finish();
}

criterion_group!(benches, ours);
criterion_main!(benches);
