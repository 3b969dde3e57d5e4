-- The CRL each scope last published ('etcd', or 'generation:N' for one generation's own), so
-- that a restarted server (and, with a shared database, every server) serves the same bytes
-- until a revocation or half the CRL's lifetime calls for a new one. A row is only ever
-- replaced by a CRL with a higher number.
CREATE TABLE published_crls (
    scope       TEXT    PRIMARY KEY,
    generation  INTEGER NOT NULL,   -- the generation that signed it
    number      INTEGER NOT NULL,
    epoch       INTEGER NOT NULL,   -- the revocation epoch it reflects
    this_update INTEGER NOT NULL,
    der         BLOB    NOT NULL
);
