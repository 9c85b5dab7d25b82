//! One module per subcommand; each has `Args` (clap) and `async fn run(Args)`.

pub mod agent;
pub mod ctl;
pub mod dev;
pub mod echo;
pub mod gateway;
pub mod hub;
pub mod process;

/// Process-wide setup shared by every subcommand: the rustls crypto provider and logging.
pub fn init_process() {
    // Exactly one rustls provider (ring) is compiled in; installing it explicitly avoids the
    // runtime panic rustls raises when it cannot pick one. An error means one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("MERIDIAN_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colours only on a terminal: `meridian dev` and tests send logs to files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
