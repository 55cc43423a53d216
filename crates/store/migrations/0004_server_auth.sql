-- How a server's MCP clients authenticate, and which tools they may call.
-- auth_mode: 'ezforge_managed' (ezForge is the authorization server) or 'byoa' (the customer's
-- issuer, JWKS URI and endpoints, as JSON in byoa).
ALTER TABLE servers ADD COLUMN auth_mode TEXT NOT NULL DEFAULT 'ezforge_managed';
ALTER TABLE servers ADD COLUMN byoa TEXT;
-- {"allow": [...], "deny": [...], "execute": [...]} tool names; empty allow = every tool.
ALTER TABLE servers ADD COLUMN tool_policy TEXT NOT NULL DEFAULT '{}';
