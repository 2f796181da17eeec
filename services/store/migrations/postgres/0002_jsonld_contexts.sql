-- Hosted JSON-LD @contexts (ETSI GS CIM 009, clause 5.13). `created_at` is microseconds since
-- the Unix epoch (UTC).

CREATE TABLE jsonld_contexts (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    url        TEXT             NOT NULL,
    kind       TEXT             NOT NULL,
    body       TEXT             NOT NULL,
    created_at BIGINT           NOT NULL
);
