//! `ezforge deploy`, `ezforge deployments list`, `ezforge rollback`.

use crate::cli::DeploymentCommand;
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::output;
use ezforge_proto::CreateDeploymentRequest;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

fn parse_headers(raw: &[String]) -> CliResult<BTreeMap<String, String>> {
    raw.iter()
        .map(|h| {
            let (k, v) = h.split_once(':').ok_or_else(|| {
                CliError::Usage(format!("--header `{h}` must look like `Name: value`"))
            })?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// A spinner on stderr while `fut` runs, when stderr is a terminal.
async fn with_progress<T>(message: &str, fut: impl std::future::Future<Output = T>) -> T {
    if !std::io::stderr().is_terminal() {
        eprintln!("{message}");
        return fut.await;
    }
    let msg = message.to_string();
    let spinner = tokio::spawn(async move {
        let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        let started = std::time::Instant::now();
        for i in 0.. {
            eprint!(
                "\r{} {msg} {:.1}s",
                frames[i % frames.len()],
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let out = fut.await;
    spinner.abort();
    eprint!("\r\x1b[2K");
    out
}

pub async fn deploy(
    ctx: &Ctx,
    server: &str,
    upstream: &str,
    headers: &[String],
    timeout_ms: Option<i64>,
    force: bool,
) -> CliResult {
    let req = CreateDeploymentRequest {
        upstream_url: upstream.to_string(),
        headers: parse_headers(headers)?,
        timeout_ms,
        force,
    };
    let client = ctx.client()?;
    let message = format!("Checking that {upstream} answers an MCP initialize…");
    let d = with_progress(&message, client.deploy(server, &req)).await?;
    if ctx.global.json {
        output::json(&d);
    } else {
        println!("Deployed {} to {server}: {}", d.id, d.upstream_url);
        println!("  health: {}", d.health);
        // The server as the API names it: the argument may be an id, and with host-based
        // routing its MCP URL is not under the API's origin.
        match client.server(server).await {
            Ok(s) => println!(
                "  traffic to {} now goes there.",
                super::servers::mcp_url(&s, client.base())
            ),
            Err(_) => println!("  traffic to {server}'s MCP URL now goes there."),
        }
    }
    Ok(())
}

pub async fn list(ctx: &Ctx, cmd: DeploymentCommand) -> CliResult {
    let DeploymentCommand::List { server } = cmd;
    let list = ctx.client()?.deployments(&server).await?;
    if ctx.global.json {
        output::json(&list);
    } else if list.deployments.is_empty() {
        println!("Nothing deployed yet. Deploy with `ezforge deploy {server} --upstream URL`.");
    } else {
        let rows = list
            .deployments
            .iter()
            .map(|d| {
                vec![
                    d.id.clone(),
                    if d.active {
                        "active".into()
                    } else {
                        String::new()
                    },
                    d.upstream_url.clone(),
                    d.created_by.clone(),
                    output::time(d.created_at),
                    d.health.clone(),
                ]
            })
            .collect();
        output::table(
            &["DEPLOYMENT", "STATUS", "UPSTREAM", "BY", "WHEN", "HEALTH"],
            rows,
        );
    }
    Ok(())
}

pub async fn rollback(ctx: &Ctx, server: &str, to: Option<&str>) -> CliResult {
    let d = ctx.client()?.rollback(server, to).await?;
    if ctx.global.json {
        output::json(&d);
    } else {
        println!(
            "Rolled {server} back to {} ({}); traffic goes there now.",
            d.id, d.upstream_url
        );
    }
    Ok(())
}
