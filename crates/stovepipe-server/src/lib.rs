//! The `stovepipe` server: the one crate that knows every adapter.
//!
//! Owns: configuration (TOML + environment), wiring adapters into the
//! application, the HTTP API (poem-openapi), authentication, the event
//! stream, metrics, the command line and the demo. Holds no business logic:
//! a handler parses, calls an application service, maps the result.

pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod demo;
pub mod serve;
pub mod wiring;
