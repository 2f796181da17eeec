-- Context source registrations (ETSI GS CIM 009, clauses 5.2.9 and 5.9): what another NGSI-LD
-- system holds, per tenant. `body` is the registration's canonical JSON (names expanded),
-- opaque to the store. Timestamps are microseconds since the Unix epoch (UTC).

CREATE TABLE csource_registrations (
    tenant      TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    body        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    modified_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);
