//! Control plane: configuration, session registry, REST API, and the glue to the engine.

pub mod config;
pub mod core;
pub mod registry;
pub mod server;

pub use config::Config;
pub use server::Server;
