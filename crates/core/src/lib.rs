//! ezForge's domain, without HTTP: users and sessions, projects and members, scoped API keys,
//! servers, and the rules of who may do what. Storage sits behind the [`Store`] trait.

pub mod api_key;
pub mod audit;
pub mod byoa;
pub mod cache;
pub mod clock;
pub mod crypto;
pub mod error;
pub mod ids;
pub mod invalidation;
pub mod jwt;
pub mod mcp_scope;
pub mod model;
pub mod oauth;
pub mod password;
pub mod policy;
pub mod principal;
pub mod ratelimit;
pub mod secret;
pub mod service;
pub mod shared_limiter;
pub mod store;
pub mod telemetry;
pub mod validate;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::CoreError;
pub use principal::{Principal, Requirement};
pub use service::{Core, Settings, SignupMode};
pub use store::{Store, StoreError, TelemetryStore};
