-- Tokens: admin tokens (bearer, for the admin API) and single-use bootstrap tokens bound to a
-- node's identity and profiles. Only a SHA-256 of the secret half is stored.
CREATE TABLE tokens (
    id              TEXT    PRIMARY KEY,        -- public half, hex
    kind            TEXT    NOT NULL CHECK (kind IN ('admin', 'bootstrap')),
    secret_sha256   BLOB    NOT NULL,
    node            TEXT    REFERENCES nodes (name),
    ips             TEXT    NOT NULL DEFAULT '[]',
    dns_names       TEXT    NOT NULL DEFAULT '[]',
    profiles        TEXT    NOT NULL DEFAULT '[]',
    common_name     TEXT,
    allow_privileged_common_name INTEGER NOT NULL DEFAULT 0,
    created_by      TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER,                    -- NULL: does not expire (admin tokens)
    used_at         INTEGER,
    request_sha256  TEXT,                       -- what the token was used with, for a retry
    issued_serials  TEXT                        -- JSON object profile -> serial
);

-- The CRL is rebuilt only when this changes.
CREATE INDEX certificates_revoked ON certificates (revoked_at) WHERE status = 'revoked';
