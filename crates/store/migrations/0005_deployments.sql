-- Deployments: immutable revisions of where a server's traffic goes. The server points at its
-- active one; switching is one UPDATE, so a request sees either the old or the new target.
CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    server_id TEXT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    -- 1, 2, 3… per server: the order of deploys, which clocks cannot give within a second.
    seq BIGINT NOT NULL,
    upstream_url TEXT NOT NULL,
    -- Headers sent to the upstream (its own credentials), sealed with the master key; NULL if none.
    credentials TEXT,
    timeout_ms BIGINT NOT NULL,
    -- What the health check found, for the history.
    health TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX deployments_server_seq ON deployments(server_id, seq);

ALTER TABLE servers ADD COLUMN active_deployment_id TEXT;
