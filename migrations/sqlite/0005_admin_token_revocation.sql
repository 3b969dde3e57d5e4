-- Admin tokens can be revoked; a revoked one is refused at once, on every server.
ALTER TABLE tokens ADD COLUMN revoked_at INTEGER;
