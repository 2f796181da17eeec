-- The earliest `observedAt` of each entity's attributes (sub-attributes included), in
-- microseconds since the Unix epoch; NULL when none has one. A department's connector registers
-- the earliest over all its entities as the start of its `observationInterval`.
--
-- The store does not read entity bodies, so it cannot fill the column for the entities already
-- held: they are listed in `entity_observations_pending` until the connector has read their
-- bodies and set it (`Store::set_first_observed`), which it does before it serves requests.
ALTER TABLE entities ADD COLUMN first_observed_at BIGINT;

CREATE TABLE entity_observations_pending (
    tenant TEXT NOT NULL,
    id     TEXT NOT NULL,
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, id) REFERENCES entities (tenant, id) ON DELETE CASCADE
) WITHOUT ROWID;

INSERT INTO entity_observations_pending (tenant, id) SELECT tenant, id FROM entities;
