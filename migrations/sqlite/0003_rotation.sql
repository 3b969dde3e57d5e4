-- CA rotation: what each node's agent reports it has installed and runs with, and the one
-- restart lease that lets a single member restart at a time.

CREATE TABLE node_reports (
    node             TEXT    PRIMARY KEY,
    installed_bundle TEXT    NOT NULL DEFAULT '[]',  -- JSON: fingerprints in the node's ca.crt
    running_bundle   TEXT    NOT NULL DEFAULT '[]',  -- JSON: fingerprints etcd was restarted with
    certificates     TEXT    NOT NULL DEFAULT '{}',  -- JSON: profile -> serial installed
    reported_at      INTEGER NOT NULL
);

CREATE TABLE restart_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    node       TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
