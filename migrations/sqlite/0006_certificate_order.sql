-- The order certificates were recorded in: "a newer certificate of the same node and profile"
-- (superseded) and "the node's current certificate" read it. Kept as a column so no query
-- depends on SQLite's rowid. Each insert takes the next number.
ALTER TABLE certificates ADD COLUMN seq INTEGER;
UPDATE certificates SET seq = rowid;
CREATE UNIQUE INDEX certificates_by_seq ON certificates (seq);
CREATE INDEX certificates_by_node_profile_seq ON certificates (node, profile, seq);
