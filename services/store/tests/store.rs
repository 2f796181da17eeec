//! Behaviour tests of the store, each run on SQLite and (when configured) PostgreSQL.
//!
//! Every test opens one store per database from `civitas_testkit::test_databases()`, so a single
//! test function covers both backends; failures name the backend.

use civitas_store::{
    BBox, ContextRecord, Documents, EntityQuery, EntityRecord, Error, QueryPage,
    RegistrationRecord, Store, Transaction,
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
        first_observed: None,
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
        original.first_observed = Some(fixed_time(5));
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

#[tokio::test]
async fn registrations_are_created_replaced_listed_and_deleted_per_tenant() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        let registration = |id: &str, body: &str, seconds: i64| RegistrationRecord {
            id: id.to_owned(),
            body: body.to_owned(),
            created_at: fixed_time(seconds),
            modified_at: fixed_time(seconds),
        };
        let (b, a) = (
            registration("urn:ngsi-ld:R:b", r#"{"mode":"inclusive"}"#, 1),
            registration("urn:ngsi-ld:R:a", r#"{"mode":"exclusive"}"#, 2),
        );
        store
            .put_document(Documents::Registrations, TENANT, &b)
            .await?;
        store
            .put_document(Documents::Registrations, TENANT, &a)
            .await?;
        store
            .put_document(Documents::Registrations, "other", &a)
            .await?;
        let duplicate = store
            .put_document(Documents::Registrations, TENANT, &b)
            .await;
        assert!(
            matches!(duplicate, Err(Error::AlreadyExists)),
            "{kind}: {duplicate:?}"
        );
        assert_eq!(
            store
                .list_documents(Documents::Registrations, TENANT)
                .await?,
            [a.clone(), b.clone()],
            "{kind}: id order"
        );
        assert_eq!(
            store
                .get_document(Documents::Registrations, TENANT, "urn:ngsi-ld:R:b")
                .await?,
            Some(b.clone()),
            "{kind}"
        );
        assert_eq!(
            store
                .get_document(Documents::Registrations, "third", "urn:ngsi-ld:R:b")
                .await?,
            None
        );

        // A replacement applies only to the version it was computed from.
        let mut changed = b.clone();
        changed.body = r#"{"mode":"redirect"}"#.to_owned();
        changed.modified_at = fixed_time(5);
        assert!(
            store
                .replace_document(Documents::Registrations, TENANT, &changed, b.modified_at)
                .await?,
            "{kind}"
        );
        assert!(
            !store
                .replace_document(Documents::Registrations, TENANT, &changed, b.modified_at)
                .await?,
            "{kind}: a stale replacement is refused"
        );
        assert_eq!(
            store
                .get_document(Documents::Registrations, TENANT, &b.id)
                .await?,
            Some(changed.clone()),
            "{kind}"
        );

        assert!(
            store
                .delete_document(Documents::Registrations, TENANT, &a.id)
                .await?,
            "{kind}"
        );
        assert!(
            !store
                .delete_document(Documents::Registrations, TENANT, &a.id)
                .await?,
            "{kind}"
        );
        assert_eq!(
            store
                .list_documents(Documents::Registrations, TENANT)
                .await?,
            [changed],
            "{kind}"
        );
        assert_eq!(
            store
                .list_documents(Documents::Registrations, "other")
                .await?,
            [a],
            "{kind}: tenants are apart"
        );
    }
    Ok(())
}

#[tokio::test]
async fn registration_subscriptions_are_kept_apart_from_registrations() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        let record = |id: &str, body: &str, seconds: i64| RegistrationRecord {
            id: id.to_owned(),
            body: body.to_owned(),
            created_at: fixed_time(seconds),
            modified_at: fixed_time(seconds),
        };
        let subscription = record("urn:ngsi-ld:Subscription:1", r#"{"isActive":true}"#, 1);
        store
            .put_document(Documents::RegistrationSubscriptions, TENANT, &subscription)
            .await?;
        let duplicate = store
            .put_document(Documents::RegistrationSubscriptions, TENANT, &subscription)
            .await;
        assert!(
            matches!(duplicate, Err(Error::AlreadyExists)),
            "{kind}: {duplicate:?}"
        );
        assert_eq!(
            store
                .list_documents(Documents::Registrations, TENANT)
                .await?,
            [],
            "{kind}"
        );
        assert!(
            store
                .document_tenants(Documents::RegistrationSubscriptions)
                .await?
                .contains(&TENANT.to_owned()),
            "{kind}"
        );
        let mut paused = subscription.clone();
        paused.body = r#"{"isActive":false}"#.to_owned();
        paused.modified_at = fixed_time(2);
        assert!(
            store
                .replace_document(
                    Documents::RegistrationSubscriptions,
                    TENANT,
                    &paused,
                    subscription.modified_at
                )
                .await?,
            "{kind}"
        );
        assert_eq!(
            store
                .get_document(Documents::RegistrationSubscriptions, TENANT, &paused.id)
                .await?,
            Some(paused.clone()),
            "{kind}"
        );
        assert_eq!(
            store
                .list_documents(Documents::RegistrationSubscriptions, "other")
                .await?,
            [],
            "{kind}: tenants are apart"
        );
        assert!(
            store
                .delete_document(Documents::RegistrationSubscriptions, TENANT, &paused.id)
                .await?,
            "{kind}"
        );
        assert_eq!(
            store
                .list_documents(Documents::RegistrationSubscriptions, TENANT)
                .await?,
            [],
            "{kind}"
        );
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

// The audit logs: entries, complete-subtree hashes and checkpoints per named log.

const AUDIT_LOG: &str = "mobility";

/// A stored subtree hash: `(level, index, hash)`.
type SubtreeHash = (u8, u64, [u8; 32]);

/// The entry at `index` of `log`: distinct per log and index, and empty at index 0 (an empty
/// leaf is valid in RFC 9162 and must survive the round trip).
fn audit_entry(log: &str, index: u64) -> Vec<u8> {
    if index == 0 {
        return Vec::new();
    }
    format!("{log} entry {index}").into_bytes()
}

fn audit_entries_between(log: &str, start: u64, end: u64) -> Vec<Vec<u8>> {
    (start..end).map(|index| audit_entry(log, index)).collect()
}

/// A made-up hash for the subtree `(level, index)` of `log`; the store computes nothing, so it
/// only has to be distinct per log and subtree.
fn audit_hash(log: &str, level: u8, index: u64) -> [u8; 32] {
    let mut hash = [0xa5; 32];
    hash[..8].copy_from_slice(&index.to_be_bytes());
    hash[8] = level;
    for (byte, name) in hash[9..].iter_mut().zip(log.bytes()) {
        *byte = name;
    }
    hash
}

/// The hashes an append from `old_size` to `new_size` entries stores: every subtree it
/// completes, `(level, index)` with `old_size < (index + 1)·2^level <= new_size`.
fn audit_hashes_completed(log: &str, old_size: u64, new_size: u64) -> Vec<SubtreeHash> {
    let mut hashes = Vec::new();
    for level in 0..64u8 {
        let width = 1u64 << level;
        if width > new_size {
            break;
        }
        for index in old_size / width..new_size / width {
            hashes.push((level, index, audit_hash(log, level, index)));
        }
    }
    hashes
}

/// Appends the entries `old_size..new_size` of `log` with the hashes they complete.
async fn audit_grow(store: &Store, log: &str, old_size: u64, new_size: u64) -> Result<(), Error> {
    store
        .audit_append(
            log,
            old_size,
            &audit_entries_between(log, old_size, new_size),
            &audit_hashes_completed(log, old_size, new_size),
        )
        .await
}

/// Checks that `log` holds exactly `size` entries and the hashes of a log of that size.
async fn assert_audit_log(store: &Store, log: &str, size: u64, kind: &str) -> TestResult {
    assert_eq!(store.audit_size(log).await?, size, "{kind}: size of {log}");
    assert_eq!(
        store.audit_entries(log, 0, size + 1).await?,
        audit_entries_between(log, 0, size),
        "{kind}: entries of {log}"
    );
    let expected = audit_hashes_completed(log, 0, size);
    let subtrees: Vec<(u8, u64)> = expected.iter().map(|&(l, i, _)| (l, i)).collect();
    let hashes: Vec<Option<[u8; 32]>> = expected.iter().map(|&(_, _, h)| Some(h)).collect();
    assert_eq!(
        store.audit_hashes(log, &subtrees).await?,
        hashes,
        "{kind}: hashes of {log}"
    );
    // The next leaf, and the level-1 subtree it falls into, are not there yet.
    assert_eq!(
        store.audit_hashes(log, &[(0, size), (1, size / 2)]).await?,
        [None, None],
        "{kind}: hashes beyond {log}'s end"
    );
    Ok(())
}

#[tokio::test]
async fn audit_log_appends_in_batches_and_reads_back() -> TestResult {
    // Batch sizes, the empty one included: the log grows 1, 3, 8, 8, 17, 317.
    const BATCHES: [u64; 6] = [1, 2, 5, 0, 9, 300];
    for (database, store) in stores().await {
        let kind = database.kind;
        assert_audit_log(&store, AUDIT_LOG, 0, kind).await?;
        let mut size = 0;
        for batch in BATCHES {
            audit_grow(&store, AUDIT_LOG, size, size + batch).await?;
            size += batch;
            assert_audit_log(&store, AUDIT_LOG, size, kind).await?;
        }
        // Hashes come back in the order asked, repeats included, `None` where not stored: the
        // leaf after the end, the incomplete subtree (5, 9) over leaves 288..320, a level no
        // log reaches and an index no table holds.
        let asked = [
            (8, 0),
            (0, 316),
            (1, 1),
            (0, 317),
            (8, 0),
            (5, 9),
            (64, 0),
            (0, u64::MAX),
        ];
        assert_eq!(
            store.audit_hashes(AUDIT_LOG, &asked).await?,
            [
                Some(audit_hash(AUDIT_LOG, 8, 0)),
                Some(audit_hash(AUDIT_LOG, 0, 316)),
                Some(audit_hash(AUDIT_LOG, 1, 1)),
                None,
                Some(audit_hash(AUDIT_LOG, 8, 0)),
                None,
                None,
                None,
            ],
            "{kind}"
        );
        assert!(
            store.audit_hashes(AUDIT_LOG, &[]).await?.is_empty(),
            "{kind}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn audit_entries_reads_the_part_of_a_range_that_exists() -> TestResult {
    const SIZE: u64 = 10;
    // (start, end, the entries it must give)
    let cases: [(u64, u64, std::ops::Range<u64>); 9] = [
        (0, 0, 0..0),
        (3, 3, 3..3),
        (2, 5, 2..5),
        (0, SIZE, 0..SIZE),
        (SIZE - 2, SIZE + 10, SIZE - 2..SIZE),
        (SIZE, SIZE + 5, SIZE..SIZE),
        (SIZE + 5, SIZE + 10, SIZE..SIZE),
        (0, u64::MAX, 0..SIZE),
        (u64::MAX - 1, u64::MAX, SIZE..SIZE),
    ];
    for (database, store) in stores().await {
        let kind = database.kind;
        audit_grow(&store, AUDIT_LOG, 0, SIZE).await?;
        for (start, end, expected) in cases.clone() {
            assert_eq!(
                store.audit_entries(AUDIT_LOG, start, end).await?,
                audit_entries_between(AUDIT_LOG, expected.start, expected.end),
                "{kind}: {start}..{end}"
            );
        }
        let backwards = store.audit_entries(AUDIT_LOG, 5, 2).await;
        assert!(
            matches!(backwards, Err(Error::AuditOutOfRange(_))),
            "{kind}: {backwards:?}"
        );
        assert!(
            store.audit_entries("no such log", 0, 10).await?.is_empty(),
            "{kind}"
        );
    }
    Ok(())
}

/// An append is stored as few rows (one per 256-entry bundle it touches); reads cut ranges out
/// of rows, across their boundaries, whatever rows the appends made.
#[tokio::test]
async fn audit_entries_are_read_across_the_rows_appends_made() -> TestResult {
    // Rows from 0, 1, 5, 6, 9, then the append of 1,200 from 10: rows from 10, 256, 512, 768
    // and 1,024 (and, past 1,000 entries, a second statement from 1,010).
    const BATCHES: [u64; 6] = [1, 4, 1, 3, 1, 1200];
    const SIZE: u64 = 1210;
    let bounds = [
        0, 1, 2, 5, 6, 9, 10, 11, 255, 256, 257, 511, 512, 700, 1009, 1010, 1011, 1023, 1024, 1209,
        1210, 1300,
    ];
    for (database, store) in stores().await {
        let kind = database.kind;
        let mut size = 0;
        for batch in BATCHES {
            audit_grow(&store, AUDIT_LOG, size, size + batch).await?;
            size += batch;
        }
        assert_eq!(size, SIZE);
        assert_audit_log(&store, AUDIT_LOG, SIZE, kind).await?;
        for start in bounds {
            for end in bounds.into_iter().filter(|&end| end >= start) {
                assert_eq!(
                    store.audit_entries(AUDIT_LOG, start, end).await?,
                    audit_entries_between(AUDIT_LOG, start.min(SIZE), end.min(SIZE)),
                    "{kind}: {start}..{end}"
                );
            }
        }
    }
    Ok(())
}

/// Leaf hashes are stored as rows of up to 256 (never crossing a multiple of 256); a leaf is
/// found by its hash only where it starts at a hash's boundary in its row, and the lowest index
/// wins.
#[tokio::test]
async fn audit_leaves_are_found_by_hash_in_their_rows() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        // Rows from 0 and 256 (one append across the boundary), then 300.
        audit_grow(&store, AUDIT_LOG, 0, 300).await?;
        // Leaves 300 and 301 have the hash of leaf 7, as a forged log could.
        let copied = audit_hash(AUDIT_LOG, 0, 7);
        store
            .audit_append(
                AUDIT_LOG,
                300,
                &audit_entries_between(AUDIT_LOG, 300, 302),
                &[(0, 300, copied), (0, 301, copied)],
            )
            .await?;
        let index = async |hash: [u8; 32]| store.audit_leaf_index(AUDIT_LOG, &hash).await;
        assert_eq!(index(audit_hash(AUDIT_LOG, 0, 0)).await?, Some(0), "{kind}");
        assert_eq!(
            index(audit_hash(AUDIT_LOG, 0, 255)).await?,
            Some(255),
            "{kind}"
        );
        assert_eq!(
            index(audit_hash(AUDIT_LOG, 0, 256)).await?,
            Some(256),
            "{kind}"
        );
        assert_eq!(
            index(audit_hash(AUDIT_LOG, 0, 299)).await?,
            Some(299),
            "{kind}"
        );
        assert_eq!(index(copied).await?, Some(7), "{kind}");
        // Not a leaf: a hash of another level, one of another log, and the last 16 bytes of leaf
        // 9 followed by the first 16 of leaf 10, which the row holds, but across two leaves.
        assert_eq!(index(audit_hash(AUDIT_LOG, 8, 0)).await?, None, "{kind}");
        assert_eq!(index(audit_hash("other", 0, 1)).await?, None, "{kind}");
        let mut straddling = [0; 32];
        straddling[..16].copy_from_slice(&audit_hash(AUDIT_LOG, 0, 9)[16..]);
        straddling[16..].copy_from_slice(&audit_hash(AUDIT_LOG, 0, 10)[..16]);
        assert_eq!(index(straddling).await?, None, "{kind}");
        assert_eq!(
            store
                .audit_hashes(AUDIT_LOG, &[(0, 300), (0, 301), (0, 302)])
                .await?,
            [Some(copied), Some(copied), None],
            "{kind}"
        );
    }
    Ok(())
}

/// A log whose first leaf hashes were stored one per row in `audit_hashes` (before
/// `audit_leaves` existed) reads the same and grows on.
#[tokio::test]
async fn audit_logs_with_leaf_hashes_stored_one_per_row_read_on() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        let upper: Vec<SubtreeHash> = audit_hashes_completed(AUDIT_LOG, 0, 10)
            .into_iter()
            .filter(|&(level, _, _)| level > 0)
            .collect();
        store
            .audit_append(
                AUDIT_LOG,
                0,
                &audit_entries_between(AUDIT_LOG, 0, 10),
                &upper,
            )
            .await?;
        // Written as the store wrote them before: one audit_hashes row per leaf.
        let leaves =
            (0..10u64).map(|index| (i64::try_from(index), audit_hash(AUDIT_LOG, 0, index)));
        if kind == "sqlite" {
            let pool = sqlx::SqlitePool::connect(&database.url).await?;
            for (index, hash) in leaves {
                sqlx::query("INSERT INTO audit_hashes (log, level, idx, hash) VALUES (?, 0, ?, ?)")
                    .bind(AUDIT_LOG)
                    .bind(index?)
                    .bind(hash.to_vec())
                    .execute(&pool)
                    .await?;
            }
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(&database.url).await?;
            for (index, hash) in leaves {
                sqlx::query(
                    "INSERT INTO audit_hashes (log, level, idx, hash) VALUES ($1, 0, $2, $3)",
                )
                .bind(AUDIT_LOG)
                .bind(index?)
                .bind(hash.to_vec())
                .execute(&pool)
                .await?;
            }
            pool.close().await;
        }
        audit_grow(&store, AUDIT_LOG, 10, 300).await?;
        assert_audit_log(&store, AUDIT_LOG, 300, kind).await?;
        let index = async |leaf: u64| {
            store
                .audit_leaf_index(AUDIT_LOG, &audit_hash(AUDIT_LOG, 0, leaf))
                .await
        };
        assert_eq!(index(3).await?, Some(3), "{kind}");
        assert_eq!(index(9).await?, Some(9), "{kind}");
        assert_eq!(index(10).await?, Some(10), "{kind}");
        assert_eq!(index(290).await?, Some(290), "{kind}");
    }
    Ok(())
}

#[tokio::test]
async fn audit_append_refuses_a_first_index_other_than_the_size() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        // An empty log starts at 0.
        let early = store
            .audit_append(AUDIT_LOG, 1, &audit_entries_between(AUDIT_LOG, 1, 2), &[])
            .await;
        assert!(
            matches!(
                early,
                Err(Error::AuditConflict {
                    expected: 0,
                    found: 1
                })
            ),
            "{kind}: {early:?}"
        );
        audit_grow(&store, AUDIT_LOG, 0, 3).await?;
        // Overlapping the end, from the start, leaving a gap; with entries or without, with
        // the new leaves' hashes or without: nothing of a refused append is stored.
        for found in [2, 0, 4, 5] {
            let leaves: Vec<(u8, u64, [u8; 32])> =
                audit_hashes_completed(AUDIT_LOG, found, found + 2)
                    .into_iter()
                    .filter(|&(level, index, _)| level == 0 && index >= found)
                    .collect();
            for (entries, hashes) in [
                (
                    audit_entries_between(AUDIT_LOG, found, found + 2),
                    Vec::new(),
                ),
                (audit_entries_between(AUDIT_LOG, found, found + 2), leaves),
                (Vec::new(), Vec::new()),
            ] {
                let outcome = store
                    .audit_append(AUDIT_LOG, found, &entries, &hashes)
                    .await;
                assert!(
                    matches!(outcome, Err(Error::AuditConflict { expected: 3, found: f }) if f == found),
                    "{kind}: append at {found}: {outcome:?}"
                );
            }
        }
        assert_audit_log(&store, AUDIT_LOG, 3, kind).await?;
        assert_eq!(
            store
                .audit_hashes(AUDIT_LOG, &[(0, 4), (0, 5), (0, 6)])
                .await?,
            [None, None, None],
            "{kind}: hashes of a refused append"
        );
        // At the end it goes through, and an empty append there is a no-op.
        audit_grow(&store, AUDIT_LOG, 3, 3).await?;
        audit_grow(&store, AUDIT_LOG, 3, 4).await?;
        assert_audit_log(&store, AUDIT_LOG, 4, kind).await?;
    }
    Ok(())
}

/// Appends to a log of two entries that must be refused as a whole.
struct RefusedAppend {
    name: &'static str,
    entries: u64,
    /// Replaces or adds hashes to those the entries complete.
    hashes: Vec<SubtreeHash>,
    refusal: fn(&Error) -> bool,
}

fn refused_appends() -> Vec<RefusedAppend> {
    const OTHER: [u8; 32] = [0x11; 32];
    vec![
        RefusedAppend {
            name: "a stored leaf hash with another value",
            entries: 2,
            hashes: vec![(0, 1, OTHER)],
            refusal: |error| matches!(error, Error::AuditOverwrite(_)),
        },
        RefusedAppend {
            name: "a stored interior hash with another value",
            entries: 2,
            hashes: vec![(1, 0, OTHER)],
            refusal: |error| matches!(error, Error::AuditOverwrite(_)),
        },
        RefusedAppend {
            name: "a new hash given twice with different values",
            entries: 2,
            hashes: vec![(2, 0, OTHER)],
            refusal: |error| matches!(error, Error::AuditOverwrite(_)),
        },
        RefusedAppend {
            name: "the hash of a subtree the append does not complete",
            entries: 1,
            hashes: vec![(1, 1, OTHER)],
            refusal: |error| matches!(error, Error::AuditOutOfRange(_)),
        },
        RefusedAppend {
            name: "the hash of a leaf beyond the end",
            entries: 2,
            hashes: vec![(0, 4, OTHER)],
            refusal: |error| matches!(error, Error::AuditOutOfRange(_)),
        },
        RefusedAppend {
            name: "a level too high for any log",
            entries: 2,
            hashes: vec![(64, 0, OTHER)],
            refusal: |error| matches!(error, Error::AuditOutOfRange(_)),
        },
    ]
}

#[tokio::test]
async fn audit_append_rejects_changed_hashes_and_writes_nothing() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        audit_grow(&store, AUDIT_LOG, 0, 2).await?;
        for case in refused_appends() {
            let new_size = 2 + case.entries;
            let mut hashes = audit_hashes_completed(AUDIT_LOG, 2, new_size);
            hashes.extend(case.hashes);
            let outcome = store
                .audit_append(
                    AUDIT_LOG,
                    2,
                    &audit_entries_between(AUDIT_LOG, 2, new_size),
                    &hashes,
                )
                .await;
            assert!(
                outcome.as_ref().is_err_and(case.refusal),
                "{kind}: {}: {outcome:?}",
                case.name
            );
            // Neither the entries nor the hashes of the batch were written.
            assert_audit_log(&store, AUDIT_LOG, 2, kind).await?;
            assert_eq!(
                store.audit_hashes(AUDIT_LOG, &[(0, 2), (2, 0)]).await?,
                [None, None],
                "{kind}: {}",
                case.name
            );
        }
        // Hashes already stored may be sent again with the same value, and once each.
        let mut hashes = audit_hashes_completed(AUDIT_LOG, 0, 4);
        hashes.extend(audit_hashes_completed(AUDIT_LOG, 2, 4));
        store
            .audit_append(
                AUDIT_LOG,
                2,
                &audit_entries_between(AUDIT_LOG, 2, 4),
                &hashes,
            )
            .await?;
        assert_audit_log(&store, AUDIT_LOG, 4, kind).await?;
    }
    Ok(())
}

/// One append of ten thousand entries goes through the chunked statements.
#[tokio::test]
async fn audit_append_of_ten_thousand_entries() -> TestResult {
    const SIZE: u64 = 10_000;
    for (database, store) in stores().await {
        let kind = database.kind;
        let hashes = audit_hashes_completed(AUDIT_LOG, 0, SIZE);
        assert_eq!(hashes.len(), 19_995, "{kind}: 2n minus the set bits of n");
        audit_grow(&store, AUDIT_LOG, 0, SIZE).await?;
        assert_audit_log(&store, AUDIT_LOG, SIZE, kind).await?;
        // And the next one after it.
        audit_grow(&store, AUDIT_LOG, SIZE, SIZE + 3).await?;
        assert_audit_log(&store, AUDIT_LOG, SIZE + 3, kind).await?;
    }
    Ok(())
}

#[tokio::test]
async fn audit_checkpoints_are_stored_once_per_size() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        assert_eq!(
            store.audit_latest_checkpoint(AUDIT_LOG).await?,
            None,
            "{kind}"
        );
        // The empty tree has a checkpoint too.
        store
            .audit_put_checkpoint(AUDIT_LOG, 0, "size 0\n", fixed_time(0))
            .await?;
        audit_grow(&store, AUDIT_LOG, 0, 3).await?;
        store
            .audit_put_checkpoint(AUDIT_LOG, 3, "size 3\n", fixed_time(3))
            .await?;
        // The same note again is fine; another note for the same size is not.
        store
            .audit_put_checkpoint(AUDIT_LOG, 3, "size 3\n", fixed_time(4))
            .await?;
        let changed = store
            .audit_put_checkpoint(AUDIT_LOG, 3, "size 3, forged\n", fixed_time(5))
            .await;
        assert!(
            matches!(changed, Err(Error::AuditOverwrite(_))),
            "{kind}: {changed:?}"
        );
        // A size the log has not reached cannot have a checkpoint.
        let ahead = store
            .audit_put_checkpoint(AUDIT_LOG, 4, "size 4\n", fixed_time(6))
            .await;
        assert!(
            matches!(ahead, Err(Error::AuditOutOfRange(_))),
            "{kind}: {ahead:?}"
        );
        // An older size stored later does not become the latest.
        store
            .audit_put_checkpoint(AUDIT_LOG, 1, "size 1\n", fixed_time(7))
            .await?;
        assert_eq!(
            store.audit_latest_checkpoint(AUDIT_LOG).await?,
            Some((3, "size 3\n".to_owned())),
            "{kind}"
        );
        for (size, note) in [
            (0, Some("size 0\n")),
            (1, Some("size 1\n")),
            (2, None),
            (3, Some("size 3\n")),
            (4, None),
            (u64::MAX, None),
        ] {
            assert_eq!(
                store.audit_checkpoint(AUDIT_LOG, size).await?.as_deref(),
                note,
                "{kind}: checkpoint {size}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn audit_logs_in_one_database_are_independent() -> TestResult {
    const OTHER_LOG: &str = "health";
    for (database, store) in stores().await {
        let kind = database.kind;
        audit_grow(&store, AUDIT_LOG, 0, 5).await?;
        audit_grow(&store, OTHER_LOG, 0, 2).await?;
        // Each log's size counts its own entries only.
        let conflict = audit_grow(&store, OTHER_LOG, 5, 6).await;
        assert!(
            matches!(
                conflict,
                Err(Error::AuditConflict {
                    expected: 2,
                    found: 5
                })
            ),
            "{kind}: {conflict:?}"
        );
        audit_grow(&store, OTHER_LOG, 2, 7).await?;
        audit_grow(&store, AUDIT_LOG, 5, 6).await?;
        assert_audit_log(&store, AUDIT_LOG, 6, kind).await?;
        assert_audit_log(&store, OTHER_LOG, 7, kind).await?;
        // The same subtree holds each log's own hash.
        assert_eq!(
            store.audit_hashes(OTHER_LOG, &[(2, 0)]).await?,
            [Some(audit_hash(OTHER_LOG, 2, 0))],
            "{kind}"
        );
        // Checkpoints of the same size in two logs.
        for (log, note) in [(AUDIT_LOG, "mobility 5\n"), (OTHER_LOG, "health 5\n")] {
            store
                .audit_put_checkpoint(log, 5, note, fixed_time(0))
                .await?;
        }
        assert_eq!(
            store.audit_latest_checkpoint(OTHER_LOG).await?,
            Some((5, "health 5\n".to_owned())),
            "{kind}"
        );
        assert_eq!(
            store.audit_checkpoint(AUDIT_LOG, 5).await?.as_deref(),
            Some("mobility 5\n"),
            "{kind}"
        );
        assert_eq!(store.audit_size("no such log").await?, 0, "{kind}");
        assert_eq!(
            store.audit_latest_checkpoint("no such log").await?,
            None,
            "{kind}"
        );
    }
    Ok(())
}

/// Appenders racing for the same index: exactly one wins, the others see its entries. (On
/// PostgreSQL they would otherwise all read size 0 and the losers fail on the primary key.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_audit_appends_at_one_index_admit_one() -> TestResult {
    const APPENDERS: usize = 8;
    for (database, store) in stores().await {
        let kind = database.kind;
        // Open the connections first, so that the appenders do not take turns connecting.
        let pings: Vec<_> = (0..APPENDERS)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.ping().await })
            })
            .collect();
        for ping in pings {
            ping.await??;
        }
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(APPENDERS));
        let appenders = (0..APPENDERS).map(|_| {
            let (store, start) = (store.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                audit_grow(&store, AUDIT_LOG, 0, 2).await
            })
        });
        let mut won = 0;
        for appender in appenders.collect::<Vec<_>>() {
            match appender.await? {
                Ok(()) => won += 1,
                Err(Error::AuditConflict {
                    expected: 2,
                    found: 0,
                }) => {}
                Err(error) => return Err(format!("{kind}: {error:?}").into()),
            }
        }
        assert_eq!(won, 1, "{kind}");
        assert_audit_log(&store, AUDIT_LOG, 2, kind).await?;
    }
    Ok(())
}

#[tokio::test]
async fn audit_key_seed_is_stored_once_and_kept() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        let first = store.audit_key_seed("transport", &[1; 32]).await?;
        assert_eq!(first, [1; 32], "{kind}: the first seed is stored");
        let again = store.audit_key_seed("transport", &[2; 32]).await?;
        assert_eq!(again, [1; 32], "{kind}: a stored seed is never replaced");
        let other = store.audit_key_seed("parks", &[3; 32]).await?;
        assert_eq!(other, [3; 32], "{kind}: logs have their own seeds");
    }
    Ok(())
}

#[tokio::test]
async fn extent_spans_every_location_the_first_creation_and_observation() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        let empty = store.extent(TENANT).await?;
        assert_eq!(empty.bbox, None, "{kind}");
        assert_eq!(empty.first_created, None, "{kind}");
        assert_eq!(empty.first_observed, None, "{kind}");
        let mut records = fixtures();
        records[0].location = Some(BBox {
            min_lon: 2.0,
            min_lat: 48.0,
            max_lon: 2.5,
            max_lat: 48.5,
        });
        records[3].location = Some(BBox {
            min_lon: -1.0,
            min_lat: 49.0,
            max_lon: -1.0,
            max_lat: 49.0,
        });
        records[4].created_at = fixed_time(-60);
        records[1].first_observed = Some(fixed_time(-30));
        records[2].first_observed = Some(fixed_time(-45));
        let mut transaction = store.begin().await?;
        transaction.insert_many(TENANT, &records).await?;
        let mut far = record("urn:ngsi-ld:Far:1", &[SPOT], &[]);
        far.location = Some(BBox {
            min_lon: 100.0,
            min_lat: 10.0,
            max_lon: 100.0,
            max_lat: 10.0,
        });
        far.created_at = fixed_time(-3_600);
        far.first_observed = Some(fixed_time(-3_600));
        transaction.insert("other", &far).await?;
        transaction.commit().await?;

        let extent = store.extent(TENANT).await?;
        assert_eq!(extent.bbox, Some([-1.0, 48.0, 2.5, 49.0]), "{kind}");
        assert_eq!(extent.first_created, Some(fixed_time(-60)), "{kind}");
        assert_eq!(extent.first_observed, Some(fixed_time(-45)), "{kind}");

        // An update moves it: the earliest observation is now another entity's.
        let mut transaction = store.begin().await?;
        transaction
            .update(
                TENANT,
                &EntityRecord {
                    first_observed: None,
                    ..records[2].clone()
                },
            )
            .await?;
        transaction.commit().await?;
        let extent = store.extent(TENANT).await?;
        assert_eq!(extent.first_observed, Some(fixed_time(-30)), "{kind}");
    }
    Ok(())
}

/// Entities stored before the first observation was kept are listed until the caller sets it;
/// one deleted meanwhile leaves the list with it.
#[tokio::test]
async fn first_observations_of_entities_stored_before_are_filled_in() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        seed(&store).await?;
        assert!(
            store.observations_pending(10).await?.is_empty(),
            "{kind}: entities written now are not pending"
        );
        // What migration 11 does to the entities already held.
        database
            .execute(
                "INSERT INTO entity_observations_pending (tenant, id) VALUES \
                 ('other', 'urn:ngsi-ld:ParkingSpot:1'), ('city', 'urn:ngsi-ld:ParkingSpot:2'), \
                 ('city', 'urn:ngsi-ld:Building:1'), ('city', 'urn:ngsi-ld:Building:2')",
            )
            .await;
        let mut transaction = store.begin().await?;
        transaction
            .delete_many(TENANT, &strings(&["urn:ngsi-ld:Building:2"]))
            .await?;
        transaction.commit().await?;

        assert_eq!(store.observations_pending_count().await?, 3, "{kind}");
        let body = |id: &str| Some(format!(r#"{{"id":"{id}"}}"#));
        let first = store.observations_pending(2).await?;
        assert_eq!(
            first,
            vec![
                (
                    TENANT.to_owned(),
                    "urn:ngsi-ld:Building:1".to_owned(),
                    body("urn:ngsi-ld:Building:1")
                ),
                (
                    TENANT.to_owned(),
                    "urn:ngsi-ld:ParkingSpot:2".to_owned(),
                    body("urn:ngsi-ld:ParkingSpot:2")
                ),
            ],
            "{kind}: in (tenant, id) order, the deleted one gone"
        );
        store
            .set_first_observed(
                TENANT,
                &[
                    ("urn:ngsi-ld:Building:1".to_owned(), Some(fixed_time(-7))),
                    ("urn:ngsi-ld:ParkingSpot:2".to_owned(), None),
                ],
            )
            .await?;
        assert_eq!(store.observations_pending_count().await?, 1, "{kind}");
        let rest = store.observations_pending(2).await?;
        assert_eq!(rest.len(), 1, "{kind}");
        assert_eq!(rest[0].0, "other", "{kind}");
        store
            .set_first_observed(
                "other",
                &[("urn:ngsi-ld:ParkingSpot:1".to_owned(), Some(fixed_time(3)))],
            )
            .await?;
        assert!(store.observations_pending(2).await?.is_empty(), "{kind}");
        assert_eq!(store.observations_pending_count().await?, 0, "{kind}");

        let building = store.get(TENANT, "urn:ngsi-ld:Building:1").await?;
        assert_eq!(
            building.and_then(|record| record.first_observed),
            Some(fixed_time(-7)),
            "{kind}"
        );
        assert_eq!(
            store.extent(TENANT).await?.first_observed,
            Some(fixed_time(-7)),
            "{kind}"
        );
        assert_eq!(
            store.extent("other").await?.first_observed,
            Some(fixed_time(3)),
            "{kind}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn type_shapes_pair_types_with_attributes_and_mark_bare_entities() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        assert!(store.type_shapes(TENANT).await?.is_empty(), "{kind}");
        let mut transaction = store.begin().await?;
        transaction.insert_many(TENANT, &fixtures()).await?;
        transaction
            .insert("other", &record("urn:ngsi-ld:Far:1", &[SPOT], &[]))
            .await?;
        transaction.commit().await?;

        let shapes = store.type_shapes(TENANT).await?;
        let pair = |t: &str, a: &str| (t.to_owned(), a.to_owned());
        let mut expected = vec![
            pair(BUILDING, ""),
            pair(BUILDING, LOCATION),
            pair(BUILDING, NAME),
            pair(OFFSTREET, NAME),
            pair(OFFSTREET, STATUS),
            pair(SPOT, LOCATION),
            pair(SPOT, NAME),
            pair(SPOT, STATUS),
        ];
        expected.sort();
        assert_eq!(
            shapes, expected,
            "{kind}: the other tenant's bare spot is not there"
        );
    }
    Ok(())
}

#[tokio::test]
async fn pages_of_a_type_with_several_attributes_neither_skip_nor_repeat() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        let records: Vec<EntityRecord> = (0..30)
            .map(|n| {
                record(
                    &format!("urn:ngsi-ld:ParkingSpot:{n:02}"),
                    &[SPOT],
                    &[STATUS, NAME, LOCATION],
                )
            })
            .collect();
        let mut transaction = store.begin().await?;
        transaction.insert_many(TENANT, &records).await?;
        transaction.commit().await?;
        for (types, attributes) in [
            (vec![SPOT], vec![STATUS, NAME]),
            (vec![], vec![STATUS, NAME]),
            (vec![SPOT, OFFSTREET], vec![STATUS, NAME]),
        ] {
            let mut seen = Vec::new();
            for offset in (0..40).step_by(10) {
                let page = store
                    .query(
                        TENANT,
                        &EntityQuery {
                            types: strings(&types),
                            attributes: strings(&attributes),
                            limit: 10,
                            offset,
                            count: true,
                            ..EntityQuery::default()
                        },
                    )
                    .await?;
                assert_eq!(page.total, Some(30), "{kind} {types:?} {attributes:?}");
                seen.extend(page.records.into_iter().map(|r| r.id));
            }
            let expected: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
            assert_eq!(seen, expected, "{kind} {types:?} {attributes:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn keyset_pages_start_after_the_given_id() -> TestResult {
    for (database, store) in stores().await {
        let kind = database.kind;
        let mut transaction = store.begin().await?;
        transaction.insert_many(TENANT, &fixtures()).await?;
        transaction.commit().await?;
        // Byte order: Building:1, Building:2, ParkingSpot:1, ParkingSpot:10, ParkingSpot:2, lower:1.
        let after = |types: &[&str], attributes: &[&str], after: &str| EntityQuery {
            types: strings(types),
            attributes: strings(attributes),
            after: Some(after.to_owned()),
            limit: 2,
            count: true,
            ..EntityQuery::default()
        };
        let ids = |page: &QueryPage| -> Vec<String> {
            page.records.iter().map(|r| r.id.clone()).collect()
        };
        let cases = [
            (
                after(&[], &[], "urn:ngsi-ld:Building:2"),
                vec!["urn:ngsi-ld:ParkingSpot:1", "urn:ngsi-ld:ParkingSpot:10"],
                4,
            ),
            (
                after(&[SPOT], &[], "urn:ngsi-ld:ParkingSpot:1"),
                vec!["urn:ngsi-ld:ParkingSpot:10", "urn:ngsi-ld:ParkingSpot:2"],
                2,
            ),
            (
                after(&[SPOT, OFFSTREET], &[], "urn:ngsi-ld:ParkingSpot:10"),
                vec!["urn:ngsi-ld:ParkingSpot:2", "urn:ngsi-ld:lower:1"],
                2,
            ),
            (
                after(&[], &[STATUS], "urn:ngsi-ld:ParkingSpot:1"),
                vec!["urn:ngsi-ld:ParkingSpot:2", "urn:ngsi-ld:lower:1"],
                2,
            ),
            (
                after(&[SPOT], &[STATUS, NAME], "urn:ngsi-ld:ParkingSpot:2"),
                vec![],
                0,
            ),
        ];
        for (query, expected, total) in cases {
            let page = store.query(TENANT, &query).await?;
            assert_eq!(ids(&page), expected, "{kind} {query:?}");
            assert_eq!(
                page.total,
                Some(total),
                "{kind} {query:?}: the count is of the ids after"
            );
        }
    }
    Ok(())
}
