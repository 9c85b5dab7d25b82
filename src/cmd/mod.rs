//! One module per subcommand; each has `Args` (clap) and `async fn run(Args)`.

pub mod agent;
pub mod ctl;
pub mod dev;
pub mod echo;
pub mod gateway;
pub mod hub;
pub mod logging;
pub mod memory;
pub mod process;

/// Process-wide setup shared by every subcommand: the rustls crypto provider and logging.
/// Keep the returned guard for the life of the process: dropping it flushes the log.
pub fn init_process() -> logging::LogGuard {
    // Exactly one rustls provider (ring) is compiled in; installing it explicitly avoids the
    // runtime panic rustls raises when it cannot pick one. An error means one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    logging::init()
}
