//! Response parsing and body decoding of the lean HTTP/1.1 client.

use super::*;

fn parse(input: &[u8], is_head: bool) -> Result<Option<ResponseStart>, H1Error> {
    let mut buf = BytesMut::from(input);
    parse_response(&mut buf, is_head)
}

/// Decodes a body given in pieces; returns the data, the trailers and whether it ended.
fn decode_all(
    state: BodyState,
    pieces: &[&[u8]],
) -> io::Result<(Vec<u8>, Option<HeaderMap>, bool)> {
    let mut state = state;
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut trailers = None;
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match decode(&mut state, &mut buf)? {
                Some(Decoded::Data(bytes)) => data.extend_from_slice(&bytes),
                Some(Decoded::Trailers(map)) => trailers = Some(map),
                Some(Decoded::End) => return Ok((data, trailers, true)),
                None => break,
            }
            if state == BodyState::Done {
                return Ok((data, trailers, true));
            }
        }
    }
    Ok((data, trailers, false))
}

#[test]
fn content_length_response() {
    let start = parse(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nok\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!(start.head.status, StatusCode::OK);
    assert_eq!(start.framing, Framing::Length(3));
    assert!(start.keep_alive);
    assert_eq!(start.head.headers["x-a"], "b");
}

#[test]
fn partial_head_needs_more() {
    assert!(
        parse(b"HTTP/1.1 200 OK\r\nContent-Le", false)
            .unwrap()
            .is_none()
    );
}

#[test]
fn interim_responses_are_skipped() {
    let start = parse(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!(start.head.status, StatusCode::NO_CONTENT);
    assert_eq!(start.framing, Framing::Empty);
}

#[test]
fn framing_rules() {
    for (input, is_head, framing, keep_alive) in [
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"[..],
            true,
            Framing::Empty,
            true,
        ),
        (
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            false,
            Framing::Empty,
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            false,
            Framing::Chunked,
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            false,
            Framing::UntilClose,
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\n\r\n",
            false,
            Framing::UntilClose,
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nConnection: close\r\n\r\n",
            false,
            Framing::Length(2),
            false,
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
            false,
            Framing::Length(2),
            false,
        ),
    ] {
        let start = parse(input, is_head).unwrap().unwrap();
        assert_eq!(start.framing, framing, "{}", String::from_utf8_lossy(input));
        assert_eq!(
            start.keep_alive,
            keep_alive,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    let chunked = parse(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert!(!chunked.head.headers.contains_key(header::CONTENT_LENGTH));
}

#[test]
fn connection_field_listing_only_keep_alive_or_close_is_left_out() {
    let start = parse(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\nX-A: b\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert!(!start.head.headers.contains_key(header::CONNECTION));
    assert_eq!(start.head.headers["x-a"], "b");
    assert!(start.keep_alive);

    let close = parse(
        b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert!(!close.head.headers.contains_key(header::CONNECTION));
    assert!(!close.keep_alive);

    // A field that lists another header stays, so the proxy can strip what it names.
    let listed = parse(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!(listed.head.headers[header::CONNECTION], "keep-alive, x-hop");
    assert!(listed.keep_alive);
}

#[test]
fn content_length_with_transfer_encoding_is_not_validated() {
    let start = parse(
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!(start.framing, Framing::Chunked);
    assert!(!start.head.headers.contains_key(header::CONTENT_LENGTH));
}

#[test]
fn bad_heads_are_errors() {
    for input in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"garbage\r\n\r\n",
    ] {
        assert!(
            parse(input, false).is_err(),
            "{}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn length_body_in_pieces() {
    let (data, _, ended) = decode_all(BodyState::Length(5), &[b"he", b"llo"]).unwrap();
    assert_eq!(data, b"hello");
    assert!(ended);
}

#[test]
fn chunked_body_split_anywhere() {
    let wire: &[u8] =
        b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 42\r\n\r\n";
    for split in 0..wire.len() {
        let (data, trailers, ended) =
            decode_all(BodyState::ChunkSize, &[&wire[..split], &wire[split..]]).unwrap();
        assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "split at {split}");
        assert!(ended, "split at {split}");
        assert_eq!(trailers.unwrap()["x-sum"], "42");
    }
}

#[test]
fn chunked_body_without_trailers() {
    let (data, trailers, ended) =
        decode_all(BodyState::ChunkSize, &[b"2\r\nok\r\n0\r\n\r\n"]).unwrap();
    assert_eq!(data, b"ok");
    assert!(ended);
    assert!(trailers.is_none());
}

#[test]
fn bad_chunks_are_errors() {
    for wire in [&b"zz\r\n"[..], b"2\r\nokX\r\n", b"11111111111111111\r\n"] {
        assert!(
            decode_all(BodyState::ChunkSize, &[wire]).is_err(),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn lean_requests_only() {
    let get = Request::get("/")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    assert!(is_lean_request(&get));
    let post = Request::post("/")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    assert!(!is_lean_request(&post));
    let with_body = Request::get("/")
        .body(http_body_util::Full::new(Bytes::from_static(b"x")))
        .unwrap();
    assert!(!is_lean_request(&with_body));
}
