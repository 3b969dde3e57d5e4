-- What an agent tells about itself beyond its files: how its renewals go and which certificate
-- its member really serves on each port (JSON, as the API received it).
ALTER TABLE node_reports ADD COLUMN details TEXT NOT NULL DEFAULT '{}';
