//! `ezforge project …`: projects, members and API keys.

use crate::cli::ProjectCommand;
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::output;
use ezforge_proto::{CreateApiKeyRequest, Environment, Role, Scope};
use time::OffsetDateTime;

pub async fn run(ctx: &Ctx, cmd: ProjectCommand) -> CliResult {
    let json = ctx.global.json;
    match cmd {
        ProjectCommand::Create { name } => {
            let p = ctx.client()?.create_project(&name).await?;
            if json {
                output::json(&p);
            } else {
                println!("Created project {} ({}); you are its owner.", p.name, p.id);
            }
        }
        ProjectCommand::List => {
            let list = ctx.client()?.list_projects().await?;
            if json {
                output::json(&list);
            } else if list.projects.is_empty() {
                println!("No projects yet. Create one with `ezforge project create NAME`.");
            } else {
                let rows = list
                    .projects
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.id.clone(),
                            p.role
                                .map(|r| r.as_str().to_string())
                                .unwrap_or_else(|| "—".into()),
                            output::time(p.created_at),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "ID", "ROLE", "CREATED"], rows);
            }
        }
        ProjectCommand::SetQuota { project, requests } => {
            crate::commands::telemetry::set_quota(ctx, &project, &requests).await?;
        }
        ProjectCommand::CreateKey {
            project,
            name,
            scopes,
            environment,
            expires_in,
            expires_at,
        } => {
            // Check the scopes here too, so a typo is caught before a round trip.
            let parsed = Scope::parse_list(&scopes).map_err(|e| CliError::Usage(e.to_string()))?;
            if parsed.is_empty() {
                return Err(CliError::Usage(format!(
                    "--scopes needs at least one of {}",
                    Scope::valid_names().join(", ")
                )));
            }
            let environment: Environment = environment.parse().map_err(CliError::Usage)?;
            let expires_at = match (expires_in, expires_at) {
                (Some(d), _) => Some(OffsetDateTime::now_utc() + parse_duration(&d)?),
                (None, Some(t)) => Some(
                    OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| {
                            CliError::Usage(format!(
                                "--expires-at `{t}` is not an RFC 3339 time: {e}"
                            ))
                        })?,
                ),
                (None, None) => None,
            };
            let req = CreateApiKeyRequest {
                name,
                scopes: parsed.iter().map(|s| s.to_string()).collect(),
                environment,
                expires_at,
            };
            let created = ctx.client()?.create_key(&project, &req).await?;
            if json {
                output::json(&created);
            } else {
                let k = &created.key;
                eprintln!(
                    "Created API key \"{}\" ({}) in project {project} [{}].",
                    k.name, k.id, k.environment
                );
                eprintln!("Scopes: {}", Scope::join(&k.scopes).replace(',', ", "));
                if let Some(at) = k.expires_at {
                    eprintln!("Expires: {}", output::time(at));
                }
                eprintln!("Store the key now; it will not be shown again:");
                // The secret alone on stdout, so `KEY=$(ezforge project create-key …)` works.
                println!("{}", created.secret);
            }
        }
        ProjectCommand::ListKeys { project } => {
            let list = ctx.client()?.list_keys(&project).await?;
            if json {
                output::json(&list);
            } else if list.keys.is_empty() {
                println!(
                    "No API keys in {project}. Create one with `ezforge project create-key {project} --name NAME --scopes SCOPES`."
                );
            } else {
                let rows = list
                    .keys
                    .iter()
                    .map(|k| {
                        let state = if k.revoked_at.is_some() {
                            "revoked"
                        } else if k.expires_at.is_some_and(|t| t <= OffsetDateTime::now_utc()) {
                            "expired"
                        } else {
                            "active"
                        };
                        vec![
                            k.id.clone(),
                            k.name.clone(),
                            format!("{}…", k.prefix),
                            Scope::join(&k.scopes),
                            state.into(),
                            k.created_by.clone(),
                            output::time(k.created_at),
                            output::opt_time(k.last_used_at),
                            output::opt_time(k.expires_at),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "ID",
                        "NAME",
                        "KEY",
                        "SCOPES",
                        "STATE",
                        "CREATED BY",
                        "CREATED",
                        "LAST USED",
                        "EXPIRES",
                    ],
                    rows,
                );
            }
        }
        ProjectCommand::RevokeKey { project, key_id } => {
            let key = ctx.client()?.revoke_key(&project, &key_id).await?;
            if json {
                output::json(&key);
            } else {
                println!(
                    "Revoked API key \"{}\" ({}); it no longer works.",
                    key.name, key.id
                );
            }
        }
        ProjectCommand::Members { project } => {
            let list = ctx.client()?.list_members(&project).await?;
            if json {
                output::json(&list);
            } else {
                let rows = list
                    .members
                    .iter()
                    .map(|m| {
                        vec![
                            m.email.clone(),
                            m.user_id.clone(),
                            m.role.as_str().into(),
                            output::time(m.added_at),
                        ]
                    })
                    .collect();
                output::table(&["EMAIL", "USER ID", "ROLE", "ADDED"], rows);
            }
        }
        ProjectCommand::AddMember {
            project,
            email,
            role,
        } => {
            let role: Role = role.parse().map_err(CliError::Usage)?;
            let m = ctx.client()?.add_member(&project, &email, role).await?;
            if json {
                output::json(&m);
            } else {
                println!("Added {} to {project} as {}.", m.email, m.role.as_str());
            }
        }
        ProjectCommand::RemoveMember { project, user_id } => {
            ctx.client()?.remove_member(&project, &user_id).await?;
            if json {
                output::json(&serde_json::json!({"removed": user_id}));
            } else {
                println!("Removed {user_id} from {project}.");
            }
        }
    }
    Ok(())
}

/// `30d`, `12h`, `90m`, `45s`.
fn parse_duration(input: &str) -> CliResult<time::Duration> {
    let bad = || {
        CliError::Usage(format!(
            "`{input}` is not a duration; use e.g. 30d, 12h or 90m"
        ))
    };
    let input = input.trim();
    let (num, unit) = input.split_at(input.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = num.parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    match unit {
        "d" => Ok(time::Duration::days(n)),
        "h" => Ok(time::Duration::hours(n)),
        "m" => Ok(time::Duration::minutes(n)),
        "s" => Ok(time::Duration::seconds(n)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), time::Duration::days(30));
        assert_eq!(parse_duration("90m").unwrap(), time::Duration::minutes(90));
        for bad in ["", "d", "10", "10y", "-5d", "0h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
