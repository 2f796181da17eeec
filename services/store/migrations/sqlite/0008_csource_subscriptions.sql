-- Context source registration subscriptions (ETSI GS CIM 009, clauses 5.2.12 and 5.11), per
-- tenant. `body` is the subscription's canonical JSON (names expanded) with the @context its
-- notifications are compacted with, opaque to the store. Timestamps are microseconds since the
-- Unix epoch (UTC).

CREATE TABLE csource_subscriptions (
    tenant      TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    body        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    modified_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);
