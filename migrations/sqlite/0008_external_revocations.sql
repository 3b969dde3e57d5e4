-- Serials this CA revoked but holds no certificate for: revocations a restore re-applied from a
-- CRL newer than its backup, of certificates issued after the backup. etcd's CRL keeps listing
-- them until keep_until (the revocation time plus the longest lifetime the policy allows).
CREATE TABLE external_revocations (
    serial     TEXT    PRIMARY KEY,
    revoked_at INTEGER NOT NULL,
    reason     TEXT,
    keep_until INTEGER NOT NULL
);
CREATE INDEX external_revocations_by_keep ON external_revocations (keep_until);
CREATE TRIGGER external_revocations_epoch AFTER INSERT ON external_revocations
BEGIN
    UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1;
END;
