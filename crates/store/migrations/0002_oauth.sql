-- The OAuth 2.1 authorization server for MCP clients.

-- Who may authorize a client for a server: 'members' (of its project), 'instance' (any user),
-- or 'allowlist' (the comma-separated emails and @domains in access_allowlist).
ALTER TABLE servers ADD COLUMN access_policy TEXT NOT NULL DEFAULT 'members';
ALTER TABLE servers ADD COLUMN access_allowlist TEXT NOT NULL DEFAULT '';

-- ES256 keys. private_key is PKCS#8 sealed with the master key. A key is published from
-- created_at, signs from signs_from, stops signing at retired_at, and leaves the JWKS once every
-- token it signed has expired.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    public_jwk TEXT NOT NULL,
    private_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    signs_from BIGINT NOT NULL,
    retired_at BIGINT
);

-- Registered clients: 'dynamic' (RFC 7591) or 'registered' (by a project owner).
CREATE TABLE oauth_clients (
    client_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    project_id TEXT REFERENCES projects(id) ON DELETE CASCADE,
    client_name TEXT,
    redirect_uris TEXT NOT NULL,
    grant_types TEXT NOT NULL,
    token_endpoint_auth_method TEXT NOT NULL,
    application_type TEXT NOT NULL,
    metadata TEXT NOT NULL,
    metadata_hash TEXT NOT NULL,
    secret_hash TEXT,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    -- Dynamic registrations that are never used expire.
    expires_at BIGINT
);
CREATE INDEX oauth_clients_metadata ON oauth_clients(metadata_hash);
CREATE INDEX oauth_clients_project ON oauth_clients(project_id);

-- One authorization: a user let a client act on a server with some scopes. Its codes and its
-- refresh token family hang off it; revoking it ends them all.
CREATE TABLE oauth_grants (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    server_id TEXT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    resource TEXT NOT NULL,
    scope TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT,
    revoked_reason TEXT
);
CREATE INDEX oauth_grants_server ON oauth_grants(server_id);
CREATE INDEX oauth_grants_user ON oauth_grants(user_id);

CREATE TABLE oauth_codes (
    code_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL REFERENCES oauth_grants(id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE TABLE oauth_refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL REFERENCES oauth_grants(id) ON DELETE CASCADE,
    scope TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    successor_hash TEXT
);
CREATE INDEX oauth_refresh_grant ON oauth_refresh_tokens(grant_id);

-- Remembered consent per user, client and server: the scopes approved.
CREATE TABLE oauth_consents (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    server_id TEXT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    scope TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id, server_id)
);
