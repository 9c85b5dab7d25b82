//! TLSRoute Terminate mode: after the gateway's own TLS handshake, the decrypted byte stream
//! of a TLS listener with `tls.mode: Terminate` goes to a TLSRoute backend (chosen by SNI, by
//! weight) over plain TCP, or over TLS again when a BackendTLSPolicy targets the backend, both
//! ways, until either side closes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use tracing::{debug, info, warn};

use super::drain::DrainReceiver;
use super::passthrough::{self, Carried, Connected};
use super::splice::{Ended, splice};
use crate::options::GatewayOptions;
use crate::route::TlsTarget;

/// Serves one terminated connection to completion. The route was chosen before the
/// handshake, so an unknown SNI never gets this far. A backend under a BackendTLSPolicy gets
/// the stream over a new TLS session the gateway originates (re-encryption), never in
/// cleartext.
pub(crate) async fn run<S>(
    client: S,
    target: Arc<TlsTarget>,
    sni: Option<String>,
    remote: SocketAddr,
    options: &GatewayOptions,
    drain: DrainReceiver,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sni = sni.as_deref();
    let connected = passthrough::connect(&target, sni, remote, Carried::Plaintext, options);
    let Some(Connected {
        stream,
        backend,
        tls,
    }) = connected.await
    else {
        return;
    };
    let idle = options.stream_idle_timeout;
    let ended = match tls {
        None => {
            info!(target: "access", kind = "tls-terminate", %remote, sni = sni.unwrap_or(""), route = %target.route, %backend);
            splice(client, stream, idle, drain).await
        }
        Some(tls) => {
            let handshake =
                tokio::time::timeout(options.connect_timeout, tls.connect_stream(stream));
            let upstream = match handshake.await {
                Ok(Ok(upstream)) => upstream,
                Ok(Err(error)) => {
                    warn!(%remote, %backend, sni = ?tls.server_name(), %error, "TLS handshake with backend failed; rejecting");
                    return;
                }
                Err(_) => {
                    warn!(%remote, %backend, sni = ?tls.server_name(), "TLS handshake with backend timed out; rejecting");
                    return;
                }
            };
            info!(target: "access", kind = "tls-terminate-reencrypt", %remote, sni = sni.unwrap_or(""), route = %target.route, %backend);
            splice(client, upstream, idle, drain).await
        }
    };
    match ended {
        Ended::Closed => {}
        Ended::Idle => debug!(%remote, %backend, "TLSRoute connection idle; closed"),
        Ended::Drained => debug!(%remote, %backend, "TLSRoute connection closed by a drain"),
    }
}
