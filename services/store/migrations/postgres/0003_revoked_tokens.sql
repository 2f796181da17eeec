-- Revoked capability tokens: the revocation id (hex) of each revoked biscuit block. A token is
-- refused when any of its blocks' ids is here. `revoked_at` is microseconds since the Unix epoch.

CREATE TABLE revoked_tokens (
    revocation_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    revoked_at    BIGINT           NOT NULL,
    reason        TEXT             NOT NULL
);
