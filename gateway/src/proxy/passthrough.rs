//! TLS passthrough: routes a raw TLS connection by SNI to a TLSRoute backend and copies bytes
//! both ways, starting with the ClientHello already read. Unknown SNI, an invalid backend or
//! no ready endpoint closes the connection (the spec's "connection rejected").

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use tracing::{debug, info};

use super::drain::DrainReceiver;
use super::splice::{Ended, splice};
use crate::backend::BackendTarget;
use crate::options::GatewayOptions;
use crate::route::{ListenerTable, TlsTarget};
use crate::tls::backend::BackendConnector;
use crate::tls::client_hello::PeekedHello;

/// What is sent to a TLSRoute backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carried {
    /// The client's own TLS session (passthrough): a BackendTLSPolicy has nothing to add.
    ClientTls,
    /// The decrypted stream of a terminating listener.
    Plaintext,
}

/// Serves one passthrough connection to completion.
pub(crate) async fn run(
    client: TcpStream,
    hello: PeekedHello,
    listener: Arc<ListenerTable>,
    remote: SocketAddr,
    options: &GatewayOptions,
    drain: DrainReceiver,
) {
    let sni = hello.sni.as_deref();
    let Some(target) = listener.find_tls(sni) else {
        debug!(%remote, ?sni, listener = %listener.name, "no TLSRoute for SNI; rejecting");
        return;
    };
    let Some(Connected {
        stream: mut upstream,
        backend,
        ..
    }) = connect(target, sni, remote, Carried::ClientTls, options).await
    else {
        return;
    };
    if upstream.write_all(&hello.bytes).await.is_err() {
        return;
    }
    info!(target: "access", kind = "tls-passthrough", %remote, sni = sni.unwrap_or(""), route = %target.route, %backend);
    match splice(client, upstream, options.stream_idle_timeout, drain).await {
        Ended::Closed => {}
        Ended::Idle => debug!(%remote, %backend, "TLSRoute connection idle; closed"),
        Ended::Drained => debug!(%remote, %backend, "TLSRoute connection closed by a drain"),
    }
}

/// A TCP connection to a TLSRoute backend.
pub(crate) struct Connected {
    /// The socket.
    pub(crate) stream: TcpStream,
    /// The backend's name.
    pub(crate) backend: Arc<str>,
    /// The TLS its BackendTLSPolicy asks for, when `Carried::Plaintext` (the caller
    /// originates it; passthrough carries the client's own TLS and never sets it).
    pub(crate) tls: Option<Arc<BackendConnector>>,
}

/// Picks a TLSRoute backend by weight and connects to one of its ready endpoints; `None`
/// (logged) when the route has no usable backend or the connection fails.
pub(crate) async fn connect(
    target: &TlsTarget,
    sni: Option<&str>,
    remote: SocketAddr,
    carried: Carried,
    options: &GatewayOptions,
) -> Option<Connected> {
    let Some(choice) = target.backends.pick() else {
        debug!(%remote, ?sni, route = %target.route, "TLSRoute has no backends; rejecting");
        return None;
    };
    let BackendTarget::Service(service) = &choice.target else {
        debug!(%remote, ?sni, route = %target.route, "TLSRoute backend is invalid; rejecting");
        return None;
    };
    let Some(endpoint) = service.next_endpoint() else {
        debug!(%remote, ?sni, backend = %service.name, "no ready endpoint; rejecting");
        return None;
    };
    let tls = match carried {
        Carried::Plaintext => endpoint.tls().cloned(),
        Carried::ClientTls => None,
    };
    let connecting = TcpStream::connect(endpoint.addr);
    match tokio::time::timeout(options.connect_timeout, connecting).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Some(Connected {
                stream,
                backend: Arc::clone(&service.name),
                tls,
            })
        }
        Ok(Err(error)) => {
            service.metrics.record_error();
            debug!(%remote, backend = %service.name, %error, "TLSRoute backend connect failed");
            None
        }
        Err(_) => {
            service.metrics.record_error();
            debug!(%remote, backend = %service.name, "TLSRoute backend connect timed out");
            None
        }
    }
}
