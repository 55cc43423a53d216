//! CLI errors and the exit codes scripts can rely on (documented in docs/cli.md).

use ezforge_client::ClientError;
use ezforge_proto::ErrorCode;

/// Exit codes. Stable: scripts depend on them.
pub mod exit {
    pub const OK: u8 = 0;
    /// Anything not covered below (a server error, a local I/O problem).
    pub const FAILURE: u8 = 1;
    /// Bad arguments or input the server rejected as invalid (400, 413, 415).
    pub const USAGE: u8 = 2;
    /// Not signed in, session expired, or the API key was refused (401).
    pub const AUTH: u8 = 3;
    /// Signed in but not allowed: missing scope, wrong project or environment, role (403).
    pub const FORBIDDEN: u8 = 4;
    pub const NOT_FOUND: u8 = 5;
    /// Already exists (409).
    pub const CONFLICT: u8 = 6;
    /// Too many attempts (429); try again later.
    pub const RATE_LIMITED: u8 = 7;
    /// The server could not be reached.
    pub const UNREACHABLE: u8 = 8;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Auth(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Failure(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Auth(_) => exit::AUTH,
            CliError::Failure(_) => exit::FAILURE,
            CliError::Client(ClientError::Network { .. }) => exit::UNREACHABLE,
            CliError::Client(ClientError::Protocol { .. }) => exit::FAILURE,
            CliError::Client(ClientError::Api { status, .. }) => match status {
                400 | 413 | 415 => exit::USAGE,
                401 => exit::AUTH,
                403 => exit::FORBIDDEN,
                404 => exit::NOT_FOUND,
                409 => exit::CONFLICT,
                429 => exit::RATE_LIMITED,
                _ => exit::FAILURE,
            },
        }
    }

    /// What to tell a person, with a hint on how to recover where there is one.
    pub fn message(&self) -> String {
        let hint = match self {
            CliError::Client(e) => match e.code() {
                Some(ErrorCode::SessionExpired) => {
                    Some("Your session expired. Run `ezforge auth login` to sign in again.")
                }
                Some(ErrorCode::SessionInvalid) => Some(
                    "Your session is no longer valid. Run `ezforge auth login` to sign in again.",
                ),
                Some(ErrorCode::SessionRequired) => Some(
                    "This command needs a signed-in user: unset EZFORGE_API_KEY and run `ezforge auth login`.",
                ),
                Some(
                    ErrorCode::ApiKeyRevoked | ErrorCode::ApiKeyExpired | ErrorCode::ApiKeyUnknown,
                ) => Some(
                    "Check EZFORGE_API_KEY, or create a new key with `ezforge project create-key`.",
                ),
                _ => None,
            },
            _ => None,
        };
        match hint {
            Some(h) => format!("{self}\n{h}"),
            None => self.to_string(),
        }
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;
