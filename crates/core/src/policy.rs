//! Who may authorize MCP clients for a server: its access policy applied to a user.

use crate::model::{AccessPolicy, ServerRow, UserRow};
use crate::store::{Store, StoreError};

/// Whether `user` may authorize clients for `server` under the server's access policy.
/// Allow-lists match only verified addresses: with open sign-up anyone could otherwise create
/// an account under an allow-listed domain.
pub async fn admits(
    store: &dyn Store,
    server: &ServerRow,
    user: &UserRow,
) -> Result<bool, StoreError> {
    Ok(match &server.access_policy {
        AccessPolicy::Members => store.member(&server.project_id, &user.id).await?.is_some(),
        AccessPolicy::Instance => true,
        policy @ AccessPolicy::Allowlist(_) => user.email_verified && policy.lists(&user.email),
    })
}
