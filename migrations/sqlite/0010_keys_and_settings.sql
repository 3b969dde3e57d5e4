-- A generation's sealed key can live in the database (as on PostgreSQL, where several servers
-- share it); NULL: the key file named by key_file holds it.
ALTER TABLE ca_generations ADD COLUMN key_pem TEXT;

-- Settings every server of the database shares: the SHA-256 of the policy they sign under.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
