//! A minimal RFC 6455 WebSocket implementation for the echo backend and tests: the handshake
//! accept key and frame encoding/decoding (text, binary, ping/pong, close; no extensions,
//! no fragmentation on send, fragments of a message reassembled on receive).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The GUID of RFC 6455 §1.3.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest message accepted (bounds memory per connection).
const MAX_MESSAGE: usize = 1 << 20;

/// A complete WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Binary(Vec<u8>),
    /// Ping with payload.
    Ping(Vec<u8>),
    /// Pong with payload.
    Pong(Vec<u8>),
    /// Close.
    Close,
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64(digest.as_ref())
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Writes one message as a single frame; clients must mask (`mask = Some(key)`).
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    message: &Message,
    mask: Option<[u8; 4]>,
) -> std::io::Result<()> {
    let (opcode, payload): (u8, &[u8]) = match message {
        Message::Text(t) => (1, t.as_bytes()),
        Message::Binary(b) => (2, b),
        Message::Close => (8, &[]),
        Message::Ping(p) => (9, p),
        Message::Pong(p) => (10, p),
    };
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    w.write_all(&frame).await?;
    w.flush().await
}

/// Reads the next complete message; `None` at end of stream.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Message>> {
    let mut message: Vec<u8> = Vec::new();
    let mut message_opcode = 0u8;
    loop {
        let mut head = [0u8; 2];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7f {
            126 => u64::from(r.read_u16().await?),
            127 => r.read_u64().await?,
            n => u64::from(n),
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= MAX_MESSAGE)
            .ok_or_else(|| invalid("frame too large"))?;
        let mut key = [0u8; 4];
        if masked {
            r.read_exact(&mut key).await?;
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        match opcode {
            8 => return Ok(Some(Message::Close)),
            9 => return Ok(Some(Message::Ping(payload))),
            10 => return Ok(Some(Message::Pong(payload))),
            0..=2 => {
                if opcode != 0 {
                    message_opcode = opcode;
                }
                if message.len() + payload.len() > MAX_MESSAGE {
                    return Err(invalid("message too large"));
                }
                message.extend_from_slice(&payload);
                if fin {
                    return Ok(Some(if message_opcode == 1 {
                        Message::Text(
                            String::from_utf8(message)
                                .map_err(|_| invalid("text frame is not UTF-8"))?,
                        )
                    } else {
                        Message::Binary(message)
                    }));
                }
            }
            _ => return Err(invalid("unknown opcode")),
        }
    }
}

fn invalid(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[tokio::test]
    async fn frames_round_trip_masked_and_unmasked() {
        for mask in [None, Some([1, 2, 3, 4])] {
            for message in [
                Message::Text("héllo".into()),
                Message::Binary(vec![0, 1, 2, 255]),
                Message::Binary(vec![7; 70_000]),
                Message::Close,
            ] {
                let mut wire = Vec::new();
                write_message(&mut wire, &message, mask).await.unwrap();
                let mut reader: &[u8] = &wire;
                assert_eq!(read_message(&mut reader).await.unwrap(), Some(message));
            }
        }
    }
}
