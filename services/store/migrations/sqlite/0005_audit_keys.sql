-- The signing seeds of the audit logs (issue 4) whose service was given no key file: 32 random
-- bytes, generated at the log's first start and kept so that restarts sign with the same key.
-- A row is inserted once and never changed.
CREATE TABLE audit_keys (
    log  TEXT NOT NULL PRIMARY KEY,
    seed BLOB NOT NULL CHECK (length(seed) = 32)
);
