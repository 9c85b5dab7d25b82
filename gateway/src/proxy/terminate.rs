//! TLSRoute Terminate mode: after the gateway's own TLS handshake, the decrypted byte stream
//! of a TLS listener with `tls.mode: Terminate` goes to a TLSRoute backend (chosen by SNI, by
//! weight) over plain TCP, both ways, until either side closes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

use super::passthrough;
use crate::route::TlsTarget;

/// Serves one terminated connection to completion. The route was chosen before the
/// handshake, so an unknown SNI never gets this far.
pub(crate) async fn run<S>(
    mut client: S,
    target: Arc<TlsTarget>,
    sni: Option<String>,
    remote: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sni = sni.as_deref();
    let Some((mut upstream, backend)) = passthrough::connect(&target, sni, remote).await else {
        return;
    };
    info!(target: "access", kind = "tls-terminate", %remote, sni = sni.unwrap_or(""), route = %target.route, %backend);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
