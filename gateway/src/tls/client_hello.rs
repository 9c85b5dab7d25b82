//! Reads a TLS ClientHello far enough to learn the SNI name, keeping every byte read so the
//! connection can be handed, unchanged, to rustls (termination) or to a backend (passthrough).

use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest ClientHello message accepted (a record's worth: post-quantum key shares make
/// hellos of a few KiB, far below it).
const MAX_HELLO: usize = 16 * 1024;

/// The most bytes read before the hello is complete (its records' headers included).
const MAX_READ: usize = 2 * MAX_HELLO;

/// What was read.
#[derive(Debug)]
pub(crate) struct PeekedHello {
    /// Every byte read from the connection so far.
    pub(crate) bytes: Vec<u8>,
    /// The SNI host name, lower case, if the client sent one.
    pub(crate) sni: Option<String>,
}

/// Why a ClientHello could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HelloError {
    /// The connection failed or closed early.
    #[error("reading the ClientHello: {0}")]
    Io(#[from] std::io::Error),
    /// Not a TLS handshake, or malformed.
    #[error("not a TLS ClientHello: {0}")]
    Malformed(&'static str),
}

/// Reads the ClientHello from `stream`: the handshake message may span several records
/// (RFC 8446 §5.1 lets a client fragment it), which are reassembled.
pub(crate) async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<PeekedHello, HelloError> {
    let mut bytes = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    // The handshake bytes of the records read so far, and where the next record starts.
    let mut handshake = Vec::new();
    let mut next_record = 0;
    loop {
        while let Some(header) = bytes.get(next_record..next_record + 5) {
            if header[0] != 22 {
                return Err(HelloError::Malformed("record is not a handshake"));
            }
            let record_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if record_len == 0 || record_len > MAX_HELLO {
                return Err(HelloError::Malformed("bad record length"));
            }
            let Some(body) = bytes.get(next_record + 5..next_record + 5 + record_len) else {
                break;
            };
            handshake.extend_from_slice(body);
            next_record += 5 + record_len;
            if let [_, a, b, c, ..] = handshake[..] {
                let message_len =
                    4 + ((usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c));
                if message_len > MAX_HELLO {
                    return Err(HelloError::Malformed("ClientHello too long"));
                }
                if let Some(message) = handshake.get(..message_len) {
                    let sni = parse_sni(message)?;
                    return Ok(PeekedHello { bytes, sni });
                }
            }
        }
        if bytes.len() >= MAX_READ {
            return Err(HelloError::Malformed("ClientHello too long"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HelloError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// Extracts the server_name extension from a handshake record body.
pub(crate) fn parse_sni(record: &[u8]) -> Result<Option<String>, HelloError> {
    let mut r = Reader { buf: record };
    if r.u8()? != 1 {
        return Err(HelloError::Malformed("handshake is not a ClientHello"));
    }
    let len = r.u24()?;
    let mut hello = Reader { buf: r.take(len)? };
    hello.take(2 + 32)?; // legacy_version, random
    let n = usize::from(hello.u8()?);
    hello.take(n)?; // session id
    let n = usize::from(hello.u16()?);
    hello.take(n)?; // cipher suites
    let n = usize::from(hello.u8()?);
    hello.take(n)?; // compression methods
    if hello.buf.is_empty() {
        return Ok(None);
    }
    let n = usize::from(hello.u16()?);
    let mut extensions = Reader {
        buf: hello.take(n)?,
    };
    while !extensions.buf.is_empty() {
        let kind = extensions.u16()?;
        let n = usize::from(extensions.u16()?);
        let data = extensions.take(n)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader { buf: data };
        let n = usize::from(list.u16()?);
        let mut names = Reader { buf: list.take(n)? };
        while !names.buf.is_empty() {
            let name_type = names.u8()?;
            let n = usize::from(names.u16()?);
            let name = names.take(n)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name)
                    .map_err(|_| HelloError::Malformed("SNI is not UTF-8"))?;
                return Ok(Some(name.trim_end_matches('.').to_ascii_lowercase()));
            }
        }
    }
    Ok(None)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HelloError> {
        if self.buf.len() < n {
            return Err(HelloError::Malformed("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, HelloError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, HelloError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Result<usize, HelloError> {
        let b = self.take(3)?;
        Ok((usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Captures a real ClientHello produced by rustls for `name`.
    fn hello_for(name: &str) -> Vec<u8> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn reads_sni_from_a_real_client_hello_split_in_pieces() {
        let hello = hello_for("Abc.Example.com");
        let (mut client, mut server) = tokio::io::duplex(64);
        let sent = hello.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in sent.chunks(7) {
                client.write_all(piece).await.unwrap();
            }
            client.write_all(b"trailing").await.unwrap();
        });
        let peeked = read_client_hello(&mut server).await.unwrap();
        assert_eq!(peeked.sni.as_deref(), Some("abc.example.com"));
        assert!(peeked.bytes.starts_with(&hello));
    }

    #[tokio::test]
    async fn reassembles_a_client_hello_fragmented_over_several_records() {
        let hello = hello_for("frag.example.com");
        // Re-frame the one record's handshake bytes as records of at most 100 bytes.
        let message = &hello[5..];
        let mut fragmented = Vec::new();
        for piece in message.chunks(100) {
            fragmented.extend_from_slice(&[22, 3, 1]);
            fragmented.extend_from_slice(&u16::try_from(piece.len()).unwrap().to_be_bytes());
            fragmented.extend_from_slice(piece);
        }
        assert!(message.len() > 200, "several records");
        let mut input: &[u8] = &fragmented;
        let peeked = read_client_hello(&mut input).await.unwrap();
        assert_eq!(peeked.sni.as_deref(), Some("frag.example.com"));
        assert_eq!(
            peeked.bytes, fragmented,
            "every byte kept for the handshake"
        );
    }

    #[tokio::test]
    async fn rejects_an_endless_or_empty_record_stream() {
        // A handshake message that claims 1 MiB.
        let mut input: &[u8] = &[22, 3, 1, 0, 4, 1, 0x10, 0, 0];
        assert!(matches!(
            read_client_hello(&mut input).await,
            Err(HelloError::Malformed("ClientHello too long"))
        ));
        // An empty record.
        let mut input: &[u8] = &[22, 3, 1, 0, 0];
        assert!(matches!(
            read_client_hello(&mut input).await,
            Err(HelloError::Malformed("bad record length"))
        ));
    }

    #[tokio::test]
    async fn rejects_plain_http() {
        let mut input: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(
            read_client_hello(&mut input).await,
            Err(HelloError::Malformed(_))
        ));
    }
}
