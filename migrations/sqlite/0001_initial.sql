-- etcd-ca schema. Migrations are append-only: never edit a released file, add a new one.
-- Times are Unix seconds (UTC).

-- CA generations: `next` (trusted, not signing), `active` (signing), `retired` (no longer
-- trusted). The trust bundle is every generation that is not retired.
CREATE TABLE ca_generations (
    id           INTEGER PRIMARY KEY,
    state        TEXT    NOT NULL CHECK (state IN ('next', 'active', 'retired')),
    key_type     TEXT    NOT NULL,
    cert_pem     TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL UNIQUE,
    key_file     TEXT    NOT NULL,      -- relative to the data dir
    imported     INTEGER NOT NULL DEFAULT 0,
    not_before   INTEGER NOT NULL,
    not_after    INTEGER NOT NULL,
    crl_number   INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    activated_at INTEGER,
    retired_at   INTEGER
);
CREATE UNIQUE INDEX ca_generations_one_active ON ca_generations (state) WHERE state = 'active';

-- Registered nodes: the most any certificate for the node may carry.
CREATE TABLE nodes (
    name       TEXT    PRIMARY KEY,
    ips        TEXT    NOT NULL,        -- JSON array of addresses
    dns_names  TEXT    NOT NULL,        -- JSON array of names
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Every certificate ever issued, recorded before it is handed out.
CREATE TABLE certificates (
    serial            TEXT    PRIMARY KEY,   -- lower-case hex, no separators
    ca_generation     INTEGER NOT NULL REFERENCES ca_generations (id),
    profile           TEXT    NOT NULL,
    node              TEXT    NOT NULL REFERENCES nodes (name),
    subject           TEXT    NOT NULL,
    common_name       TEXT    NOT NULL,
    sans              TEXT    NOT NULL,      -- JSON array: "DNS:name", "IP:address"
    key_type          TEXT    NOT NULL,
    public_key_sha256 TEXT    NOT NULL,
    not_before        INTEGER NOT NULL,
    not_after         INTEGER NOT NULL,
    pem               TEXT    NOT NULL,
    status            TEXT    NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),
    revoked_at        INTEGER,
    revocation_reason TEXT,
    issued_at         INTEGER NOT NULL,
    renewed_from      TEXT    REFERENCES certificates (serial)
);
CREATE INDEX certificates_by_node ON certificates (node, profile);
CREATE INDEX certificates_by_expiry ON certificates (not_after);

-- Who did what, when.
CREATE TABLE audit_events (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    node   TEXT,
    serial TEXT,
    detail TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_by_time ON audit_events (at);
