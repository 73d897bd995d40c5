//! Control plane: configuration, session registry, REST API, and the glue to the engine.

pub mod access;
pub mod apps;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod core;
pub mod h264sps;
pub mod hooks;
pub mod lifecycle;
pub mod listen;
pub mod metrics;
pub mod operator;
pub mod ports;
pub mod registry;
pub mod sdp;
pub mod server;
pub mod signal;
pub mod tls;

pub use config::Config;
pub use lifecycle::Server;
