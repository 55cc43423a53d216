pub mod admin;
pub mod auth;
pub mod oauth;
pub mod project;
pub mod servers;
