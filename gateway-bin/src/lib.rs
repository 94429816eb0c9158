//! The towergate gateway: reads one configuration file and composes the
//! towergate crates into a gateway.
//!
//! The binary (`towergate run|check|demo`) is a thin CLI over this library;
//! tests and embedders can start a gateway in-process:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = towergate::config::parse_str(r#"
//! listen: "127.0.0.1:0"
//! routes:
//!   - name: users
//!     match: { path_prefix: "/users/" }
//!     strip_prefix: true
//!     upstream: "http://127.0.0.1:7001"
//! "#, towergate::config::Format::Yaml)?;
//! let gateway = towergate::start(towergate::stack::compile(&cfg)?).await?;
//! println!("listening on {:?}", gateway.local_addrs());
//! gateway.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
mod aggregate;
mod balance;
pub mod config;
pub mod demo;
pub mod live;
pub mod policy;
pub mod reload;
pub mod serve;
pub mod shared;
pub mod stack;
mod tls;

pub use serve::{RunningGateway, start};

/// Resolves when the process is asked to stop (SIGTERM or SIGINT).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
