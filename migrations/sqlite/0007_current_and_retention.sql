-- Reads that stay flat as history grows (see issue 18).
--
-- current_certificates: each node and profile's current certificate (the newest recorded one
-- that is not revoked), kept by triggers in the same transaction as the write that changes it,
-- so /metrics, rotation status and "superseded" read one small row per node and profile (with
-- what they need of the certificate) instead of the whole history.
CREATE TABLE current_certificates (
    node          TEXT    NOT NULL,
    profile       TEXT    NOT NULL,
    serial        TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    not_after     INTEGER NOT NULL,
    ca_generation INTEGER NOT NULL,
    PRIMARY KEY (node, profile)
) WITHOUT ROWID;  -- stored in (node, profile) order: /metrics and rotation status read it in order
CREATE UNIQUE INDEX current_certificates_by_serial ON current_certificates (serial);

INSERT INTO current_certificates (node, profile, serial, seq, not_after, ca_generation)
SELECT c.node, c.profile, c.serial, c.seq, c.not_after, c.ca_generation FROM certificates c
 WHERE c.status = 'valid'
   AND c.seq = (SELECT MAX(d.seq) FROM certificates d
                 WHERE d.node = c.node AND d.profile = c.profile AND d.status = 'valid');

-- A new certificate always has the highest seq: it becomes its node and profile's current one.
CREATE TRIGGER certificates_current_on_insert AFTER INSERT ON certificates
WHEN NEW.status = 'valid'
BEGIN
    INSERT OR REPLACE INTO current_certificates
        (node, profile, serial, seq, not_after, ca_generation)
    VALUES (NEW.node, NEW.profile, NEW.serial, NEW.seq, NEW.not_after, NEW.ca_generation);
END;

-- Revoking (or removing) the current certificate makes the newest remaining valid one current.
CREATE TRIGGER certificates_current_on_revoke AFTER UPDATE OF status ON certificates
WHEN NEW.status = 'revoked'
 AND EXISTS (SELECT 1 FROM current_certificates WHERE serial = NEW.serial)
BEGIN
    DELETE FROM current_certificates WHERE serial = NEW.serial;
    INSERT INTO current_certificates (node, profile, serial, seq, not_after, ca_generation)
    SELECT node, profile, serial, seq, not_after, ca_generation FROM certificates
     WHERE node = NEW.node AND profile = NEW.profile AND status = 'valid'
     ORDER BY seq DESC LIMIT 1;
END;

CREATE TRIGGER certificates_current_on_delete AFTER DELETE ON certificates
WHEN EXISTS (SELECT 1 FROM current_certificates WHERE serial = OLD.serial)
BEGIN
    DELETE FROM current_certificates WHERE serial = OLD.serial;
    INSERT INTO current_certificates (node, profile, serial, seq, not_after, ca_generation)
    SELECT node, profile, serial, seq, not_after, ca_generation FROM certificates
     WHERE node = OLD.node AND profile = OLD.profile AND status = 'valid'
     ORDER BY seq DESC LIMIT 1;
END;

-- Listing in expiry order, whole or by state, one page at a time: each filter seeks an index.
DROP INDEX certificates_by_expiry;
CREATE INDEX certificates_by_expiry ON certificates (not_after, serial);
CREATE INDEX certificates_by_status_expiry ON certificates (status, not_after, serial);
CREATE INDEX certificates_by_profile_expiry ON certificates (profile, not_after, serial);
-- The node's own listing (node, then expiry order); replaces the (node, profile) and
-- (node, profile, seq) indexes (each node-keyed index is a random write per issuance; the
-- triggers above find a node's newest valid certificate among its few rows through this one).
DROP INDEX certificates_by_node;
DROP INDEX certificates_by_node_profile_seq;
CREATE INDEX certificates_by_node_expiry ON certificates (node, not_after, serial);
-- Retention clears the link from a renewal to the certificate it removes.
CREATE INDEX certificates_by_renewed_from ON certificates (renewed_from)
 WHERE renewed_from IS NOT NULL;
-- Retention of used tokens and of old audit events.
CREATE INDEX tokens_by_use ON tokens (used_at) WHERE used_at IS NOT NULL;

-- A number that grows with every revocation: whether the CRL must be rebuilt is one row's read.
CREATE TABLE revocation_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);
INSERT INTO revocation_epoch (id, epoch)
SELECT 1, COUNT(*) FROM certificates WHERE status = 'revoked';
CREATE TRIGGER certificates_revocation_epoch AFTER UPDATE OF status ON certificates
WHEN NEW.status = 'revoked'
BEGIN
    UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1;
END;
