//! The authorization server's stored records.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    pub kid: String,
    /// The public JWK, as JSON.
    pub public_jwk: String,
    /// PKCS#8, sealed with the master key.
    pub private_key: String,
    pub created_at: i64,
    /// Published from `created_at`; used for signing from here on.
    pub signs_from: i64,
    /// No longer signs from here on; stays published until its tokens have expired.
    pub retired_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// Registered through `/register` (RFC 7591).
    Dynamic,
    /// Created by a project owner through `/v1`.
    Registered,
    /// Described by a Client ID Metadata Document; never stored.
    Document,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Dynamic => "dynamic",
            ClientKind::Registered => "registered",
            ClientKind::Document => "document",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientRow {
    pub client_id: String,
    pub kind: ClientKind,
    pub project_id: Option<String>,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    /// `none`, `client_secret_basic` or `client_secret_post`.
    pub token_endpoint_auth_method: String,
    /// `web` or `native`.
    pub application_type: String,
    /// The registered metadata as echoed to the client (RFC 7591 §3.2.1).
    pub metadata: serde_json::Value,
    /// SHA-256 of the canonical request metadata, for idempotent registration.
    pub metadata_hash: String,
    pub secret_hash: Option<String>,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
}

impl ClientRow {
    pub fn is_public(&self) -> bool {
        self.token_endpoint_auth_method == "none"
    }
    pub fn display_name(&self) -> &str {
        self.client_name.as_deref().unwrap_or(&self.client_id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    pub id: String,
    pub user_id: String,
    pub client_id: String,
    pub server_id: String,
    /// The canonical resource URI, the tokens' audience.
    pub resource: String,
    /// Space-separated granted scopes.
    pub scope: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRow {
    pub code_hash: String,
    pub grant_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// A refresh token's row. Two kinds share the table:
/// - a family's row (`generation` set): keyed by the family's key, it stands for the family's
///   current token, issued at `created_at`, and is moved to the next generation in place at
///   each rotation; `used_at` and `successor_hash` stay empty (see `oauth::family`);
/// - a row per token, as issued before families (`generation` empty): keyed by the token's
///   SHA-256, spent once (`used_at`) for the successor it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRow {
    pub token_hash: String,
    pub grant_id: String,
    pub scope: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub successor_hash: Option<String>,
    pub generation: Option<i64>,
}

impl RefreshRow {
    /// Whether the token presented at `generation` (`None`: a token of the old kind) is spent,
    /// or of the other kind than this row: either way this row cannot rotate for it.
    pub fn spent_for(&self, generation: Option<i64>) -> bool {
        self.used_at.is_some() || self.generation != generation
    }

    /// Whether this is a family's row.
    pub fn is_family(&self) -> bool {
        self.generation.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRow {
    pub user_id: String,
    pub client_id: String,
    pub server_id: String,
    pub scope: String,
    pub created_at: i64,
}

/// What happened when a code was presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeUse {
    /// First use: the code is now spent.
    First(CodeRow),
    /// Already spent: a replay.
    Replayed(CodeRow),
    /// Not spent, but presented by another client or with the wrong PKCE verifier: refused,
    /// and left usable for its rightful owner.
    Mismatch(CodeRow),
    Unknown,
}

/// What happened when a refresh token was presented for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// First use: spent now, successor stored.
    Rotated(RefreshRow),
    /// Spent before (the row as stored, with when and what replaced it).
    AlreadyUsed(RefreshRow),
    Unknown,
}

/// One presentation of an authorization code at the token endpoint: the code spends only for
/// its own client with its own PKCE challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeAttempt {
    pub code_hash: String,
    pub client_id: String,
    pub code_challenge: String,
    /// The refresh token this exchange would issue, if its client may get one. Made before
    /// the code is read so that a store can write it in the statement that spends the code
    /// (see `Store::exchange_codes`).
    pub refresh: Option<RefreshOffer>,
}

/// A refresh token an exchange may issue: its hash and lifetime. The row it would become is
/// `(token_hash, grant's id, grant's scope, now, now + ttl_secs)`, unused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshOffer {
    pub token_hash: String,
    pub ttl_secs: i64,
    /// The generation the row starts at (0: a new family; see `RefreshRow`).
    pub generation: Option<i64>,
}

/// A refresh token as presented at the token endpoint: its hash, and what the presenting
/// request accepts (see `RotationTerms`), if it states that up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshPresented {
    /// The row's key: a family's key, or the SHA-256 of a token of the old kind.
    pub token_hash: String,
    /// The presented token's generation; `None` for a token of the old kind. A row of the
    /// other kind is never rotated for it (`RefreshRow::spent_for`).
    pub generation: Option<i64>,
    pub terms: Option<RotationTerms>,
}

/// A refresh's checks, stated before the token is read, so that a store can check and rotate
/// in one statement (PostgreSQL does, see `Store::renew_refreshes`). A promise by the caller:
/// a stored token that is unspent and unexpired, whose grant is live and belongs to
/// `client_id`, is for `resource` (when given) and holds every scope of `scope` (when given),
/// passes the caller's checks, which then rotate it to
/// `(successor_hash, its grant, its scope, now, now + ttl_secs)`. A store that rotates on the
/// terms still runs the checks, on the token as it read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationTerms {
    /// The successor's key: for a family, the family's own (its row stays under it).
    pub successor_hash: String,
    pub client_id: String,
    pub resource: Option<String>,
    /// Space-separated, normalized (`scope::join`).
    pub scope: Option<String>,
    pub ttl_secs: i64,
}

/// A refresh token presented for rotation, and the successor that replaces it. For a family
/// (`successor.generation` set), the successor is the family's row at the next generation,
/// under the same key, and the rotation moves the row there from the generation before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationAttempt {
    pub token_hash: String,
    /// The presented token's generation (`None`: the old kind, spent by inserting the
    /// successor's row and marking this one used).
    pub generation: Option<i64>,
    pub successor: RefreshRow,
}
