//! TLSRoute Terminate mode: after the gateway's own TLS handshake, the decrypted byte stream
//! of a TLS listener with `tls.mode: Terminate` goes to a TLSRoute backend (chosen by SNI, by
//! weight) over plain TCP, both ways, until either side closes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::{debug, info};

use super::passthrough::{self, Carried};
use super::splice::{Ended, splice};
use crate::options::GatewayOptions;
use crate::route::TlsTarget;

/// Serves one terminated connection to completion. The route was chosen before the
/// handshake, so an unknown SNI never gets this far. A backend under a BackendTLSPolicy is
/// refused rather than sent the decrypted stream.
pub(crate) async fn run<S>(
    client: S,
    target: Arc<TlsTarget>,
    sni: Option<String>,
    remote: SocketAddr,
    options: &GatewayOptions,
    drain: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sni = sni.as_deref();
    let connected = passthrough::connect(&target, sni, remote, Carried::Plaintext, options);
    let Some((upstream, backend)) = connected.await else {
        return;
    };
    info!(target: "access", kind = "tls-terminate", %remote, sni = sni.unwrap_or(""), route = %target.route, %backend);
    match splice(client, upstream, options.stream_idle_timeout, drain).await {
        Ended::Closed => {}
        Ended::Idle => debug!(%remote, %backend, "TLSRoute connection idle; closed"),
        Ended::Drained => debug!(%remote, %backend, "TLSRoute connection closed by a drain"),
    }
}
