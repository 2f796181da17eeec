-- The leaf hashes (level 0 of the tree) of entries appended from now on, stored like the
-- entries: `width` consecutive leaf hashes from index `idx` in one row, `hashes` holding each
-- (32 bytes) in index order, a row never crossing a multiple of 256 (a level-0 tile is read
-- from its own rows). One row per merge instead of one per record: the merge is the audit log's
-- largest cost in the database. `audit_hashes` keeps the other stored levels, and the leaf
-- hashes stored before this table existed; a leaf hash is in one of the two, never both. Rows
-- never overlap and are never updated or deleted.
CREATE TABLE audit_leaves (
    log    TEXT   NOT NULL,
    idx    BIGINT NOT NULL CHECK (idx >= 0),
    width  BIGINT NOT NULL CHECK (width BETWEEN 1 AND 256),
    hashes BLOB   NOT NULL CHECK (length(hashes) = 32 * width),
    PRIMARY KEY (log, idx)
);
