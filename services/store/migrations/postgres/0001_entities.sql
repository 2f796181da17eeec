-- Entities and their index rows (ETSI GS CIM 009, clause 4.5: an entity has an id, one or more
-- types, optional scopes and a set of attributes).
--
-- Timestamps are microseconds since the Unix epoch (UTC), so ordering and equality are the same
-- on SQLite and PostgreSQL. `types`, `scopes` and `attributes` are JSON arrays of strings: a
-- denormalised copy of the index tables below, so that reading an entity needs one row.
--
-- Every string key uses COLLATE "C" (byte order), which is what SQLite's BINARY collation does:
-- pages ordered by id are the same on both backends, whatever the server's locale.

CREATE TABLE entities (
    tenant      TEXT COLLATE "C" NOT NULL,
    id          TEXT COLLATE "C" NOT NULL,
    types       TEXT             NOT NULL,
    scopes      TEXT             NOT NULL,
    attributes  TEXT             NOT NULL,
    created_at  BIGINT           NOT NULL,
    modified_at BIGINT           NOT NULL,
    -- Bounding box of the `location` GeoProperty: all four set, or all four NULL.
    min_lon     DOUBLE PRECISION,
    min_lat     DOUBLE PRECISION,
    max_lon     DOUBLE PRECISION,
    max_lat     DOUBLE PRECISION,
    body        TEXT             NOT NULL,
    PRIMARY KEY (tenant, id),
    CHECK ((min_lon IS NULL) = (min_lat IS NULL)
       AND (min_lon IS NULL) = (max_lon IS NULL)
       AND (min_lon IS NULL) = (max_lat IS NULL))
);

-- The index tables are keyed for "all entities of this tenant with type T, in id order"; the
-- second index serves replacing or deleting the rows of one entity (and the cascade).

CREATE TABLE entity_types (
    tenant    TEXT COLLATE "C" NOT NULL,
    type      TEXT COLLATE "C" NOT NULL,
    entity_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, type, entity_id),
    FOREIGN KEY (tenant, entity_id) REFERENCES entities (tenant, id) ON DELETE CASCADE
);
CREATE INDEX entity_types_by_entity ON entity_types (tenant, entity_id);

CREATE TABLE entity_attributes (
    tenant    TEXT COLLATE "C" NOT NULL,
    attribute TEXT COLLATE "C" NOT NULL,
    entity_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, attribute, entity_id),
    FOREIGN KEY (tenant, entity_id) REFERENCES entities (tenant, id) ON DELETE CASCADE
);
CREATE INDEX entity_attributes_by_entity ON entity_attributes (tenant, entity_id);

CREATE TABLE entity_scopes (
    tenant    TEXT COLLATE "C" NOT NULL,
    scope     TEXT COLLATE "C" NOT NULL,
    entity_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, scope, entity_id),
    FOREIGN KEY (tenant, entity_id) REFERENCES entities (tenant, id) ON DELETE CASCADE
);
CREATE INDEX entity_scopes_by_entity ON entity_scopes (tenant, entity_id);
