-- The request log, its roll-ups, quotas and the audit log.

-- One row per gateway request; written in batches off the request path, deleted after the
-- retention period. No foreign keys: inserts stay cheap and records outlive deleted servers
-- until retention removes them.
CREATE TABLE request_log (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    server_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    deployment_id TEXT,
    -- Unix milliseconds when the answer was complete.
    at BIGINT NOT NULL,
    http_method TEXT NOT NULL,
    method TEXT,
    tool TEXT,
    decision TEXT NOT NULL,
    reason TEXT,
    status BIGINT NOT NULL,
    latency_us BIGINT NOT NULL,
    subject TEXT,
    client_id TEXT,
    -- The access token's jti or a fingerprint; never the token.
    token_id TEXT,
    bytes_in BIGINT NOT NULL,
    bytes_out BIGINT NOT NULL
);
CREATE INDEX request_log_server_at ON request_log(server_id, at);
CREATE INDEX request_log_at ON request_log(at);

-- Per-minute counts per server and tool ('' for requests that call no tool), added to by
-- every batch: count = count + delta.
CREATE TABLE request_stats (
    server_id TEXT NOT NULL,
    minute BIGINT NOT NULL,
    tool TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    denials BIGINT NOT NULL,
    PRIMARY KEY (server_id, minute, tool)
);

-- Per-minute latency histograms: bucket = floor(4 * log2(microseconds)).
CREATE TABLE request_latency (
    server_id TEXT NOT NULL,
    minute BIGINT NOT NULL,
    tool TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (server_id, minute, tool, bucket)
);

-- Forwarded requests per project, environment and UTC day (YYYY-MM-DD). Kept for billing:
-- retention does not apply.
CREATE TABLE usage_daily (
    project_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    day TEXT NOT NULL,
    requests BIGINT NOT NULL,
    tool_calls BIGINT NOT NULL,
    PRIMARY KEY (project_id, environment, day)
);

-- Who made forwarded requests on a day (kind 'client' or 'user'), for distinct counts.
CREATE TABLE usage_actors (
    project_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    day TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    PRIMARY KEY (project_id, environment, day, kind, actor)
);

CREATE TABLE project_quotas (
    project_id TEXT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    monthly_requests BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    -- Unix milliseconds.
    at BIGINT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    -- NULL for project-wide changes.
    environment TEXT,
    -- JSON: what changed, never secrets.
    details TEXT NOT NULL
);
CREATE INDEX audit_log_project_at ON audit_log(project_id, at);
