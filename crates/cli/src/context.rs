//! Which server the CLI talks to and as whom.

use crate::cli::Global;
use crate::credentials::{self, SavedSession};
use crate::error::{CliError, CliResult};
use ezforge_client::{Auth, Client};

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";

pub struct Ctx {
    pub global: Global,
}

impl Ctx {
    /// `--api-url` / `EZFORGE_API_URL`, else the server of the saved session, else the default.
    pub fn api_url(&self, saved: Option<&SavedSession>) -> String {
        self.global
            .api_url
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| saved.map(|s| s.api_url.clone()))
            .unwrap_or_else(|| DEFAULT_API_URL.to_string())
    }

    pub fn anonymous(&self) -> CliResult<Client> {
        let saved = credentials::load().ok().flatten();
        Ok(Client::new(&self.api_url(saved.as_ref())))
    }

    /// A client authenticated with `EZFORGE_API_KEY` if set, else with the saved session.
    pub fn client(&self) -> CliResult<Client> {
        if let Some(key) = api_key_from_env() {
            return Ok(Client::new(&self.api_url(None)).with_auth(Auth::ApiKey(key)));
        }
        let saved = credentials::load()?.ok_or_else(|| {
            CliError::Auth(
                "You are not logged in. Run `ezforge auth login`, or set EZFORGE_API_KEY.".into(),
            )
        })?;
        check_not_expired(&saved)?;
        Ok(
            Client::new(&self.api_url(Some(&saved))).with_auth(Auth::Session {
                token: saved.token.clone(),
                csrf: saved.csrf_token.clone(),
            }),
        )
    }
}

pub fn api_key_from_env() -> Option<String> {
    std::env::var("EZFORGE_API_KEY")
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
}

pub fn check_not_expired(saved: &SavedSession) -> CliResult {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if saved.expires_at <= now {
        let at = ezforge_core::clock::to_datetime(saved.expires_at);
        return Err(CliError::Auth(format!(
            "Your session for {} on {} expired at {}. Run `ezforge auth login` to sign in again.",
            saved.email,
            saved.api_url,
            crate::output::time(at)
        )));
    }
    Ok(())
}
