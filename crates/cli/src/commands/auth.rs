//! `ezforge auth login|signup|status|logout`.

use crate::cli::{AuthCommand, Credentials};
use crate::context::{Ctx, api_key_from_env, check_not_expired};
use crate::credentials::{self, SavedSession};
use crate::error::{CliError, CliResult};
use crate::output;
use ezforge_client::{Auth, Client, Session};
use ezforge_proto::SignupRequest;
use serde::Serialize;
use std::io::{BufRead, IsTerminal, Write};

pub async fn run(ctx: &Ctx, cmd: AuthCommand) -> CliResult {
    match cmd {
        AuthCommand::Login(c) => {
            let client = ctx.anonymous()?;
            let (email, password) = ask(&c)?;
            let session = client.login(&email, &password).await?;
            keep(ctx, &client, session)
        }
        AuthCommand::Signup {
            credentials,
            invite_code,
        } => {
            let client = ctx.anonymous()?;
            let (email, password) = ask(&credentials)?;
            let session = client
                .signup(&SignupRequest {
                    email,
                    password,
                    invite_code,
                })
                .await?;
            keep(ctx, &client, session)
        }
        AuthCommand::Status => status(ctx).await,
        AuthCommand::Logout { everywhere } => logout(ctx, everywhere).await,
    }
}

/// Email from the flag or a prompt; password from a hidden prompt, or from standard input when
/// that is not a terminal.
fn ask(c: &Credentials) -> CliResult<(String, String)> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let email = match &c.email {
        Some(e) => e.clone(),
        None if interactive => {
            eprint!("Email: ");
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            stdin
                .lock()
                .read_line(&mut line)
                .map_err(|e| CliError::Failure(e.to_string()))?;
            line.trim().to_string()
        }
        None => {
            return Err(CliError::Usage(
                "pass --email when the password comes on standard input".into(),
            ));
        }
    };
    let password = if interactive {
        rpassword::prompt_password("Password: ")
            .map_err(|e| CliError::Failure(format!("cannot read the password: {e}")))?
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map_err(|e| {
            CliError::Failure(format!("cannot read the password from standard input: {e}"))
        })?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if email.is_empty() || password.is_empty() {
        return Err(CliError::Usage(
            "both an email and a password are needed".into(),
        ));
    }
    Ok((email, password))
}

#[derive(Serialize)]
struct StatusOut {
    api_url: String,
    /// "session" or "api_key".
    method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    expires_at: Option<time::OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_file: Option<String>,
}

fn keep(ctx: &Ctx, client: &Client, session: Session) -> CliResult {
    let saved = SavedSession {
        api_url: client.base().to_string(),
        email: session.info.user.email.clone(),
        user_id: session.info.user.id.clone(),
        token: session.token,
        csrf_token: session.info.csrf_token.clone(),
        expires_at: session.info.expires_at.unix_timestamp(),
    };
    let path = credentials::save(&saved)?;
    if ctx.global.json {
        output::json(&StatusOut {
            api_url: saved.api_url,
            method: "session",
            email: Some(saved.email),
            user_id: Some(saved.user_id),
            expires_at: Some(session.info.expires_at),
            key_prefix: None,
            project: None,
            session_file: Some(path.display().to_string()),
        });
    } else {
        println!(
            "Logged in to {} as {}{} (session expires {}).",
            saved.api_url,
            saved.email,
            if session.info.user.is_admin {
                ", the instance admin"
            } else {
                ""
            },
            output::time(session.info.expires_at)
        );
    }
    if api_key_from_env().is_some() {
        eprintln!(
            "note: EZFORGE_API_KEY is set, so other commands will use that key instead of this session."
        );
    }
    Ok(())
}

async fn status(ctx: &Ctx) -> CliResult {
    if let Some(key) = api_key_from_env() {
        let client = ctx.client()?;
        let projects = client.list_projects().await?;
        let project = projects.projects.first().map(|p| p.name.clone());
        let prefix: String = key.chars().take(13).collect();
        if ctx.global.json {
            output::json(&StatusOut {
                api_url: client.base().into(),
                method: "api_key",
                email: None,
                user_id: None,
                expires_at: None,
                key_prefix: Some(prefix),
                project,
                session_file: None,
            });
        } else {
            println!(
                "Using the API key {prefix}… from EZFORGE_API_KEY on {} (project {}).",
                client.base(),
                project.as_deref().unwrap_or("?")
            );
        }
        return Ok(());
    }
    let saved = credentials::load()?
        .ok_or_else(|| CliError::Auth("You are not logged in. Run `ezforge auth login`.".into()))?;
    check_not_expired(&saved)?;
    let client = Client::new(&ctx.api_url(Some(&saved))).with_auth(Auth::Session {
        token: saved.token.clone(),
        csrf: saved.csrf_token.clone(),
    });
    let info = client.session().await?;
    if ctx.global.json {
        output::json(&StatusOut {
            api_url: client.base().into(),
            method: "session",
            email: Some(info.user.email),
            user_id: Some(info.user.id),
            expires_at: Some(info.expires_at),
            key_prefix: None,
            project: None,
            session_file: Some(credentials::session_path()?.display().to_string()),
        });
    } else {
        println!(
            "Logged in to {} as {} (session expires {}).",
            client.base(),
            info.user.email,
            output::time(info.expires_at)
        );
    }
    Ok(())
}

async fn logout(ctx: &Ctx, everywhere: bool) -> CliResult {
    let saved = credentials::load()?;
    let mut ended = 0;
    if let Some(saved) = &saved {
        let client = Client::new(&ctx.api_url(Some(saved))).with_auth(Auth::Session {
            token: saved.token.clone(),
            csrf: saved.csrf_token.clone(),
        });
        // An expired or already-ended session is fine: the point is to be logged out.
        let result = if everywhere {
            client.logout_everywhere().await.map(|r| r.sessions_ended)
        } else {
            client.logout().await.map(|_| 1)
        };
        match result {
            Ok(n) => ended = n,
            Err(e) if e.status() == Some(401) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let removed = credentials::delete()?;
    if ctx.global.json {
        output::json(&serde_json::json!({"logged_out": removed, "sessions_ended": ended}));
    } else if removed {
        println!(
            "Logged out{}.",
            if everywhere {
                format!(" everywhere ({ended} sessions ended)")
            } else {
                String::new()
            }
        );
    } else {
        println!("You were not logged in.");
    }
    Ok(())
}
