//! A lean HTTP/1.1 client for the most common proxied exchange: a `GET` or `HEAD` without a
//! request body, on a pooled keep-alive connection.
//!
//! It writes the request head with one `write`, parses the response head in place with
//! httparse (header values share the read buffer), and hands the body over by its framing
//! (RFC 9112 §6.3: none, `Content-Length`, chunked, or until the connection closes). When the
//! whole body is already in the buffer (the usual small response), the connection goes back to
//! its pool before the response is even returned.
//!
//! Why it exists: hyper's client runs every upstream connection as a task of its own behind an
//! mpsc channel and a oneshot per request; for a small proxied request that machinery cost
//! more user-space instructions than parsing and writing the messages (callgrind: the upstream
//! side was ~45 % of the gateway's instructions per request). Everything else (request bodies,
//! other methods, h2c, upgrades) still goes through hyper's client.
//!
//! **Invariant:** a connection is pooled only after a complete response with nothing after it
//! in the buffer, from an HTTP/1.1 server that did not ask to close.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Most response header fields accepted (hyper's default).
const MAX_HEADERS: usize = 100;
/// Largest response head (or chunk-size line plus trailers) accepted, in bytes.
const MAX_HEAD_BYTES: usize = 256 * 1024;
/// Bytes reserved before each read.
const READ_CHUNK: usize = 8 * 1024;

/// One upstream connection with its buffers.
#[derive(Debug)]
pub(crate) struct H1Conn {
    stream: TcpStream,
    read_buf: BytesMut,
    write_buf: Vec<u8>,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    /// Writing the request failed: a pooled connection the server had already closed, so the
    /// request did not reach it (not even in part) and can go again on another connection.
    /// A connection that takes the request and then closes without answering is an [`Io`]
    /// error instead: resending would be a retry the route did not ask for.
    ///
    /// [`Io`]: H1Error::Io
    #[error("connection closed before the request was sent: {0}")]
    Closed(io::Error),
    /// The request went out, then the connection closed (or was reset) before a byte of the
    /// response came back. On a pooled connection this is the backend's idle timeout racing
    /// the reuse; the request may or may not have been processed.
    #[error("connection closed before any response: {0}")]
    NoResponse(io::Error),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(io::Error),
    /// The response broke HTTP/1.1.
    #[error("invalid response: {0}")]
    Protocol(&'static str),
}

/// A parsed response head and how its body is framed.
#[derive(Debug)]
pub(crate) struct ResponseStart {
    /// Status, version and headers.
    pub(crate) head: http::response::Parts,
    /// How the body ends.
    pub(crate) framing: Framing,
    /// Whether the connection may carry another request once the body ended.
    pub(crate) keep_alive: bool,
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// A response body being read from its connection.
#[derive(Debug)]
pub(crate) struct BodyReader {
    /// Taken when the body ends (to go back to the pool, or to be closed).
    conn: Option<H1Conn>,
    state: BodyState,
    keep_alive: bool,
    /// Trailers were handed out; the end comes with the next poll.
    end_pending: bool,
}

/// What [`BodyReader::poll_frame`] produced.
#[derive(Debug)]
pub(crate) enum BodyEvent {
    /// Body bytes.
    Data(Bytes),
    /// Chunked trailers.
    Trailers(HeaderMap),
    /// The body ended; the connection, when it can carry another request.
    End(Option<H1Conn>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    UntilClose,
    Done,
}

/// Whether a request can take the lean path: `GET` or `HEAD` (safe to resend on a fresh
/// connection if a pooled one turns out closed) with no body at all.
pub(crate) fn is_lean_request<B: hyper::body::Body>(request: &Request<B>) -> bool {
    (request.method() == Method::GET || request.method() == Method::HEAD)
        && request.body().is_end_stream()
        && !request.headers().contains_key(header::CONTENT_LENGTH)
        && !request.headers().contains_key(header::TRANSFER_ENCODING)
}

// === impl H1Conn ===

impl H1Conn {
    /// Wraps a connected stream.
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            read_buf: BytesMut::new(),
            write_buf: Vec::new(),
        }
    }

    /// Whether an idle pooled connection is still usable: nothing to read on it (no EOF, no
    /// stray bytes). Costs no system call unless the reactor saw it become readable.
    pub(crate) fn looks_idle(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness can be left over from the last response; a read tells.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends a bodyless request and reads the response head.
    pub(crate) async fn send<B>(&mut self, request: &Request<B>) -> Result<ResponseStart, H1Error> {
        self.encode_head(request);
        if let Err(error) = self.stream.write_all(&self.write_buf).await {
            return Err(H1Error::Closed(error));
        }
        let is_head = request.method() == Method::HEAD;
        let mut answered = !self.read_buf.is_empty();
        loop {
            if !self.read_buf.is_empty() {
                if let Some(start) = parse_response(&mut self.read_buf, is_head)? {
                    return Ok(start);
                }
                if self.read_buf.len() >= MAX_HEAD_BYTES {
                    return Err(H1Error::Protocol("response head too large"));
                }
            }
            self.read_buf.reserve(READ_CHUNK);
            match self.stream.read_buf(&mut self.read_buf).await {
                // A connection error (like a reset), not a malformed response.
                Ok(0) => {
                    let error = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before the response",
                    );
                    return Err(if answered {
                        H1Error::Io(error)
                    } else {
                        H1Error::NoResponse(error)
                    });
                }
                Ok(_) => answered = true,
                Err(error)
                    if !answered
                        && matches!(
                            error.kind(),
                            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                        ) =>
                {
                    return Err(H1Error::NoResponse(error));
                }
                Err(error) => return Err(H1Error::Io(error)),
            }
        }
    }

    /// Takes the body if it is already complete in the buffer (returns the connection too when
    /// it can be reused), or a reader that streams it.
    pub(crate) fn into_body(
        mut self,
        start_framing: Framing,
        keep_alive: bool,
    ) -> ReadyOrStreaming {
        match start_framing {
            Framing::Empty => ReadyOrStreaming::Ready(Bytes::new(), self.reusable(keep_alive)),
            Framing::Length(n) if self.read_buf.len() as u64 >= n => {
                // `n` fits in usize: it is at most the buffer's length.
                let bytes = self.read_buf.split_to(n as usize).freeze();
                ReadyOrStreaming::Ready(bytes, self.reusable(keep_alive))
            }
            framing => ReadyOrStreaming::Streaming(BodyReader {
                conn: Some(self),
                state: match framing {
                    Framing::Length(n) => BodyState::Length(n),
                    Framing::Chunked => BodyState::ChunkSize,
                    _ => BodyState::UntilClose,
                },
                keep_alive: keep_alive && framing != Framing::UntilClose,
                end_pending: false,
            }),
        }
    }

    fn reusable(self, keep_alive: bool) -> Option<Self> {
        (keep_alive && self.read_buf.is_empty()).then_some(self)
    }

    fn encode_head<B>(&mut self, request: &Request<B>) {
        let out = &mut self.write_buf;
        out.clear();
        out.extend_from_slice(request.method().as_str().as_bytes());
        out.push(b' ');
        let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        out.extend_from_slice(if target.is_empty() {
            b"/"
        } else {
            target.as_bytes()
        });
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in request.headers() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream. Goes through `poll_read`,
    /// which clears the socket's readiness after a short read (so [`Self::looks_idle`] needs
    /// no system call afterwards).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let filled = self.read_buf.len();
        self.read_buf.resize(filled + READ_CHUNK, 0);
        let mut read_buf = ReadBuf::new(&mut self.read_buf[filled..]);
        let polled = Pin::new(&mut self.stream).poll_read(cx, &mut read_buf);
        let n = read_buf.filled().len();
        self.read_buf.truncate(filled + n);
        ready!(polled)?;
        Poll::Ready(Ok(n))
    }
}

/// A response body: complete already, or still to be read.
#[derive(Debug)]
pub(crate) enum ReadyOrStreaming {
    /// The whole body, and the connection when it can be reused.
    Ready(Bytes, Option<H1Conn>),
    /// The body still arriving.
    Streaming(BodyReader),
}

// === impl BodyReader ===

/// What the buffered bytes yielded.
enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
}

impl BodyReader {
    /// The next piece of the body.
    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<BodyEvent>> {
        if self.end_pending {
            self.end_pending = false;
            return Poll::Ready(Ok(self.end()));
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(Ok(BodyEvent::End(None)));
            };
            match decode(&mut self.state, &mut conn.read_buf)? {
                Some(Decoded::Data(bytes)) => return Poll::Ready(Ok(BodyEvent::Data(bytes))),
                Some(Decoded::Trailers(trailers)) => {
                    self.end_pending = true;
                    return Poll::Ready(Ok(BodyEvent::Trailers(trailers)));
                }
                Some(Decoded::End) => return Poll::Ready(Ok(self.end())),
                None => {}
            }
            let n = ready!(conn.poll_fill(cx))?;
            if n == 0 {
                if self.state == BodyState::UntilClose {
                    self.keep_alive = false;
                    return Poll::Ready(Ok(self.end()));
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection before the body ended",
                )));
            }
        }
    }

    /// Bytes still expected, when the framing says.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self.state {
            BodyState::Length(n) => Some(n),
            BodyState::Done => Some(0),
            _ => None,
        }
    }

    /// Whether the body has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.state == BodyState::Done && !self.end_pending
    }

    fn end(&mut self) -> BodyEvent {
        self.state = BodyState::Done;
        let conn = self.conn.take();
        BodyEvent::End(conn.filter(|conn| self.keep_alive && conn.read_buf.is_empty()))
    }
}

/// One piece from the buffered bytes, or `None` when more must be read.
fn decode(state: &mut BodyState, buf: &mut BytesMut) -> io::Result<Option<Decoded>> {
    loop {
        match *state {
            BodyState::Done => return Ok(Some(Decoded::End)),
            BodyState::Length(0) => return Ok(Some(Decoded::End)),
            BodyState::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = remaining.min(buf.len() as u64);
                *state = BodyState::Length(remaining - n);
                // `n` is at most the buffer's length.
                return Ok(Some(Decoded::Data(buf.split_to(n as usize).freeze())));
            }
            BodyState::UntilClose => {
                if buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Decoded::Data(buf.split().freeze())));
            }
            BodyState::ChunkSize => {
                let Some(line) = take_line(buf)? else {
                    return Ok(None);
                };
                let size = parse_chunk_size(&line)?;
                *state = if size == 0 {
                    BodyState::Trailers
                } else {
                    BodyState::ChunkData(size)
                };
            }
            BodyState::ChunkData(remaining) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = remaining.min(buf.len() as u64);
                *state = if n == remaining {
                    BodyState::ChunkDataEnd
                } else {
                    BodyState::ChunkData(remaining - n)
                };
                return Ok(Some(Decoded::Data(buf.split_to(n as usize).freeze())));
            }
            BodyState::ChunkDataEnd => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(invalid("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                *state = BodyState::ChunkSize;
            }
            BodyState::Trailers => {
                // The trailer section ends with an empty line; parse it whole.
                let end = if buf.starts_with(b"\r\n") {
                    Some(2)
                } else {
                    find_subslice(buf, b"\r\n\r\n").map(|i| i + 4)
                };
                let Some(end) = end else {
                    if buf.len() > MAX_HEAD_BYTES {
                        return Err(invalid("trailer section too large"));
                    }
                    return Ok(None);
                };
                let section = buf.split_to(end);
                *state = BodyState::Done;
                return Ok(Some(match parse_trailers(&section)? {
                    Some(trailers) => Decoded::Trailers(trailers),
                    None => Decoded::End,
                }));
            }
        }
    }
}

fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Takes one CRLF-terminated line (without the CRLF) off the buffer.
fn take_line(buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(newline) => {
            let mut line = buf.split_to(newline + 1);
            line.truncate(newline);
            if line.last() == Some(&b'\r') {
                line.truncate(newline - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > 4096 => Err(invalid("chunk size line too long")),
        None => Ok(None),
    }
}

/// `1a;ext=1` → 26 (extensions ignored, RFC 9112 §7.1.1).
fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.split(|&b| b == b';').next().unwrap_or(&[]);
    let digits = digits.trim_ascii();
    if digits.is_empty() || digits.len() > 16 {
        return Err(invalid("invalid chunk size"));
    }
    let mut size: u64 = 0;
    for &b in digits {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(invalid("invalid chunk size")),
        };
        size = (size << 4) | u64::from(digit);
    }
    Ok(size)
}

fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Trailer fields of a complete trailer section (`None` when there are none).
fn parse_trailers(section: &[u8]) -> io::Result<Option<HeaderMap>> {
    if section == b"\r\n" {
        return Ok(None);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => {
            let mut trailers = HeaderMap::with_capacity(fields.len());
            for field in fields {
                let name = HeaderName::from_bytes(field.name.as_bytes())
                    .map_err(|_| invalid("invalid trailer name"))?;
                let value = HeaderValue::from_bytes(field.value)
                    .map_err(|_| invalid("invalid trailer value"))?;
                trailers.append(name, value);
            }
            Ok((!trailers.is_empty()).then_some(trailers))
        }
        _ => Err(invalid("invalid trailer section")),
    }
}

/// Parses a complete response head off the front of `buf`; skips interim (1xx) responses.
///
/// The fields that decide the framing are read from the raw bytes in the same pass that
/// builds the header map (no lookups afterwards), and a `Connection` field listing nothing but
/// `keep-alive`/`close` is left out of the map: it is hop-by-hop, the proxy would strip it,
/// and stripping it costs a lookup, a token scan and a removal per response.
fn parse_response(buf: &mut BytesMut, is_head: bool) -> Result<Option<ResponseStart>, H1Error> {
    loop {
        // Uninitialised slots: a 100-field array of empty headers costs more to fill than a
        // small response head costs to parse.
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut fields,
        );
        let head_len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(H1Error::Protocol("malformed response head")),
        };
        let code = response.code.unwrap_or(0);
        // `StatusCode` takes any three digits; HTTP defines 100-599 (RFC 9110 §15).
        let status = StatusCode::from_u16(code)
            .ok()
            .filter(|status| status.as_u16() <= 599)
            .ok_or(H1Error::Protocol("invalid status code"))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(H1Error::Protocol(
                    "unexpected 101 to a request without Upgrade",
                ));
            }
            // 100 Continue, 103 Early Hints: nothing to forward for a bodyless request.
            buf.advance(head_len);
            continue;
        }
        let version = if response.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Header values share the buffer: remember where each one sits (offsets on the stack,
        // no allocation), then freeze it.
        let base = buf.as_ptr() as usize;
        let mut located = [Located::default(); MAX_HEADERS];
        let mut count = 0;
        let mut scan = FramingScan::default();
        for field in response.headers.iter() {
            let name = field.name.as_bytes();
            let connection = scan.observe(name, field.value);
            // The head is at most MAX_HEAD_BYTES (plus one read), far below u32::MAX.
            let name_start = (name.as_ptr() as usize - base) as u32;
            let value_start = (field.value.as_ptr() as usize - base) as u32;
            located[count] = Located {
                name: (name_start, name_start + name.len() as u32),
                value: (value_start, value_start + field.value.len() as u32),
                connection,
            };
            count += 1;
        }
        let head_bytes = buf.split_to(head_len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        for field in &located[..count] {
            if field.connection && scan.simple_connection {
                continue;
            }
            let (name_start, name_end) = field.name;
            let (value_start, value_end) = field.value;
            let name = HeaderName::from_bytes(&head_bytes[name_start as usize..name_end as usize])
                .map_err(|_| H1Error::Protocol("invalid header name"))?;
            let value = HeaderValue::from_maybe_shared(
                head_bytes.slice(value_start as usize..value_end as usize),
            )
            .map_err(|_| H1Error::Protocol("invalid header value"))?;
            headers.append(name, value);
        }
        let (framing, keep_alive) = scan.framing(&mut headers, status, version, is_head)?;
        let (mut head, ()) = http::Response::new(()).into_parts();
        head.status = status;
        head.version = version;
        head.headers = headers;
        return Ok(Some(ResponseStart {
            head,
            framing,
            keep_alive,
        }));
    }
}

/// Where one header field sits in the response head (byte ranges of name and value).
#[derive(Debug, Clone, Copy, Default)]
struct Located {
    name: (u32, u32),
    value: (u32, u32),
    /// A `Connection` field.
    connection: bool,
}

/// What the raw header fields say about framing and the connection (RFC 9112 §6.3, §9.6).
#[derive(Debug)]
struct FramingScan {
    /// A `Connection` token was `close`.
    close: bool,
    /// Every `Connection` token was `keep-alive` or `close` (such fields are left out).
    simple_connection: bool,
    /// A `Transfer-Encoding` field was present.
    transfer_encoding: bool,
    /// The last coding of the last `Transfer-Encoding` field was `chunked`.
    chunked_last: bool,
    /// The `Content-Length` value, or why the values are invalid (an error only without
    /// `Transfer-Encoding`, which overrides them).
    length: Result<Option<u64>, &'static str>,
}

impl Default for FramingScan {
    fn default() -> Self {
        Self {
            close: false,
            simple_connection: true,
            transfer_encoding: false,
            chunked_last: false,
            length: Ok(None),
        }
    }
}

impl FramingScan {
    /// Takes one field into account; returns whether it is a `Connection` field.
    fn observe(&mut self, name: &[u8], value: &[u8]) -> bool {
        if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                    self.simple_connection = false;
                }
            }
            return true;
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
            let last = value.rsplit(|&b| b == b',').next().unwrap_or(&[]);
            self.chunked_last = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"content-length") {
            self.observe_length(value);
        }
        false
    }

    fn observe_length(&mut self, value: &[u8]) {
        let Ok(previous) = self.length else {
            return;
        };
        let mut length = previous;
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            let parsed = (!part.is_empty() && part.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(part).ok()?.parse::<u64>().ok())
                .flatten();
            let Some(n) = parsed else {
                self.length = Err("invalid Content-Length");
                return;
            };
            if length.is_some_and(|previous| previous != n) {
                self.length = Err("conflicting Content-Length values");
                return;
            }
            length = Some(n);
        }
        self.length = Ok(length);
    }

    /// The body framing and whether the connection stays open; drops a `Content-Length` that
    /// `Transfer-Encoding` overrides from `headers`.
    fn framing(
        &self,
        headers: &mut HeaderMap,
        status: StatusCode,
        version: Version,
        is_head: bool,
    ) -> Result<(Framing, bool), H1Error> {
        let keep_alive = version == Version::HTTP_11 && !self.close;
        if is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok((Framing::Empty, keep_alive));
        }
        if self.transfer_encoding {
            // Transfer-Encoding overrides Content-Length, which must then go (§6.3, item 3).
            headers.remove(header::CONTENT_LENGTH);
            return Ok(if self.chunked_last {
                (Framing::Chunked, keep_alive)
            } else {
                (Framing::UntilClose, false)
            });
        }
        Ok(match self.length.map_err(H1Error::Protocol)? {
            Some(n) => (Framing::Length(n), keep_alive),
            None => (Framing::UntilClose, false),
        })
    }
}

#[cfg(test)]
mod tests;
