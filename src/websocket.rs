//! WebSocket (RFC 6455) as ringcast speaks it: the opening handshake, the
//! header of each binary message it sends (one whole frame of the stream per
//! message: the header is one more iovec in the listener's send), and the
//! frames a client sends (masked, small: ping, pong, close; a publisher's
//! binary messages).
//!
//! The seed-004 URL scheme (`/CHANNEL/KEY/receive`, `/CHANNEL/KEY/publish`,
//! `receive-clear-cache`, `probe`) is parsed here too.

use base64::Engine as _;

/// The GUID of RFC 6455 §1.3.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Longest message header: 2 bytes, 8 of length (server frames are not
/// masked).
pub const MAX_HEADER: usize = 10;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.digest().bytes())
}

/// Why a handshake is refused (each answered 400 with a reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not `Upgrade: websocket` with `Connection: Upgrade`.
    NotUpgrade,
    /// `Sec-WebSocket-Version` is not 13.
    Version,
    /// No (or a malformed) `Sec-WebSocket-Key`.
    Key,
}

impl HandshakeError {
    /// A word for the log and the response.
    pub fn name(self) -> &'static str {
        match self {
            HandshakeError::NotUpgrade => "not a WebSocket upgrade",
            HandshakeError::Version => "unsupported Sec-WebSocket-Version (13 only)",
            HandshakeError::Key => "missing or bad Sec-WebSocket-Key",
        }
    }
}

/// The answer to a refused handshake: 400 with the reason, and for a
/// version other than 13 the version this server speaks (RFC 6455 4.4).
pub fn refusal(e: HandshakeError) -> Vec<u8> {
    let extra = match e {
        HandshakeError::Version => "Sec-WebSocket-Version: 13\r\n",
        _ => "",
    };
    crate::http::simple_response(400, "Bad Request", extra, &format!("{}\n", e.name()))
}

/// True when the request asks for a WebSocket (`Upgrade: websocket`).
pub fn wants_upgrade(req: &crate::http::Request) -> bool {
    req.header("upgrade").is_some_and(|u| {
        u.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
    })
}

/// Check an upgrade request; the accept key on success.
pub fn check_handshake(req: &crate::http::Request) -> Result<String, HandshakeError> {
    let connection_upgrade = req.header("connection").is_some_and(|c| {
        c.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !wants_upgrade(req) || !connection_upgrade || req.method != crate::http::Method::Get {
        return Err(HandshakeError::NotUpgrade);
    }
    if req.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(HandshakeError::Version);
    }
    let key = req.header("sec-websocket-key").ok_or(HandshakeError::Key)?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|_| HandshakeError::Key)?;
    if raw.len() != 16 {
        return Err(HandshakeError::Key);
    }
    Ok(accept_key(key))
}

/// The `101 Switching Protocols` head (with extra header lines, CRLF each).
pub fn switching_head(accept: &str, extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}Server: ringcast/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// Opcodes.
pub mod op {
    /// Continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// Text message.
    pub const TEXT: u8 = 0x1;
    /// Binary message.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// The header of a final, unmasked server frame of `len` payload bytes:
/// written into `out`, its length returned.
pub fn header(opcode: u8, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    out[0] = 0x80 | (opcode & 0x0F);
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= 0xFFFF {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A whole server frame (for control frames and small messages).
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = [0u8; MAX_HEADER];
    let n = header(opcode, payload.len(), &mut h);
    let mut v = Vec::with_capacity(n + payload.len());
    v.extend_from_slice(&h[..n]);
    v.extend_from_slice(payload);
    v
}

/// A close frame with a status code.
pub fn close_frame(code: u16) -> Vec<u8> {
    frame(op::CLOSE, &code.to_be_bytes())
}

/// A frame a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    /// FIN bit.
    pub fin: bool,
    /// The opcode.
    pub opcode: u8,
    /// The unmasked payload.
    pub payload: Vec<u8>,
}

/// A client frame that breaks the protocol; the connection is closed with
/// this status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// 1002: unmasked client frame, reserved bits, bad opcode, fragmented or
    /// long control frame.
    Protocol,
    /// 1009: a message larger than allowed.
    TooBig,
}

impl ProtocolError {
    /// The close status code.
    pub fn code(self) -> u16 {
        match self {
            ProtocolError::Protocol => 1002,
            ProtocolError::TooBig => 1009,
        }
    }
}

/// Parse one client frame at the start of `buf`: `Ok(None)` when more bytes
/// are needed, `Ok(Some((frame, consumed)))`, or an error. `max` bounds a
/// frame's payload.
pub fn parse_client_frame(
    buf: &[u8],
    max: usize,
) -> Result<Option<(ClientFrame, usize)>, ProtocolError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    if buf[0] & 0x70 != 0 {
        return Err(ProtocolError::Protocol);
    }
    let opcode = buf[0] & 0x0F;
    if !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
        return Err(ProtocolError::Protocol);
    }
    if buf[1] & 0x80 == 0 {
        // RFC 6455 §5.1: a server must close on an unmasked client frame.
        return Err(ProtocolError::Protocol);
    }
    let (len, mut at) = match buf[1] & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            (
                u64::from_be_bytes(buf[2..10].try_into().unwrap_or([0; 8])),
                10,
            )
        }
        n => (n as u64, 2),
    };
    if opcode >= 0x8 && (!fin || len > 125) {
        return Err(ProtocolError::Protocol);
    }
    if len > max as u64 {
        return Err(ProtocolError::TooBig);
    }
    let len = len as usize;
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let payload: Vec<u8> = buf[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok(Some((
        ClientFrame {
            fin,
            opcode,
            payload,
        },
        at + len,
    )))
}

/// What a seed-004 path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelPath {
    /// `/CHANNEL/KEY/publish`.
    Publish { channel: String, key: String },
    /// `/CHANNEL/KEY/receive` (`clear_cache`: `receive-clear-cache`, no
    /// burst of cached frames).
    Receive {
        channel: String,
        key: String,
        clear_cache: bool,
    },
    /// `/CHANNEL/KEY/probe`: is the channel live?
    Probe { channel: String, key: String },
}

/// True for a channel or key name: `[a-z0-9_-]`, 1 to 128 characters.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Parse `/CHANNEL/KEY/KIND`; `None` when the path is not of that shape.
/// `Err` names the part that breaks the character and length rules.
pub fn parse_channel_path(path: &str) -> Option<Result<ChannelPath, &'static str>> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [channel, key, kind] = parts.as_slice() else {
        return None;
    };
    if !matches!(
        *kind,
        "publish" | "receive" | "receive-clear-cache" | "probe"
    ) {
        return None;
    }
    if !valid_name(channel) {
        return Some(Err("channel names are [a-z0-9_-], 1 to 128 characters"));
    }
    if !valid_name(key) {
        return Some(Err("keys are [a-z0-9_-], 1 to 128 characters"));
    }
    let (channel, key) = (channel.to_string(), key.to_string());
    Some(Ok(match *kind {
        "publish" => ChannelPath::Publish { channel, key },
        "probe" => ChannelPath::Probe { channel, key },
        k => ChannelPath::Receive {
            channel,
            key,
            clear_cache: k == "receive-clear-cache",
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_wrong_version_is_told_the_one_spoken() {
        let r = String::from_utf8(refusal(HandshakeError::Version)).unwrap();
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
        assert!(r.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{r}");
        let r = String::from_utf8(refusal(HandshakeError::Key)).unwrap();
        assert!(!r.contains("Sec-WebSocket-Version"), "{r}");
        assert!(r.ends_with("missing or bad Sec-WebSocket-Key\n"), "{r}");
    }

    #[test]
    fn the_rfc_example_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn headers_by_length() {
        let mut h = [0u8; MAX_HEADER];
        assert_eq!(header(op::BINARY, 125, &mut h), 2);
        assert_eq!(&h[..2], &[0x82, 125]);
        assert_eq!(header(op::BINARY, 1000, &mut h), 4);
        assert_eq!(&h[..4], &[0x82, 126, 0x03, 0xE8]);
        assert_eq!(header(op::BINARY, 70000, &mut h), 10);
        assert_eq!(&h[..2], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(h[2..10].try_into().unwrap()), 70000);
    }

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut v = vec![if fin { 0x80 } else { 0 } | opcode];
        if payload.len() < 126 {
            v.push(0x80 | payload.len() as u8);
        } else {
            v.push(0x80 | 126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        v
    }

    #[test]
    fn client_frames() {
        let f = masked(op::PING, true, b"hi");
        let (frame, n) = parse_client_frame(&f, 1 << 20).unwrap().unwrap();
        assert_eq!(
            (frame.opcode, frame.payload.as_slice(), n),
            (op::PING, &b"hi"[..], f.len())
        );
        assert_eq!(parse_client_frame(&f[..3], 1 << 20), Ok(None));
        // Unmasked: a protocol error.
        let mut unmasked = f.clone();
        unmasked[1] &= 0x7F;
        assert_eq!(
            parse_client_frame(&unmasked, 1 << 20),
            Err(ProtocolError::Protocol)
        );
        // Too big.
        let big = masked(op::BINARY, true, &[0u8; 300]);
        assert_eq!(parse_client_frame(&big, 200), Err(ProtocolError::TooBig));
        // A fragmented ping.
        assert_eq!(
            parse_client_frame(&masked(op::PING, false, b""), 100),
            Err(ProtocolError::Protocol)
        );
        // A reserved opcode.
        assert_eq!(
            parse_client_frame(&masked(0x3, true, b""), 100),
            Err(ProtocolError::Protocol)
        );
    }

    #[test]
    fn channel_paths() {
        assert_eq!(
            parse_channel_path("/radio/k1/receive"),
            Some(Ok(ChannelPath::Receive {
                channel: "radio".into(),
                key: "k1".into(),
                clear_cache: false
            }))
        );
        assert!(matches!(
            parse_channel_path("/radio/k1/publish"),
            Some(Ok(ChannelPath::Publish { .. }))
        ));
        assert!(matches!(
            parse_channel_path("/radio/k1/receive-clear-cache"),
            Some(Ok(ChannelPath::Receive {
                clear_cache: true,
                ..
            }))
        ));
        assert!(parse_channel_path("/Radio/k/receive").unwrap().is_err());
        assert!(parse_channel_path(&format!("/{}/k/probe", "a".repeat(129)))
            .unwrap()
            .is_err());
        assert_eq!(parse_channel_path("/live.mp3"), None);
        assert_eq!(parse_channel_path("/a/b/c"), None);
    }

    proptest! {
        #[test]
        fn parsing_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_client_frame(&data, 1 << 16);
        }
    }
}
