//! Behaviour tests of the store, each run on SQLite and (when configured) PostgreSQL.
//!
//! Every test opens one store per database from `civitas_testkit::test_databases()`, so a single
//! test function covers both backends; failures name the backend.

use civitas_store::{
    BBox, ContextRecord, EntityQuery, EntityRecord, Error, QueryPage, Store, Transaction,
};
use civitas_testkit::{TestDatabase, fixed_time, test_databases};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TENANT: &str = "city";
const SPOT: &str = "https://example.org/ParkingSpot";
const OFFSTREET: &str = "https://example.org/OffStreetParking";
const BUILDING: &str = "https://example.org/Building";
const STATUS: &str = "https://example.org/status";
const NAME: &str = "https://example.org/name";
const LOCATION: &str = "https://uri.etsi.org/ngsi-ld/location";

/// Opens a store on every test database; the databases must outlive the stores.
async fn stores() -> Vec<(TestDatabase, Store)> {
    let mut stores = Vec::new();
    for database in test_databases().await {
        let store = Store::open(&database.url)
            .await
            .unwrap_or_else(|error| panic!("{}: open failed: {error:?}", database.kind));
        stores.push((database, store));
    }
    stores
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| (*value).to_owned()).collect()
}

fn record(id: &str, types: &[&str], attributes: &[&str]) -> EntityRecord {
    EntityRecord {
        id: id.to_owned(),
        types: strings(types),
        scopes: Vec::new(),
        attributes: strings(attributes),
        created_at: fixed_time(0),
        modified_at: fixed_time(0),
        location: None,
        body: format!(r#"{{"id":"{id}"}}"#),
    }
}

/// The entities most query tests run against. Their ids in byte order:
/// Building:1, Building:2, ParkingSpot:1, ParkingSpot:10, ParkingSpot:2, lower:1 — a
/// locale-aware collation would put `lower` elsewhere.
fn fixtures() -> Vec<EntityRecord> {
    vec![
        record("urn:ngsi-ld:ParkingSpot:2", &[SPOT], &[STATUS]),
        record("urn:ngsi-ld:ParkingSpot:1", &[SPOT], &[STATUS, LOCATION]),
        record("urn:ngsi-ld:ParkingSpot:10", &[SPOT, OFFSTREET], &[NAME]),
        record("urn:ngsi-ld:Building:1", &[BUILDING], &[NAME, LOCATION]),
        record("urn:ngsi-ld:Building:2", &[BUILDING], &[]),
        record("urn:ngsi-ld:lower:1", &[OFFSTREET], &[STATUS]),
    ]
}

async fn seed(store: &Store) -> TestResult {
    let mut transaction = store.begin().await?;
    transaction.insert_many(TENANT, &fixtures()).await?;
    // The same id in another tenant must never show up in `TENANT`'s results.
    transaction
        .insert(
            "other",
            &record("urn:ngsi-ld:ParkingSpot:1", &[SPOT], &[STATUS]),
        )
        .await?;
    transaction.commit().await?;
    Ok(())
}

fn ids(page: &QueryPage) -> Vec<&str> {
    page.records
        .iter()
        .map(|record| record.id.as_str())
        .collect()
}

async fn count_all(store: &Store, tenant: &str) -> Result<u64, Error> {
    let query = EntityQuery {
        count: true,
        ..EntityQuery::default()
    };
    Ok(store.query(tenant, &query).await?.total.unwrap_or(0))
}

#[tokio::test]
async fn insert_then_get_round_trips_every_field() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        assert_eq!(store.backend_name(), kind);
        store.ping().await?;
        let mut original = record("urn:ngsi-ld:ParkingSpot:1", &[SPOT, OFFSTREET], &[STATUS]);
        original.scopes = strings(&["/Madrid/Centro", "/Madrid"]);
        original.created_at = fixed_time(10) + chrono::Duration::nanoseconds(123_456_789);
        original.modified_at = fixed_time(20);
        original.location = Some(BBox {
            min_lon: -3.7,
            min_lat: 40.4,
            max_lon: -3.6,
            max_lat: 40.5,
        });
        original.body = r#"{"id":"urn:ngsi-ld:ParkingSpot:1","b":1,"a":[1.50,"ü"]}"#.to_owned();

        let mut transaction = store.begin().await?;
        transaction.insert(TENANT, &original).await?;
        assert_eq!(
            transaction
                .get_for_update(TENANT, &original.id)
                .await?
                .as_ref(),
            Some(&EntityRecord {
                created_at: fixed_time(10) + chrono::Duration::microseconds(123_456),
                ..original.clone()
            }),
            "{kind}: read back inside the transaction"
        );
        transaction.commit().await?;

        let stored = store.get(TENANT, &original.id).await?;
        let expected = EntityRecord {
            // Stored with microsecond precision: the nanoseconds are truncated.
            created_at: fixed_time(10) + chrono::Duration::microseconds(123_456),
            ..original.clone()
        };
        assert_eq!(stored, Some(expected), "{kind}");
        assert_eq!(
            store.get(TENANT, "urn:ngsi-ld:ParkingSpot:2").await?,
            None,
            "{kind}"
        );
        assert_eq!(
            store.get("other", &original.id).await?,
            None,
            "{kind}: tenants are apart"
        );
    }
    Ok(())
}

#[tokio::test]
async fn duplicate_insert_is_reported_and_does_not_poison_the_transaction() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        let first = record("urn:ngsi-ld:ParkingSpot:1", &[SPOT], &[STATUS]);
        let second = record("urn:ngsi-ld:ParkingSpot:2", &[SPOT], &[STATUS]);
        store.begin().await?.insert(TENANT, &first).await?; // Dropped: rolled back.
        let mut transaction = store.begin().await?;
        transaction.insert(TENANT, &first).await?;
        let duplicate = transaction.insert(TENANT, &first).await;
        assert!(
            matches!(duplicate, Err(Error::AlreadyExists)),
            "{kind}: {duplicate:?}"
        );
        transaction.insert(TENANT, &second).await?;
        transaction.commit().await?;
        assert_eq!(count_all(&store, TENANT).await?, 2, "{kind}");

        // In a later transaction too, and batch-wise.
        let mut transaction = store.begin().await?;
        let third = record("urn:ngsi-ld:ParkingSpot:3", &[SPOT], &[]);
        let outcome = transaction
            .insert_many(TENANT, &[first.clone(), third.clone(), third.clone()])
            .await?;
        assert_eq!(outcome, [false, true, false], "{kind}");
        transaction.commit().await?;
        assert_eq!(count_all(&store, TENANT).await?, 3, "{kind}");
        assert_eq!(
            store.get(TENANT, &first.id).await?,
            Some(first.clone()),
            "{kind}: the duplicate did not overwrite"
        );
    }
    Ok(())
}

#[tokio::test]
async fn update_replaces_the_row_and_its_index_rows() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        seed(&store).await?;
        let mut changed = record("urn:ngsi-ld:ParkingSpot:1", &[BUILDING], &[NAME]);
        changed.modified_at = fixed_time(60);
        changed.body = r#"{"changed":true}"#.to_owned();

        let mut transaction = store.begin().await?;
        transaction.update(TENANT, &changed).await?;
        let missing = transaction
            .update(TENANT, &record("urn:ngsi-ld:Nothing:1", &[SPOT], &[]))
            .await;
        assert!(
            matches!(missing, Err(Error::NotFound)),
            "{kind}: {missing:?}"
        );
        transaction.commit().await?;

        assert_eq!(
            store.get(TENANT, &changed.id).await?,
            Some(changed.clone()),
            "{kind}"
        );
        let by_type = |types: &[&str]| EntityQuery {
            types: strings(types),
            limit: 100,
            ..EntityQuery::default()
        };
        let spots = store.query(TENANT, &by_type(&[SPOT])).await?;
        assert_eq!(
            ids(&spots),
            ["urn:ngsi-ld:ParkingSpot:10", "urn:ngsi-ld:ParkingSpot:2"],
            "{kind}: the old type no longer matches"
        );
        let buildings = store.query(TENANT, &by_type(&[BUILDING])).await?;
        assert!(ids(&buildings).contains(&changed.id.as_str()), "{kind}");
        let status = EntityQuery {
            attributes: strings(&[STATUS]),
            limit: 100,
            ..EntityQuery::default()
        };
        assert!(
            !ids(&store.query(TENANT, &status).await?).contains(&changed.id.as_str()),
            "{kind}: the old attribute no longer matches"
        );
        // The other tenant's entity with the same id is untouched.
        assert_eq!(
            store
                .get("other", &changed.id)
                .await?
                .map(|record| record.types),
            Some(strings(&[SPOT])),
            "{kind}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn upsert_inserts_or_replaces() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        let mut version = record("urn:ngsi-ld:ParkingSpot:1", &[SPOT, SPOT], &[STATUS]);
        let mut transaction = store.begin().await?;
        transaction.upsert(TENANT, &version).await?;
        transaction.commit().await?;
        assert_eq!(
            store.get(TENANT, &version.id).await?,
            Some(version.clone()),
            "{kind}"
        );

        version.types = strings(&[OFFSTREET]);
        version.attributes = strings(&[NAME, LOCATION]);
        version.body = r#"{"v":2}"#.to_owned();
        let mut transaction = store.begin().await?;
        transaction.upsert(TENANT, &version).await?;
        // In a batch, of two records with the same id the last one wins.
        let mut last = record("urn:ngsi-ld:ParkingSpot:2", &[SPOT], &[]);
        let first = EntityRecord {
            body: "{}".to_owned(),
            ..last.clone()
        };
        last.body = r#"{"last":true}"#.to_owned();
        transaction
            .upsert_many(TENANT, &[first, last.clone()])
            .await?;
        transaction.commit().await?;

        assert_eq!(
            store.get(TENANT, &version.id).await?,
            Some(version.clone()),
            "{kind}"
        );
        assert_eq!(store.get(TENANT, &last.id).await?, Some(last), "{kind}");
        let spots = EntityQuery {
            types: strings(&[SPOT]),
            limit: 10,
            count: true,
            ..EntityQuery::default()
        };
        let page = store.query(TENANT, &spots).await?;
        assert_eq!(ids(&page), ["urn:ngsi-ld:ParkingSpot:2"], "{kind}");
        assert_eq!(page.total, Some(1), "{kind}");
    }
    Ok(())
}

#[tokio::test]
async fn delete_removes_the_entity_and_its_index_rows() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        seed(&store).await?;
        let mut transaction = store.begin().await?;
        assert!(
            transaction
                .delete(TENANT, "urn:ngsi-ld:ParkingSpot:1")
                .await?,
            "{kind}"
        );
        assert!(
            !transaction
                .delete(TENANT, "urn:ngsi-ld:ParkingSpot:1")
                .await?,
            "{kind}"
        );
        let outcome = transaction
            .delete_many(
                TENANT,
                &strings(&[
                    "urn:ngsi-ld:Building:2",
                    "urn:ngsi-ld:Nothing:1",
                    "urn:ngsi-ld:Building:2",
                ]),
            )
            .await?;
        assert_eq!(outcome, [true, false, false], "{kind}");
        transaction.commit().await?;

        assert_eq!(
            store.get(TENANT, "urn:ngsi-ld:ParkingSpot:1").await?,
            None,
            "{kind}"
        );
        assert_eq!(count_all(&store, TENANT).await?, 4, "{kind}");
        assert_eq!(count_all(&store, "other").await?, 1, "{kind}");
        // Re-creating it starts from empty index rows.
        let mut transaction = store.begin().await?;
        transaction
            .insert(
                TENANT,
                &record("urn:ngsi-ld:ParkingSpot:1", &[BUILDING], &[]),
            )
            .await?;
        transaction.commit().await?;
        let spots = EntityQuery {
            types: strings(&[SPOT]),
            count: true,
            ..EntityQuery::default()
        };
        assert_eq!(store.query(TENANT, &spots).await?.total, Some(2), "{kind}");
    }
    Ok(())
}

#[tokio::test]
async fn dropping_a_transaction_rolls_it_back() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        seed(&store).await?;
        {
            let mut transaction = store.begin().await?;
            transaction
                .insert(TENANT, &record("urn:ngsi-ld:New:1", &[SPOT], &[]))
                .await?;
            transaction
                .update(TENANT, &record("urn:ngsi-ld:Building:1", &[SPOT], &[]))
                .await?;
            assert!(transaction.delete(TENANT, "urn:ngsi-ld:Building:2").await?);
            let everything = EntityQuery::default();
            assert_eq!(transaction.purge(TENANT, &everything).await?, 6, "{kind}");
        }
        assert_eq!(
            store.get(TENANT, "urn:ngsi-ld:New:1").await?,
            None,
            "{kind}"
        );
        assert_eq!(count_all(&store, TENANT).await?, 6, "{kind}");
        let building = store.get(TENANT, "urn:ngsi-ld:Building:1").await?;
        assert_eq!(
            building.map(|record| record.types),
            Some(strings(&[BUILDING])),
            "{kind}"
        );
        // The writer is free again (on SQLite, the single writer connection was released).
        let mut transaction = store.begin().await?;
        assert!(
            transaction.delete(TENANT, "urn:ngsi-ld:Building:2").await?,
            "{kind}"
        );
        transaction.commit().await?;
    }
    Ok(())
}

/// One query and the ids and total it must give.
struct Case {
    name: &'static str,
    query: EntityQuery,
    ids: &'static [&'static str],
    total: Option<u64>,
}

fn query_cases() -> Vec<Case> {
    let all = EntityQuery {
        limit: 100,
        count: true,
        ..EntityQuery::default()
    };
    vec![
        Case {
            name: "everything, in byte order of ids",
            query: all.clone(),
            ids: &[
                "urn:ngsi-ld:Building:1",
                "urn:ngsi-ld:Building:2",
                "urn:ngsi-ld:ParkingSpot:1",
                "urn:ngsi-ld:ParkingSpot:10",
                "urn:ngsi-ld:ParkingSpot:2",
                "urn:ngsi-ld:lower:1",
            ],
            total: Some(6),
        },
        Case {
            name: "first page",
            query: EntityQuery {
                limit: 2,
                ..all.clone()
            },
            ids: &["urn:ngsi-ld:Building:1", "urn:ngsi-ld:Building:2"],
            total: Some(6),
        },
        Case {
            name: "second page",
            query: EntityQuery {
                limit: 2,
                offset: 2,
                ..all.clone()
            },
            ids: &["urn:ngsi-ld:ParkingSpot:1", "urn:ngsi-ld:ParkingSpot:10"],
            total: Some(6),
        },
        Case {
            name: "past the end",
            query: EntityQuery {
                limit: 2,
                offset: 6,
                ..all.clone()
            },
            ids: &[],
            total: Some(6),
        },
        Case {
            name: "limit 0 only counts",
            query: EntityQuery {
                limit: 0,
                types: strings(&[SPOT]),
                ..all.clone()
            },
            ids: &[],
            total: Some(3),
        },
        Case {
            name: "no count asked",
            query: EntityQuery {
                count: false,
                limit: 1,
                ..all.clone()
            },
            ids: &["urn:ngsi-ld:Building:1"],
            total: None,
        },
        Case {
            name: "ids, one missing, in id order",
            query: EntityQuery {
                ids: strings(&[
                    "urn:ngsi-ld:ParkingSpot:2",
                    "urn:ngsi-ld:Nothing:1",
                    "urn:ngsi-ld:Building:2",
                ]),
                ..all.clone()
            },
            ids: &["urn:ngsi-ld:Building:2", "urn:ngsi-ld:ParkingSpot:2"],
            total: Some(2),
        },
        Case {
            name: "one type",
            query: EntityQuery {
                types: strings(&[SPOT]),
                ..all.clone()
            },
            ids: &[
                "urn:ngsi-ld:ParkingSpot:1",
                "urn:ngsi-ld:ParkingSpot:10",
                "urn:ngsi-ld:ParkingSpot:2",
            ],
            total: Some(3),
        },
        Case {
            name: "one type, paged",
            query: EntityQuery {
                types: strings(&[SPOT]),
                limit: 1,
                offset: 1,
                ..all.clone()
            },
            ids: &["urn:ngsi-ld:ParkingSpot:10"],
            total: Some(3),
        },
        Case {
            name: "any of two types, entity with both listed once",
            query: EntityQuery {
                types: strings(&[OFFSTREET, SPOT]),
                ..all.clone()
            },
            ids: &[
                "urn:ngsi-ld:ParkingSpot:1",
                "urn:ngsi-ld:ParkingSpot:10",
                "urn:ngsi-ld:ParkingSpot:2",
                "urn:ngsi-ld:lower:1",
            ],
            total: Some(4),
        },
        Case {
            name: "unknown type",
            query: EntityQuery {
                types: strings(&["https://example.org/Nothing"]),
                ..all.clone()
            },
            ids: &[],
            total: Some(0),
        },
        Case {
            name: "one attribute",
            query: EntityQuery {
                attributes: strings(&[LOCATION]),
                ..all.clone()
            },
            ids: &["urn:ngsi-ld:Building:1", "urn:ngsi-ld:ParkingSpot:1"],
            total: Some(2),
        },
        Case {
            name: "any of two attributes",
            query: EntityQuery {
                attributes: strings(&[NAME, LOCATION]),
                ..all.clone()
            },
            ids: &[
                "urn:ngsi-ld:Building:1",
                "urn:ngsi-ld:ParkingSpot:1",
                "urn:ngsi-ld:ParkingSpot:10",
            ],
            total: Some(3),
        },
        Case {
            name: "type and attribute",
            query: EntityQuery {
                types: strings(&[SPOT]),
                attributes: strings(&[STATUS]),
                ..all.clone()
            },
            ids: &["urn:ngsi-ld:ParkingSpot:1", "urn:ngsi-ld:ParkingSpot:2"],
            total: Some(2),
        },
        Case {
            name: "two types and two attributes",
            query: EntityQuery {
                types: strings(&[SPOT, OFFSTREET]),
                attributes: strings(&[STATUS, NAME]),
                ..all.clone()
            },
            ids: &[
                "urn:ngsi-ld:ParkingSpot:1",
                "urn:ngsi-ld:ParkingSpot:10",
                "urn:ngsi-ld:ParkingSpot:2",
                "urn:ngsi-ld:lower:1",
            ],
            total: Some(4),
        },
        Case {
            name: "ids and type",
            query: EntityQuery {
                ids: strings(&["urn:ngsi-ld:ParkingSpot:2", "urn:ngsi-ld:Building:2"]),
                types: strings(&[SPOT]),
                ..all.clone()
            },
            ids: &["urn:ngsi-ld:ParkingSpot:2"],
            total: Some(1),
        },
        Case {
            name: "id pattern matches anywhere",
            query: EntityQuery {
                id_pattern: Some("Spot:1".to_owned()),
                ..all.clone()
            },
            ids: &["urn:ngsi-ld:ParkingSpot:1", "urn:ngsi-ld:ParkingSpot:10"],
            total: Some(2),
        },
        Case {
            name: "anchored id pattern",
            query: EntityQuery {
                id_pattern: Some("^urn:ngsi-ld:ParkingSpot:[0-9]$".to_owned()),
                ..all.clone()
            },
            ids: &["urn:ngsi-ld:ParkingSpot:1", "urn:ngsi-ld:ParkingSpot:2"],
            total: Some(2),
        },
        Case {
            name: "id pattern and type",
            query: EntityQuery {
                id_pattern: Some(".*:1$".to_owned()),
                types: strings(&[OFFSTREET]),
                ..all.clone()
            },
            ids: &["urn:ngsi-ld:lower:1"],
            total: Some(1),
        },
    ]
}

#[tokio::test]
async fn queries_filter_page_count_and_order_by_id() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        seed(&store).await?;
        for case in query_cases() {
            let page = store.query(TENANT, &case.query).await?;
            assert_eq!(ids(&page), case.ids, "{kind}: {}", case.name);
            assert_eq!(page.total, case.total, "{kind}: {}", case.name);
        }
        let other = store
            .query(
                "other",
                &EntityQuery {
                    limit: 10,
                    ..EntityQuery::default()
                },
            )
            .await?;
        assert_eq!(ids(&other), ["urn:ngsi-ld:ParkingSpot:1"], "{kind}");
    }
    Ok(())
}

#[tokio::test]
async fn purge_deletes_every_match() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        seed(&store).await?;
        let mut transaction = store.begin().await?;
        let spots = EntityQuery {
            types: strings(&[SPOT]),
            limit: 1, // Ignored by purge.
            ..EntityQuery::default()
        };
        assert_eq!(
            transaction.purge(TENANT, &spots).await?,
            3,
            "{kind}: by type"
        );
        let by_ids = EntityQuery {
            ids: strings(&["urn:ngsi-ld:Building:2", "urn:ngsi-ld:Nothing:1"]),
            ..EntityQuery::default()
        };
        assert_eq!(
            transaction.purge(TENANT, &by_ids).await?,
            1,
            "{kind}: by ids"
        );
        let by_pattern = EntityQuery {
            id_pattern: Some("^urn:ngsi-ld:lower:".to_owned()),
            ..EntityQuery::default()
        };
        assert_eq!(
            transaction.purge(TENANT, &by_pattern).await?,
            1,
            "{kind}: by pattern"
        );
        transaction.commit().await?;

        let rest = store
            .query(
                TENANT,
                &EntityQuery {
                    limit: 10,
                    ..EntityQuery::default()
                },
            )
            .await?;
        assert_eq!(ids(&rest), ["urn:ngsi-ld:Building:1"], "{kind}");
        assert_eq!(
            count_all(&store, "other").await?,
            1,
            "{kind}: other tenant untouched"
        );
        // The index rows went with the entities.
        let spots = EntityQuery {
            types: strings(&[SPOT]),
            count: true,
            ..EntityQuery::default()
        };
        assert_eq!(store.query(TENANT, &spots).await?.total, Some(0), "{kind}");
    }
    Ok(())
}

#[tokio::test]
async fn invalid_patterns_are_rejected_without_aborting_the_transaction() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        seed(&store).await?;
        let bad = EntityQuery {
            id_pattern: Some("urn:(unclosed".to_owned()),
            limit: 10,
            ..EntityQuery::default()
        };
        let error = store.query(TENANT, &bad).await;
        assert!(
            matches!(error, Err(Error::InvalidPattern(_))),
            "{kind}: {error:?}"
        );
        let mut transaction = store.begin().await?;
        let error = transaction.purge(TENANT, &bad).await;
        assert!(
            matches!(error, Err(Error::InvalidPattern(_))),
            "{kind}: {error:?}"
        );
        assert!(
            transaction.delete(TENANT, "urn:ngsi-ld:Building:1").await?,
            "{kind}"
        );
        transaction.commit().await?;
        assert_eq!(count_all(&store, TENANT).await?, 5, "{kind}");
    }
    Ok(())
}

#[tokio::test]
async fn contexts_are_created_listed_and_deleted() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        let context = |id: &str, seconds: i64| ContextRecord {
            id: id.to_owned(),
            url: format!("http://localhost:8080/ngsi-ld/v1/jsonldContexts/{id}"),
            kind: "Hosted".to_owned(),
            body: r#"{"@context":{"name":"https://example.org/name"}}"#.to_owned(),
            created_at: fixed_time(seconds),
        };
        let (first, second) = (context("b-first", 1), context("a-second", 2));
        store.put_context(&first).await?;
        store.put_context(&second).await?;
        let duplicate = store.put_context(&first).await;
        assert!(
            matches!(duplicate, Err(Error::AlreadyExists)),
            "{kind}: {duplicate:?}"
        );

        assert_eq!(
            store.get_context("b-first").await?,
            Some(first.clone()),
            "{kind}"
        );
        assert_eq!(store.get_context("nothing").await?, None, "{kind}");
        assert_eq!(
            store.list_contexts().await?,
            [first.clone(), second.clone()],
            "{kind}: oldest first"
        );
        assert!(store.delete_context("b-first").await?, "{kind}");
        assert!(!store.delete_context("b-first").await?, "{kind}");
        assert_eq!(store.list_contexts().await?, [second], "{kind}");
    }
    Ok(())
}

/// Batch writes take the multi-row path; this checks their results, not their speed.
#[tokio::test]
async fn ten_thousand_records_upserted_in_batches() -> TestResult {
    const TOTAL: usize = 10_000;
    for (database, store) in stores().await {
        let kind = database.kind;
        let records: Vec<EntityRecord> = (0..TOTAL)
            .map(|index| {
                let mut record = record(
                    &format!("urn:ngsi-ld:Sensor:{index:05}"),
                    &[if index % 2 == 0 { SPOT } else { BUILDING }],
                    &[STATUS, NAME],
                );
                record.scopes = vec![format!("/zone/{}", index % 7)];
                record
            })
            .collect();
        for batch in records.chunks(1000) {
            let mut transaction = store.begin().await?;
            transaction.upsert_many(TENANT, batch).await?;
            transaction.commit().await?;
        }
        // Upserting everything again replaces rather than duplicates.
        let mut transaction = store.begin().await?;
        transaction.upsert_many(TENANT, &records).await?;
        let ids: Vec<String> = records.iter().map(|record| record.id.clone()).collect();
        let locked = transaction.get_many_for_update(TENANT, &ids).await?;
        assert_eq!(locked.len(), TOTAL, "{kind}");
        assert_eq!(locked, records, "{kind}: all of them, in id order");
        transaction.commit().await?;

        assert_eq!(count_all(&store, TENANT).await?, TOTAL as u64, "{kind}");
        let spots = EntityQuery {
            types: strings(&[SPOT]),
            limit: 3,
            offset: 1,
            count: true,
            ..EntityQuery::default()
        };
        let page = store.query(TENANT, &spots).await?;
        assert_eq!(page.total, Some(TOTAL as u64 / 2), "{kind}");
        assert_eq!(
            page.records,
            records[2..7].iter().step_by(2).cloned().collect::<Vec<_>>(),
            "{kind}"
        );
        let named = EntityQuery {
            attributes: strings(&[NAME]),
            count: true,
            ..EntityQuery::default()
        };
        assert_eq!(
            store.query(TENANT, &named).await?.total,
            Some(TOTAL as u64),
            "{kind}"
        );
        // A list of ids longer than one bound-parameter chunk.
        let many = EntityQuery {
            ids: ids[..2500].to_vec(),
            limit: 5000,
            count: true,
            ..EntityQuery::default()
        };
        let page = store.query(TENANT, &many).await?;
        assert_eq!(page.total, Some(2500), "{kind}");
        assert_eq!(page.records[..], records[..2500], "{kind}");
        assert_eq!(store.get_many(TENANT, &ids).await?.len(), TOTAL, "{kind}");

        let mut transaction = store.begin().await?;
        let deleted = transaction.delete_many(TENANT, &ids[..5000]).await?;
        assert!(deleted.iter().all(|deleted| *deleted), "{kind}");
        transaction.commit().await?;
        assert_eq!(count_all(&store, TENANT).await?, 5000, "{kind}");
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_writers_queue_instead_of_failing() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        let writers = (0..8).map(|index| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut transaction: Transaction = store.begin().await?;
                let id = format!("urn:ngsi-ld:Writer:{index}");
                transaction
                    .insert(TENANT, &record(&id, &[SPOT], &[]))
                    .await?;
                tokio::task::yield_now().await;
                transaction.commit().await
            })
        });
        for writer in writers.collect::<Vec<_>>() {
            writer.await??;
        }
        assert_eq!(count_all(&store, TENANT).await?, 8, "{kind}");
    }
    Ok(())
}

#[tokio::test]
async fn open_creates_the_directory_and_rejects_unknown_schemes() -> TestResult {
    let directory = tempfile::tempdir()?;
    let path = directory.path().join("nested/deeper/civitas.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::open(&url).await?;
    seed(&store).await?;
    drop(store);
    assert!(path.exists());
    // Reopening applies no migration twice and keeps the data.
    let store = Store::open(&url).await?;
    assert_eq!(count_all(&store, TENANT).await?, 6);

    let memory = Store::open("sqlite::memory:").await?;
    seed(&memory).await?;
    assert_eq!(count_all(&memory, TENANT).await?, 6);

    let unknown = Store::open("mysql://localhost/civitas").await;
    assert!(matches!(unknown, Err(Error::UnsupportedUrl)), "{unknown:?}");
    Ok(())
}

#[tokio::test]
async fn revocations_persist_and_are_idempotent() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        assert!(store.all_revoked().await?.is_empty(), "{kind}");
        let ids = vec!["aa01".to_owned(), "bb02".to_owned()];
        store.revoke(&ids, fixed_time(10), "lost laptop").await?;
        // Revoking again (and an overlapping set) changes nothing and does not fail.
        store
            .revoke(
                &["bb02".to_owned(), "cc03".to_owned()],
                fixed_time(20),
                "again",
            )
            .await?;
        assert_eq!(
            store.all_revoked().await?,
            ["aa01", "bb02", "cc03"],
            "{kind}"
        );
        let asked = vec!["zz99".to_owned(), "bb02".to_owned(), "aa01".to_owned()];
        assert_eq!(
            store.revoked_among(&asked).await?,
            ["aa01", "bb02"],
            "{kind}"
        );
        assert!(
            store.revoked_among(&["zz99".to_owned()]).await?.is_empty(),
            "{kind}"
        );
        // Many ids at once (beyond one IN list).
        let many: Vec<String> = (0..2500).map(|n| format!("{n:08x}")).collect();
        store.revoke(&many, fixed_time(30), "bulk").await?;
        assert_eq!(store.revoked_among(&many).await?.len(), 2500, "{kind}");
    }
    Ok(())
}
