//! The `/v1` OpenAPI document: paths come from the route list (`routes::v1`), schemas from the
//! proto types; served at `/v1/openapi.json`.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ezForge API",
        description = "The ezForge control plane. Authenticate with an API key (`Authorization: Bearer ezf_live_…` or `ezf_test_…`) or the dashboard's session cookie. Errors are `{\"error\": {\"code\", \"message\"}}` with a stable `code`.",
    ),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Accounts, sessions and invites"),
        (name = "projects", description = "Projects and members"),
        (name = "api-keys", description = "Scoped, revocable API keys"),
        (name = "servers", description = "MCP servers"),
        (name = "deployments", description = "Deploys and rollbacks"),
        (name = "oauth", description = "OAuth clients, grants and signing keys"),
        (name = "telemetry", description = "Request logs, metrics, usage, quotas and the audit log"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("ezf_live_… / ezf_test_…")
                    .description(Some("A project API key. The scopes listed on an operation are the ones the key needs."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "ezf_session",
                "The HTTP-only session cookie set by /v1/auth/login. State-changing requests also need the X-CSRF-Token header.",
            ))),
        );
    }
}
