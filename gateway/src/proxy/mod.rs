//! The data path: accept loops and connection serving ([`server`]), the request pipeline
//! ([`handler`]), upstream forwarding with timeouts and retries ([`forward`]), locally
//! generated answers ([`answer`]), the access log line ([`access`]), the request target's checks and normal form ([`target`]),
//! TLS passthrough ([`passthrough`]), TLSRoute termination
//! ([`terminate`]), body types ([`body`]), the bounds on connections ([`conn_limits`])
//! and on HTTP/2 streams a client grants no window ([`stream_stall`]), and the two-stage
//! drain signal of a port's connections ([`drain`]).
//!
//! Life of a request:
//! 1. `server`: a port's accept loop takes a TCP connection; TLS ports read the ClientHello
//!    (SNI), then either pass the raw stream to a TLSRoute backend or terminate TLS with the
//!    certificate chosen by SNI; hyper serves HTTP/1.1 or HTTP/2 (h2c prior knowledge or ALPN).
//! 2. `handler`: each request loads the port's current table (one `ArcSwap` load: requests pick
//!    up a new config as soon as it is swapped in, and keep their snapshot until they finish);
//!    `target` checks the host fields (400 for none on HTTP/1.1, two, an invalid one, or an
//!    HTTP/2 `host` against `:authority`), makes the routing authority the `Host` the backend
//!    will see, and normalizes the path (400 for an invalid escape), so routing, filters and
//!    the backend all see one path and one host; then `handler`
//!    selects the single most specific listener for the Host (listener isolation; 404 if none;
//!    421 if TLS SNI chose another listener), then the winning route match (404 if none).
//! 3. `forward`: CONNECT is refused (405); CORS preflight and redirects answer locally; the
//!    client's hop-by-hop fields (fixed set, what its `Connection` lists except `Host` and
//!    `Content-Length`, `HTTP2-Settings`, an `h2c` upgrade) go before anything is added;
//!    otherwise header modifiers and
//!    rewrites apply, a backendRef is drawn by weight (500 for an invalid one, 503 when it has
//!    no ready endpoint), mirrors get a copy, and the request goes to a pooled connection of the
//!    next ready endpoint (a bodyless `GET`/`HEAD` to an HTTP/1.1 endpoint through the lean
//!    client in `backend::h1`, anything else through hyper's client), within the backendRequest
//!    and request timeouts (504) and the retry stanza; response header modifiers and CORS
//!    headers apply on the way back. A connection failure is 503, an invalid response (or a
//!    status outside 100-599) 502, the client's own request body failing 400, or stalling for the
//!    client body timeout 408. An upgrade is
//!    tunnelled only on a 101 naming a protocol the client asked for (else 502).
//! 4. `handler`: per-rule metrics and one `access` log line per request ([`access`]): at once
//!    for a response complete in memory, at the end of a body still streaming from upstream
//!    otherwise, with `outcome` `complete`, `aborted` (the upstream body failed or a timeout
//!    cut it; also counted in `gateway_route_aborted_responses`), `client_closed`,
//!    `send_timeout` or `drain_timeout`.

pub(crate) mod access;
pub(crate) mod answer;
pub(crate) mod body;
pub(crate) mod conn_limits;
pub(crate) mod drain;
pub(crate) mod forward;
pub(crate) mod handler;
pub(crate) mod passthrough;
pub(crate) mod server;
pub(crate) mod shards;
pub(crate) mod splice;
pub(crate) mod stream_stall;
pub(crate) mod target;
pub(crate) mod terminate;
