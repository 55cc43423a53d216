//! The ezForge HTTP server: the `/v1` control plane (platform auth, projects, API keys,
//! servers) and its OpenAPI document. Handlers are thin: they parse, call `ezforge-core`, and
//! map the result; every error becomes a response in one place ([`error`]).

pub mod app;
pub mod auth;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod invalidation;
pub mod listener;
pub mod oauth;
pub mod openapi;
pub mod pages;
pub mod prometheus;
pub mod routes;
pub mod upstream;
pub mod upstream_conns;

pub use app::{RunningServer, StartError, start};
pub use config::ServerConfig;
