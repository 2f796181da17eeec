//! The values the store persists and the queries it answers.
//!
//! The store knows nothing about NGSI-LD semantics: the model crate derives these values from an
//! entity, and `body` is an opaque canonical JSON string that comes back byte for byte.

use chrono::{DateTime, Utc};

/// One stored entity: its index columns and its canonical body.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRecord {
    /// The entity id, an absolute IRI such as `urn:ngsi-ld:ParkingSpot:1`.
    pub id: String,
    /// Expanded type IRIs; at least one for an NGSI-LD entity (the store does not check it).
    pub types: Vec<String>,
    /// Scopes (ETSI GS CIM 009, clause 4.18); may be empty.
    pub scopes: Vec<String>,
    /// Expanded names of the attributes present on the entity.
    pub attributes: Vec<String>,
    /// Creation time; stored with microsecond precision (finer digits are truncated).
    pub created_at: DateTime<Utc>,
    /// Last modification time; stored with microsecond precision.
    pub modified_at: DateTime<Utc>,
    /// Bounding box of the entity's `location` GeoProperty, for geo-queries.
    pub location: Option<BBox>,
    /// The earliest `observedAt` of the entity's attributes (sub-attributes included), if any;
    /// stored with microsecond precision.
    pub first_observed: Option<DateTime<Utc>>,
    /// Canonical JSON of the whole entity, opaque to the store.
    pub body: String,
}

/// A bounding box in WGS 84 degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    /// Western edge.
    pub min_lon: f64,
    /// Southern edge.
    pub min_lat: f64,
    /// Eastern edge.
    pub max_lon: f64,
    /// Northern edge.
    pub max_lat: f64,
}

/// A filter over one tenant's entities. All filters are AND-ed; an empty vector means "no filter".
///
/// `Default` gives `limit: 0`, which returns no records but still computes `total` when `count`
/// is set (NGSI-LD `limit=0&count=true`, ETSI GS CIM 009, clause 5.5.9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityQuery {
    /// The entity id is one of these.
    pub ids: Vec<String>,
    /// The entity has at least one of these types.
    pub types: Vec<String>,
    /// A regular expression (syntax of the `regex` crate, close to POSIX EREs) that must match
    /// somewhere in the id; anchor it with `^…$` for a full match.
    pub id_pattern: Option<String>,
    /// The entity has at least one of these attributes.
    pub attributes: Vec<String>,
    /// The maximum number of records to return.
    pub limit: u32,
    /// The number of matching records to skip, in id order.
    pub offset: u32,
    /// Also compute the total number of matches.
    pub count: bool,
    /// Only ids after this one in byte order (keyset paging: a page starts after the last id of
    /// the one before, whatever the offset of its first match).
    pub after: Option<String>,
}

/// One page of a query: records in ascending id order, and the total when it was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// The matching records, ordered by id (byte order).
    pub records: Vec<EntityRecord>,
    /// The number of matches ignoring limit and offset, if `count` was set.
    pub total: Option<u64>,
}

/// A hosted JSON-LD `@context` (ETSI GS CIM 009, clause 5.13).
#[derive(Debug, Clone, PartialEq)]
pub struct ContextRecord {
    /// The server-assigned identifier.
    pub id: String,
    /// The URL at which the context is served.
    pub url: String,
    /// `Hosted`, `Cached` or `ImplicitlyCreated` (opaque to the store).
    pub kind: String,
    /// The JSON-LD document.
    pub body: String,
    /// When the context was stored; microsecond precision.
    pub created_at: DateTime<Utc>,
}

/// One stored context source registration (ETSI GS CIM 009, clause 5.2.9).
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationRecord {
    /// The registration id, an absolute IRI.
    pub id: String,
    /// Canonical JSON of the registration, opaque to the store.
    pub body: String,
    /// Creation time; microsecond precision.
    pub created_at: DateTime<Utc>,
    /// Last modification time; microsecond precision.
    pub modified_at: DateTime<Utc>,
}

/// Where and since when a tenant holds entities ([`crate::Store::extent`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extent {
    /// The bounding box of every entity's `location` (min longitude, min latitude, max
    /// longitude, max latitude); `None` when no entity has one.
    pub bbox: Option<[f64; 4]>,
    /// The earliest creation of an entity held; `None` when it holds none.
    pub first_created: Option<DateTime<Utc>>,
    /// The earliest `observedAt` of an entity held ([`EntityRecord::first_observed`]); `None`
    /// when no entity has one.
    pub first_observed: Option<DateTime<Utc>>,
}
