//! `ezforge servers …`.

use crate::cli::{ServerCommand, ServerSettingsArgs, ServerUpdate};
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::output;
use ezforge_proto::{
    CreateServerRequest, Environment, Server, ServerSettings, ToolPolicy, UpdateServerRequest,
};
use std::io::{BufRead, IsTerminal, Write};

pub async fn run(ctx: &Ctx, cmd: ServerCommand) -> CliResult {
    let json = ctx.global.json;
    let client = ctx.client()?;
    match cmd {
        ServerCommand::Create {
            slug,
            project,
            name,
            environment,
            settings,
        } => {
            let environment = environment
                .map(|e| e.parse::<Environment>())
                .transpose()
                .map_err(CliError::Usage)?;
            let req = CreateServerRequest {
                name: name.unwrap_or_else(|| slug.clone()),
                slug,
                environment,
                settings: server_settings(&settings),
            };
            let server = client.create_server(&project, &req).await?;
            if json {
                output::json(&server);
            } else {
                println!(
                    "Created server {} in {project}. MCP URL: {}",
                    server.slug,
                    mcp_url(&server, client.base())
                );
            }
        }
        ServerCommand::List { project } => {
            let list = match project {
                Some(p) => client.list_servers(&p, None).await?,
                None => client.list_all_servers().await?,
            };
            if json {
                output::json(&list);
            } else if list.servers.is_empty() {
                println!(
                    "No servers yet. Create one with `ezforge servers create SLUG --project PROJECT`."
                );
            } else {
                let rows = list
                    .servers
                    .iter()
                    .map(|s| {
                        vec![
                            s.slug.clone(),
                            s.name.clone(),
                            s.environment.to_string(),
                            s.auth_mode.clone(),
                            s.access_policy.clone(),
                            output::time(s.created_at),
                        ]
                    })
                    .collect();
                output::table(&["SLUG", "NAME", "ENV", "AUTH", "ACCESS", "CREATED"], rows);
            }
        }
        ServerCommand::Get { server } => {
            let s = client.server(&server).await?;
            if json {
                output::json(&s);
            } else {
                show(&s, client.base());
            }
        }
        ServerCommand::Update(update) => {
            let req = update_request(&update);
            let s = client.update_server_by_slug(&update.server, &req).await?;
            if json {
                output::json(&s);
            } else {
                println!("Updated server {}.", s.slug);
                show(&s, client.base());
            }
        }
        ServerCommand::Delete { server, yes } => {
            if !yes
                && !confirm(&format!(
                    "Delete server {server}? Its grants end and its MCP URL stops working. [y/N] "
                ))?
            {
                return Err(CliError::Usage(
                    "not deleted (confirm, or pass --yes)".into(),
                ));
            }
            client.delete_server_by_slug(&server).await?;
            if json {
                output::json(&serde_json::json!({"deleted": server}));
            } else {
                println!("Deleted server {server}.");
            }
        }
    }
    Ok(())
}

fn update_request(u: &ServerUpdate) -> UpdateServerRequest {
    UpdateServerRequest {
        name: u.name.clone(),
        settings: server_settings(&u.settings),
    }
}

/// The settings the flags give; a flag not given leaves its setting alone (or at its default).
fn server_settings(s: &ServerSettingsArgs) -> ServerSettings {
    let tools_given =
        !(s.tool_allow.is_empty() && s.tool_deny.is_empty() && s.tool_execute.is_empty());
    ServerSettings {
        access_policy: s.access_policy.clone(),
        access_allowlist: (!s.allow.is_empty()).then(|| s.allow.clone()),
        auth_mode: s.auth_mode.clone(),
        byoa_issuer: s.byoa_issuer.clone(),
        byoa_jwks_uri: s.byoa_jwks_uri.clone(),
        byoa_authorization_endpoint: s.byoa_authorization_endpoint.clone(),
        byoa_token_endpoint: s.byoa_token_endpoint.clone(),
        tool_policy: tools_given.then(|| ToolPolicy {
            allow: s.tool_allow.clone(),
            deny: s.tool_deny.clone(),
            execute: s.tool_execute.clone(),
        }),
    }
}

/// Where MCP clients connect; a server older than `mcp_url` leaves it empty.
pub fn mcp_url(s: &Server, base: &str) -> String {
    if s.mcp_url.is_empty() {
        format!("{base}/mcp/{}", s.slug)
    } else {
        s.mcp_url.clone()
    }
}

fn show(s: &Server, base: &str) {
    println!("{} ({})", s.name, s.id);
    println!("  MCP URL:     {}", mcp_url(s, base));
    println!("  environment: {}", s.environment);
    println!("  auth mode:   {}", s.auth_mode);
    if let Some(b) = &s.byoa {
        println!("    issuer:                 {}", b.issuer);
        println!("    jwks_uri:               {}", b.jwks_uri);
        println!("    authorization_endpoint: {}", b.authorization_endpoint);
        println!("    token_endpoint:         {}", b.token_endpoint);
    }
    let list = if s.access_allowlist.is_empty() {
        String::new()
    } else {
        format!(" ({})", s.access_allowlist.join(", "))
    };
    println!("  access:      {}{list}", s.access_policy);
    let t = &s.tool_policy;
    if t.allow.is_empty() && t.deny.is_empty() && t.execute.is_empty() {
        println!("  tools:       every tool");
    } else {
        println!(
            "  tools:       allow [{}] deny [{}] execute-class [{}]",
            t.allow.join(", "),
            t.deny.join(", "),
            t.execute.join(", ")
        );
    }
}

fn confirm(question: &str) -> CliResult<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Ok(false);
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Failure(e.to_string()))?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}
