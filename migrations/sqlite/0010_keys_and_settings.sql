-- A generation's sealed key can live in the database (as on PostgreSQL, where several servers
-- share it); NULL: the key file named by key_file holds it.
ALTER TABLE ca_generations ADD COLUMN key_pem TEXT;

-- Settings every server of the database shares: the SHA-256 of the policy they sign under.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Wrong credentials per key ('source:IP', 'token:ID') in the current window, where several
-- servers share the database (one server keeps them in memory).
CREATE TABLE failed_attempts (
    key          TEXT    PRIMARY KEY,
    window_start INTEGER NOT NULL,
    failures     INTEGER NOT NULL
);
