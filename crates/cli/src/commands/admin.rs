//! `ezforge admin …`.

use crate::cli::AdminCommand;
use crate::context::Ctx;
use crate::error::CliResult;
use crate::output;

pub async fn run(ctx: &Ctx, cmd: AdminCommand) -> CliResult {
    match cmd {
        AdminCommand::RotateSigningKey => {
            let keys = ctx.client()?.rotate_signing_key().await?;
            if ctx.global.json {
                output::json(&keys);
            } else {
                if let Some(new) = keys.keys.iter().max_by_key(|k| k.created_at) {
                    println!(
                        "New signing key {} is published now and signs from {}.",
                        new.kid,
                        output::time(new.signs_from)
                    );
                }
                print_keys(&keys);
            }
            Ok(())
        }
        AdminCommand::SigningKeys => {
            let keys = ctx.client()?.signing_keys().await?;
            if ctx.global.json {
                output::json(&keys);
            } else {
                print_keys(&keys);
            }
            Ok(())
        }
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

fn print_keys(keys: &ezforge_proto::SigningKeyList) {
    let rows = keys
        .keys
        .iter()
        .map(|k| {
            vec![
                k.kid.clone(),
                if k.signing {
                    "signing".into()
                } else if k.retired_at.is_some() {
                    "retiring".into()
                } else {
                    "published".into()
                },
                output::time(k.created_at),
                output::time(k.signs_from),
                output::opt_time(k.retired_at),
            ]
        })
        .collect();
    output::table(&["KID", "STATE", "CREATED", "SIGNS FROM", "RETIRES"], rows);
}
