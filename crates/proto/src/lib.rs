//! Types shared by the ezForge server and its clients: the platform scopes, environments, the
//! `/v1` request and response bodies, and the JSON error body with its stable codes.

pub mod error;
pub mod scope;
pub mod telemetry;
pub mod types;

pub use error::{ApiErrorBody, ErrorCode, ErrorDetail};
pub use scope::{Environment, Scope, UnknownScope};
pub use telemetry::*;
pub use types::*;
