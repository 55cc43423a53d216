//! Decoding the authorization server's rows.

use crate::rows::bad;
use ezforge_core::oauth::model::*;
use sqlx::Row;
use sqlx::any::AnyRow;

pub(crate) fn signing_key(r: &AnyRow) -> Result<SigningKeyRow, sqlx::Error> {
    Ok(SigningKeyRow {
        kid: r.try_get("kid")?,
        public_jwk: r.try_get("public_jwk")?,
        private_key: r.try_get("private_key")?,
        created_at: r.try_get("created_at")?,
        signs_from: r.try_get("signs_from")?,
        retired_at: r.try_get("retired_at")?,
    })
}

fn json_list(r: &AnyRow, col: &str) -> Result<Vec<String>, sqlx::Error> {
    let text: String = r.try_get(col)?;
    serde_json::from_str(&text).map_err(|_| bad(col, &text))
}

pub(crate) fn client(r: &AnyRow) -> Result<ClientRow, sqlx::Error> {
    let kind: String = r.try_get("kind")?;
    let metadata: String = r.try_get("metadata")?;
    Ok(ClientRow {
        client_id: r.try_get("client_id")?,
        kind: match kind.as_str() {
            "dynamic" => ClientKind::Dynamic,
            "registered" => ClientKind::Registered,
            _ => return Err(bad("client kind", &kind)),
        },
        project_id: r.try_get("project_id")?,
        client_name: r.try_get("client_name")?,
        redirect_uris: json_list(r, "redirect_uris")?,
        grant_types: json_list(r, "grant_types")?,
        token_endpoint_auth_method: r.try_get("token_endpoint_auth_method")?,
        application_type: r.try_get("application_type")?,
        metadata: serde_json::from_str(&metadata).map_err(|_| bad("client metadata", "…"))?,
        metadata_hash: r.try_get("metadata_hash")?,
        secret_hash: r.try_get("secret_hash")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

pub(crate) fn grant(r: &AnyRow) -> Result<GrantRow, sqlx::Error> {
    Ok(GrantRow {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        client_id: r.try_get("client_id")?,
        server_id: r.try_get("server_id")?,
        resource: r.try_get("resource")?,
        scope: r.try_get("scope")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
        revoked_reason: r.try_get("revoked_reason")?,
    })
}

pub(crate) fn code(r: &AnyRow) -> Result<CodeRow, sqlx::Error> {
    Ok(CodeRow {
        code_hash: r.try_get("code_hash")?,
        grant_id: r.try_get("grant_id")?,
        client_id: r.try_get("client_id")?,
        redirect_uri: r.try_get("redirect_uri")?,
        code_challenge: r.try_get("code_challenge")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        used_at: r.try_get("used_at")?,
    })
}

pub(crate) fn refresh(r: &AnyRow) -> Result<RefreshRow, sqlx::Error> {
    Ok(RefreshRow {
        token_hash: r.try_get("token_hash")?,
        grant_id: r.try_get("grant_id")?,
        scope: r.try_get("scope")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        used_at: r.try_get("used_at")?,
        successor_hash: r.try_get("successor_hash")?,
        generation: r.try_get("generation")?,
    })
}

pub(crate) fn consent(r: &AnyRow) -> Result<ConsentRow, sqlx::Error> {
    Ok(ConsentRow {
        user_id: r.try_get("user_id")?,
        client_id: r.try_get("client_id")?,
        server_id: r.try_get("server_id")?,
        scope: r.try_get("scope")?,
        created_at: r.try_get("created_at")?,
    })
}
