pub mod admin;
pub mod auth;
pub mod deploy;
pub mod oauth;
pub mod project;
pub mod servers;
pub mod telemetry;
