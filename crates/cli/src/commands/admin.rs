//! `ezforge admin …`.

use crate::cli::AdminCommand;
use crate::context::Ctx;
use crate::error::CliResult;
use crate::output;

pub async fn run(ctx: &Ctx, cmd: AdminCommand) -> CliResult {
    match cmd {
        AdminCommand::CreateInvite { email } => {
            let invite = ctx.client()?.create_invite(email.as_deref()).await?;
            if ctx.global.json {
                output::json(&invite);
            } else {
                eprintln!(
                    "Invite {} created{}; it expires {}. Share the code below; it is shown only once:",
                    invite.id,
                    invite
                        .email
                        .as_deref()
                        .map(|e| format!(" for {e}"))
                        .unwrap_or_default(),
                    output::time(invite.expires_at)
                );
                println!("{}", invite.code);
            }
            Ok(())
        }
    }
}
