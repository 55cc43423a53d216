-- The request log, its roll-ups, quotas and the audit log.

-- Gateway requests, stored as chunks: one row per server per written batch, holding that
-- batch's records as a JSON array (oldest first). One INSERT per chunk instead of one per
-- request keeps the log's cost off the gateway's throughput; reads decode the chunks that
-- cover the time asked for. No foreign keys: chunks outlive deleted servers until retention
-- removes them.
CREATE TABLE request_log (
    id TEXT PRIMARY KEY,
    server_id TEXT NOT NULL,
    -- Unix milliseconds of the oldest and newest record in the chunk.
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    count BIGINT NOT NULL,
    -- JSON array of records; never a token (token_id is the jti or a fingerprint).
    records TEXT NOT NULL
);
CREATE INDEX request_log_server_last_at ON request_log(server_id, last_at);
CREATE INDEX request_log_last_at ON request_log(last_at);

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
