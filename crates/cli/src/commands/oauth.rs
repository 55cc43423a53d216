//! `ezforge oauth-clients …` and `ezforge grants …`.

use crate::cli::{GrantCommand, OauthClientCommand};
use crate::context::Ctx;
use crate::error::CliResult;
use crate::output;
use ezforge_proto::CreateOAuthClientRequest;

pub async fn clients(ctx: &Ctx, cmd: OauthClientCommand) -> CliResult {
    let json = ctx.global.json;
    match cmd {
        OauthClientCommand::Create {
            project,
            name,
            redirect_uris,
            public,
        } => {
            let req = CreateOAuthClientRequest {
                client_name: name,
                redirect_uris,
                token_endpoint_auth_method: Some(
                    if public {
                        "none"
                    } else {
                        "client_secret_basic"
                    }
                    .into(),
                ),
                grant_types: None,
            };
            let created = ctx.client()?.create_oauth_client(&project, &req).await?;
            if json {
                output::json(&created);
            } else {
                eprintln!(
                    "Registered OAuth client \"{}\" in {project}.",
                    created.client.client_name.as_deref().unwrap_or_default()
                );
                eprintln!("client_id: {}", created.client.client_id);
                match &created.client_secret {
                    Some(secret) => {
                        eprintln!("client_secret (store it now; it will not be shown again):");
                        println!("{secret}");
                    }
                    None => {
                        eprintln!("A public client: it authenticates with PKCE only.");
                        println!("{}", created.client.client_id);
                    }
                }
            }
        }
        OauthClientCommand::List { project } => {
            let list = ctx.client()?.list_oauth_clients(&project).await?;
            if json {
                output::json(&list);
            } else {
                let rows = list
                    .clients
                    .iter()
                    .map(|c| {
                        vec![
                            c.client_id.clone(),
                            c.client_name.clone().unwrap_or_default(),
                            c.token_endpoint_auth_method.clone(),
                            c.redirect_uris.join(" "),
                            output::time(c.created_at),
                            output::opt_time(c.last_used_at),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "CLIENT ID",
                        "NAME",
                        "AUTH",
                        "REDIRECT URIS",
                        "CREATED",
                        "LAST USED",
                    ],
                    rows,
                );
            }
        }
        OauthClientCommand::Delete { project, client_id } => {
            ctx.client()?
                .delete_oauth_client(&project, &client_id)
                .await?;
            if json {
                output::json(&serde_json::json!({"deleted": client_id}));
            } else {
                println!("Deleted OAuth client {client_id}.");
            }
        }
    }
    Ok(())
}

pub async fn grants(ctx: &Ctx, cmd: GrantCommand) -> CliResult {
    let json = ctx.global.json;
    match cmd {
        GrantCommand::List { project, server } => {
            let list = ctx.client()?.list_grants(&project, &server).await?;
            if json {
                output::json(&list);
            } else if list.grants.is_empty() {
                println!("No client has been authorized for {server} yet.");
            } else {
                let rows = list
                    .grants
                    .iter()
                    .map(|g| {
                        vec![
                            g.id.clone(),
                            g.client_name.clone().unwrap_or_else(|| g.client_id.clone()),
                            g.user_id.clone(),
                            g.scope.clone(),
                            output::time(g.created_at),
                            if g.revoked_at.is_some() {
                                "revoked".into()
                            } else {
                                "active".into()
                            },
                        ]
                    })
                    .collect();
                output::table(
                    &["GRANT", "CLIENT", "USER", "SCOPE", "CREATED", "STATE"],
                    rows,
                );
            }
        }
        GrantCommand::Revoke {
            project,
            server,
            grant_id,
        } => {
            let grant = ctx
                .client()?
                .revoke_grant(&project, &server, &grant_id)
                .await?;
            if json {
                output::json(&grant);
            } else {
                println!(
                    "Revoked grant {}; the client's tokens no longer work.",
                    grant.id
                );
            }
        }
    }
    Ok(())
}
