-- Witnessing (issue 4). A service witnesses other services' audit logs: for each log it watches
-- (by origin), the latest checkpoint it cosigned, whose tree every later one must extend. The
-- note (size, root and the log's signature) is kept whole, as evidence; the row of an origin is
-- replaced as its log grows.
CREATE TABLE audit_witnessed (
    origin TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    size   BIGINT NOT NULL CHECK (size >= 0),
    note   TEXT   NOT NULL
);

-- The cosignatures (C2SP tlog-cosignature lines) that witnesses returned for a log's checkpoints,
-- one per checkpoint and witness; served with the checkpoint. Inserted once, never changed.
CREATE TABLE audit_cosignatures (
    log     TEXT COLLATE "C" NOT NULL,
    size    BIGINT NOT NULL CHECK (size >= 0),
    witness TEXT COLLATE "C" NOT NULL,
    line    TEXT   NOT NULL,
    PRIMARY KEY (log, size, witness)
);
