-- Entries appended together are stored in few rows: `width` entries from index `idx`, a row
-- never crossing a multiple of 256 (a tlog-tiles entry bundle is read from its own rows). A
-- row of one entry holds it as it is in `data`; a row of several holds each as its length
-- (4 bytes, big-endian) and its bytes, in index order. Rows written before all have width 1.
-- The log's size is the last row's `idx + width`; rows never overlap, leave no gaps, and are
-- never updated or deleted.
ALTER TABLE audit_entries ADD COLUMN width BIGINT NOT NULL DEFAULT 1 CHECK (width >= 1);
