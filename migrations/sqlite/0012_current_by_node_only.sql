-- Each issuance replaces its node and profile's row in current_certificates; with an index on
-- the serial too, that was two more scattered pages per commit (the old serial's entry and the
-- new one's) for every checkpoint to write back. The triggers below find the row by its
-- primary key (node, profile) and check the serial instead.
DROP TRIGGER certificates_current_on_revoke;
DROP TRIGGER certificates_current_on_delete;
DROP INDEX current_certificates_by_serial;

CREATE TRIGGER certificates_current_on_revoke AFTER UPDATE OF status ON certificates
WHEN NEW.status = 'revoked'
 AND EXISTS (SELECT 1 FROM current_certificates
              WHERE node = NEW.node AND profile = NEW.profile AND serial = NEW.serial)
BEGIN
    DELETE FROM current_certificates WHERE node = NEW.node AND profile = NEW.profile;
    INSERT INTO current_certificates (node, profile, serial, seq, not_after, ca_generation)
    SELECT node, profile, serial, seq, not_after, ca_generation FROM certificates
     WHERE node = NEW.node AND profile = NEW.profile AND status = 'valid'
     ORDER BY seq DESC LIMIT 1;
END;

CREATE TRIGGER certificates_current_on_delete AFTER DELETE ON certificates
WHEN EXISTS (SELECT 1 FROM current_certificates
              WHERE node = OLD.node AND profile = OLD.profile AND serial = OLD.serial)
BEGIN
    DELETE FROM current_certificates WHERE node = OLD.node AND profile = OLD.profile;
    INSERT INTO current_certificates (node, profile, serial, seq, not_after, ca_generation)
    SELECT node, profile, serial, seq, not_after, ca_generation FROM certificates
     WHERE node = OLD.node AND profile = OLD.profile AND status = 'valid'
     ORDER BY seq DESC LIMIT 1;
END;
