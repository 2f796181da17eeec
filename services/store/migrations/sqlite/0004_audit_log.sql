-- The audit logs (issue 4): per log, an append-only RFC 9162 Merkle tree served as C2SP
-- tlog-tiles. `log` names the log (for example the department whose accesses it records), so
-- one database holds several independent logs. Rows are only ever inserted, never updated or
-- deleted; `Store::audit_append` refuses anything else.

-- The entries (leaves) of each log, numbered 0, 1, 2, … without gaps: the log's size is the
-- highest `idx` plus one. `data` is the entry as hashed into its leaf.
CREATE TABLE audit_entries (
    log  TEXT   NOT NULL,
    idx  BIGINT NOT NULL CHECK (idx >= 0),
    data BLOB   NOT NULL,
    PRIMARY KEY (log, idx)
);

-- The hashes of complete subtrees, numbered as in tlog-tiles: level L, index N is the root
-- hash (32 bytes, SHA-256) of the subtree over the leaves [N·2^L, (N+1)·2^L). Level 0 holds the
-- leaf hashes. Tiles, proofs and tree heads are computed from these.
CREATE TABLE audit_hashes (
    log   TEXT     NOT NULL,
    level SMALLINT NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx   BIGINT   NOT NULL CHECK (idx >= 0),
    hash  BLOB     NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (log, level, idx)
) WITHOUT ROWID;

-- The signed checkpoints (C2SP tlog-checkpoint notes) of each log, one per tree size.
-- `created_at` is microseconds since the Unix epoch (UTC).
CREATE TABLE audit_checkpoints (
    log        TEXT   NOT NULL,
    size       BIGINT NOT NULL CHECK (size >= 0),
    note       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (log, size)
);
