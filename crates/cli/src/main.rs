//! `ezforge`: the server and the command-line client in one binary.

mod cli;
mod commands;
mod context;
mod credentials;
mod error;
mod output;
mod serve;

use clap::Parser;
use cli::{Cli, Command};
use context::Ctx;
use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: the gateway allocates per request (headers, JSON,
/// records), and glibc's `malloc`/`free` took about 12% of its profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        restore_sigpipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::exit::FAILURE);
        }
    };
    let json = cli.global.json;
    let ctx = Ctx { global: cli.global };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(&args).await,
            Command::Auth(cmd) => commands::auth::run(&ctx, cmd).await,
            Command::Project(cmd) => commands::project::run(&ctx, cmd).await,
            Command::Admin(cmd) => commands::admin::run(&ctx, cmd).await,
            Command::Servers(cmd) => commands::servers::run(&ctx, cmd).await,
            Command::Deploy {
                server,
                upstream,
                headers,
                timeout_ms,
                force,
            } => {
                commands::deploy::deploy(&ctx, &server, &upstream, &headers, timeout_ms, force)
                    .await
            }
            Command::Deployments(cmd) => commands::deploy::list(&ctx, cmd).await,
            Command::Rollback { server, to } => {
                commands::deploy::rollback(&ctx, &server, to.as_deref()).await
            }
            Command::OauthClients(cmd) => commands::oauth::clients(&ctx, cmd).await,
            Command::Grants(cmd) => commands::oauth::grants(&ctx, cmd).await,
            Command::Logs(args) => commands::telemetry::logs(&ctx, args).await,
            Command::Metrics { server, window } => {
                commands::telemetry::metrics(&ctx, &server, &window).await
            }
            Command::Usage {
                project,
                from,
                to,
                environment,
            } => commands::telemetry::usage(&ctx, project, from, to, environment).await,
            Command::Audit {
                project,
                action,
                limit,
            } => commands::telemetry::audit(&ctx, project, action, limit).await,
        }
    });
    match result {
        Ok(()) => ExitCode::from(error::exit::OK),
        Err(e) => {
            if json {
                let code = match &e {
                    error::CliError::Client(c) => c.code().map(|c| c.as_str().to_string()),
                    _ => None,
                };
                eprintln!(
                    "{}",
                    serde_json::json!({"error": {"message": e.to_string(), "code": code, "exit_code": e.exit_code()}})
                );
            } else {
                eprintln!("error: {}", e.message());
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Rust ignores SIGPIPE, so `ezforge project list | head -1` would panic on the closed pipe.
/// Client commands take the ordinary Unix behaviour (end quietly); the server keeps ignoring
/// it, where a write to a closed socket must be an error, not the end of the process.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at start, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
