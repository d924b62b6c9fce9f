//! WebSocket (RFC 6455), the client side loadgen needs: the opening handshake (a random
//! `Sec-WebSocket-Key`, the `Sec-WebSocket-Accept` it must get back), a streaming parser
//! of the server's frames, and the masked control frames a client sends (pong, close).
//!
//! A server's frames are never masked (§5.1); their payload length is 0..=125 in the
//! second byte, or 126 and 16 bits, or 127 and 64 bits (§5.2), always the shortest form.
//! A message is one frame with FIN set, or a first frame without FIN and continuation
//! frames up to one with FIN; control frames (close, ping, pong) carry at most 125 bytes,
//! are never fragmented, and may come between the fragments of a message.

use base64::Engine as _;

/// The GUID of RFC 6455 §1.3.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Opcodes.
pub mod op {
    /// Continuation of a fragmented message.
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

/// Largest payload of one frame accepted (a media frame per message; 16 MiB as the frame
/// checker's limit).
pub const MAX_PAYLOAD: u64 = 16 << 20;

/// The `Sec-WebSocket-Key` for 16 random bytes.
pub fn key(raw: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// 16 bytes for key (or mask) number `n` of a run whose random seed is `seed`, mixed
/// (so consecutive numbers give unrelated bytes).
pub fn key_bytes(seed: u64, n: u64) -> [u8; 16] {
    let a = splitmix64(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let b = splitmix64(a ^ seed.rotate_left(17));
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with.
pub fn accept(key: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(h.digest().bytes())
}

/// The upgrade request for `path` on `host` with `key`.
pub fn request(path: &str, host: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: loadgen/{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{host}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// Why a `101` response does not complete the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The status is not 101.
    Status(u16),
    /// No `Upgrade: websocket`.
    Upgrade,
    /// No `Connection: Upgrade`.
    Connection,
    /// No `Sec-WebSocket-Accept`, or not the one the key asks for.
    Accept,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Status(s) => write!(f, "WebSocket handshake answered {s}, not 101"),
            HandshakeError::Upgrade => write!(f, "101 without Upgrade: websocket"),
            HandshakeError::Connection => write!(f, "101 without Connection: Upgrade"),
            HandshakeError::Accept => write!(f, "wrong or missing Sec-WebSocket-Accept"),
        }
    }
}

/// Checks a response head (`head`: its bytes, `status`: its code) against `key`.
pub fn check_handshake(head: &[u8], status: u16, key: &str) -> Result<(), HandshakeError> {
    if status != 101 {
        return Err(HandshakeError::Status(status));
    }
    let has_token = |name: &str, token: &str| {
        crate::http::header_values(head, name).any(|v| {
            v.split(|&c| c == b',')
                .any(|t| crate::http::trim(t).eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    if !has_token("upgrade", "websocket") {
        return Err(HandshakeError::Upgrade);
    }
    if !has_token("connection", "upgrade") {
        return Err(HandshakeError::Connection);
    }
    let want = accept(key);
    let mut values = crate::http::header_values(head, "sec-websocket-accept");
    match (values.next(), values.next()) {
        (Some(v), None) if v == want.as_bytes() => Ok(()),
        _ => Err(HandshakeError::Accept),
    }
}

/// A masked client frame (FIN set) of `opcode` with `payload` (at most 125 bytes: control
/// frames), masked with `mask`.
pub fn masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + payload.len());
    v.push(0x80 | (opcode & 0x0F));
    let n = payload.len();
    if n < 126 {
        v.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        v.push(0x80 | 126);
        v.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(n as u64).to_be_bytes());
    }
    v.extend_from_slice(&mask);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    v
}

/// A server frame that breaks the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsError {
    /// The server masked a frame (§5.1: it must not).
    Masked,
    /// RSV1-3 set without an extension.
    Reserved,
    /// An opcode RFC 6455 does not define.
    BadOpcode(u8),
    /// A control frame with FIN clear or more than 125 bytes.
    BadControl,
    /// A length not in its shortest form, or with the top bit set.
    BadLength,
    /// A payload larger than [`MAX_PAYLOAD`].
    TooBig(u64),
    /// A continuation frame without a message to continue, or a new data frame inside
    /// a fragmented message.
    Fragmentation,
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::Masked => write!(f, "masked server frame"),
            WsError::Reserved => write!(f, "reserved bits set"),
            WsError::BadOpcode(o) => write!(f, "undefined opcode {o:#x}"),
            WsError::BadControl => write!(f, "fragmented or oversized control frame"),
            WsError::BadLength => write!(f, "payload length not in its shortest form"),
            WsError::TooBig(n) => write!(f, "frame of {n} bytes"),
            WsError::Fragmentation => write!(f, "bad fragmentation"),
        }
    }
}

/// What the parser reports.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent<'a> {
    /// A data message begins (`opcode`: TEXT or BINARY).
    MessageStart(u8),
    /// Payload bytes of the current data message (any split).
    Data(&'a [u8]),
    /// The current data message is complete.
    MessageEnd,
    /// A whole ping with its payload.
    Ping(&'a [u8]),
    /// A whole pong.
    Pong,
    /// A whole close: its status code, if it has one.
    Close(Option<u16>),
    /// A frame header: `bytes` of it (2 to 10), counted as framing overhead.
    Header(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// Collecting a frame header into `hdr[..have]`.
    Header,
    /// Inside a data frame's payload.
    Data,
    /// Inside a control frame's payload (collected into `ctrl`).
    Control,
    /// After a protocol error: nothing more is parsed.
    Broken,
}

/// A streaming parser of server frames; fixed-size state (about 160 bytes).
#[derive(Clone, Debug)]
pub struct WsParser {
    st: St,
    hdr: [u8; 10],
    have: u8,
    /// The frame's opcode and FIN bit.
    opcode: u8,
    fin: bool,
    /// Payload bytes of the current frame still to come.
    left: u64,
    /// Inside a fragmented data message (its first frame had FIN clear).
    in_message: bool,
    ctrl: [u8; 125],
    ctrl_len: u8,
}

impl Default for WsParser {
    fn default() -> Self {
        Self::new()
    }
}

impl WsParser {
    /// A parser at the start of the server's frames.
    pub fn new() -> Self {
        WsParser {
            st: St::Header,
            hdr: [0; 10],
            have: 0,
            opcode: 0,
            fin: false,
            left: 0,
            in_message: false,
            ctrl: [0; 125],
            ctrl_len: 0,
        }
    }

    /// True when the parser stopped inside a frame or a fragmented message.
    pub fn mid_message(&self) -> bool {
        self.in_message || self.have > 0 || matches!(self.st, St::Data | St::Control)
    }

    /// Consumes `data`; on a protocol error returns it (and parses nothing more).
    pub fn feed(&mut self, mut data: &[u8], on: &mut impl FnMut(WsEvent)) -> Result<(), WsError> {
        while !data.is_empty() {
            match self.st {
                St::Broken => return Ok(()),
                St::Header => {
                    let need = self.header_len();
                    let n = (need - self.have as usize).min(data.len());
                    let h = self.have as usize;
                    self.hdr[h..h + n].copy_from_slice(&data[..n]);
                    self.have += n as u8;
                    data = &data[n..];
                    if self.have == 2 {
                        // The first two bytes say how long the header is.
                        if let Err(e) = self.check_first() {
                            self.st = St::Broken;
                            return Err(e);
                        }
                    }
                    if (self.have as usize) == self.header_len() {
                        if let Err(e) = self.start_frame(on) {
                            self.st = St::Broken;
                            return Err(e);
                        }
                    }
                }
                St::Data => {
                    let n = (self.left.min(data.len() as u64)) as usize;
                    on(WsEvent::Data(&data[..n]));
                    data = &data[n..];
                    self.left -= n as u64;
                    if self.left == 0 {
                        self.end_data(on);
                    }
                }
                St::Control => {
                    let n = (self.left.min(data.len() as u64)) as usize;
                    let at = self.ctrl_len as usize;
                    self.ctrl[at..at + n].copy_from_slice(&data[..n]);
                    self.ctrl_len += n as u8;
                    data = &data[n..];
                    self.left -= n as u64;
                    if self.left == 0 {
                        self.end_control(on);
                    }
                }
            }
        }
        Ok(())
    }

    /// The whole header's length, once two bytes are known (2 before that).
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        match self.hdr[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        }
    }

    fn check_first(&self) -> Result<(), WsError> {
        let b0 = self.hdr[0];
        let b1 = self.hdr[1];
        if b1 & 0x80 != 0 {
            return Err(WsError::Masked);
        }
        if b0 & 0x70 != 0 {
            return Err(WsError::Reserved);
        }
        let opcode = b0 & 0x0F;
        if !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
            return Err(WsError::BadOpcode(opcode));
        }
        if opcode >= 0x8 && (b0 & 0x80 == 0 || b1 & 0x7F > 125) {
            return Err(WsError::BadControl);
        }
        Ok(())
    }

    fn start_frame(&mut self, on: &mut impl FnMut(WsEvent)) -> Result<(), WsError> {
        let fin = self.hdr[0] & 0x80 != 0;
        let opcode = self.hdr[0] & 0x0F;
        let len = match self.hdr[1] & 0x7F {
            126 => {
                let n = u16::from_be_bytes([self.hdr[2], self.hdr[3]]) as u64;
                if n < 126 {
                    return Err(WsError::BadLength);
                }
                n
            }
            127 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&self.hdr[2..10]);
                let n = u64::from_be_bytes(a);
                if n >> 63 != 0 || n <= 0xFFFF {
                    return Err(WsError::BadLength);
                }
                n
            }
            n => n as u64,
        };
        if len > MAX_PAYLOAD {
            return Err(WsError::TooBig(len));
        }
        let header = self.have;
        self.have = 0;
        self.fin = fin;
        self.opcode = opcode;
        self.left = len;
        on(WsEvent::Header(header));
        if opcode >= 0x8 {
            self.ctrl_len = 0;
            self.st = St::Control;
            if len == 0 {
                self.end_control(on);
            }
            return Ok(());
        }
        match (opcode, self.in_message) {
            (op::CONTINUATION, false) => return Err(WsError::Fragmentation),
            (op::CONTINUATION, true) => {}
            (_, true) => return Err(WsError::Fragmentation),
            (o, false) => {
                self.in_message = true;
                on(WsEvent::MessageStart(o));
            }
        }
        self.st = St::Data;
        if len == 0 {
            self.end_data(on);
        }
        Ok(())
    }

    fn end_data(&mut self, on: &mut impl FnMut(WsEvent)) {
        self.st = St::Header;
        if self.fin {
            self.in_message = false;
            on(WsEvent::MessageEnd);
        }
    }

    fn end_control(&mut self, on: &mut impl FnMut(WsEvent)) {
        self.st = St::Header;
        let p = &self.ctrl[..self.ctrl_len as usize];
        match self.opcode {
            op::PING => on(WsEvent::Ping(p)),
            op::PONG => on(WsEvent::Pong),
            _ => on(WsEvent::Close(
                (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]])),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An unmasked server frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![if fin { 0x80 } else { 0 } | opcode];
        let n = payload.len();
        if n < 126 {
            v.push(n as u8);
        } else if n <= 0xFFFF {
            v.push(126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            v.push(127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    #[derive(Debug, Default, PartialEq, Clone)]
    struct Seen {
        messages: Vec<(u8, Vec<u8>)>,
        pings: Vec<Vec<u8>>,
        pongs: u32,
        closes: Vec<Option<u16>>,
        header_bytes: u64,
    }

    fn parse(data: &[u8], cuts: &[usize]) -> (Seen, Result<(), WsError>) {
        let mut p = WsParser::new();
        let mut s = Seen::default();
        let mut cur: Option<(u8, Vec<u8>)> = None;
        let mut r = Ok(());
        {
            let mut on = |e: WsEvent| match e {
                WsEvent::MessageStart(o) => cur = Some((o, Vec::new())),
                WsEvent::Data(d) => cur.as_mut().unwrap().1.extend_from_slice(d),
                WsEvent::MessageEnd => s.messages.push(cur.take().unwrap()),
                WsEvent::Ping(p) => s.pings.push(p.to_vec()),
                WsEvent::Pong => s.pongs += 1,
                WsEvent::Close(c) => s.closes.push(c),
                WsEvent::Header(n) => s.header_bytes += n as u64,
            };
            let mut at = 0;
            for &c in cuts.iter().chain(std::iter::once(&data.len())) {
                let c = c.clamp(at, data.len());
                if let Err(e) = p.feed(&data[at..c], &mut on) {
                    r = Err(e);
                    break;
                }
                at = c;
            }
        }
        (s, r)
    }

    #[test]
    fn the_rfc_example_accept() {
        assert_eq!(
            accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let k = key(key_bytes(1, 2));
        assert_eq!(k.len(), 24);
        assert_ne!(k, key(key_bytes(1, 3)));
    }

    #[test]
    fn handshake_checks() {
        let k = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(check_handshake(good, 101, k), Ok(()));
        assert_eq!(
            check_handshake(good, 200, k),
            Err(HandshakeError::Status(200))
        );
        assert_eq!(
            check_handshake(good, 101, "AAAAAAAAAAAAAAAAAAAAAA=="),
            Err(HandshakeError::Accept)
        );
        let no_upgrade = b"HTTP/1.1 101 X\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(
            check_handshake(no_upgrade, 101, k),
            Err(HandshakeError::Upgrade)
        );
        let tokens = b"HTTP/1.1 101 X\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\nsec-websocket-accept:s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(check_handshake(tokens, 101, k), Ok(()));
    }

    #[test]
    fn lengths_of_every_form() {
        let mut data = Vec::new();
        let payloads: Vec<Vec<u8>> = [0usize, 1, 125, 126, 1000, 65535, 65536, 70000]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7) as u8).collect())
            .collect();
        for p in &payloads {
            data.extend(frame(true, op::BINARY, p));
        }
        let (s, r) = parse(&data, &[]);
        assert_eq!(r, Ok(()));
        assert_eq!(s.messages.len(), payloads.len());
        for (m, p) in s.messages.iter().zip(&payloads) {
            assert_eq!(m, &(op::BINARY, p.clone()));
        }
        // 2 + 2 + 2 + 4 + 4 + 4 + 10 + 10
        assert_eq!(s.header_bytes, 38);
    }

    #[test]
    fn control_frames_and_fragments() {
        let mut data = frame(false, op::BINARY, b"hel");
        data.extend(frame(true, op::PING, b"are you there"));
        data.extend(frame(false, op::CONTINUATION, b"lo "));
        data.extend(frame(true, op::PONG, b""));
        data.extend(frame(true, op::CONTINUATION, b"world"));
        data.extend(frame(true, op::TEXT, b"t"));
        data.extend(frame(true, op::CLOSE, &1001u16.to_be_bytes()));
        data.extend(frame(true, op::CLOSE, b""));
        let (s, r) = parse(&data, &[]);
        assert_eq!(r, Ok(()));
        assert_eq!(
            s.messages,
            vec![
                (op::BINARY, b"hello world".to_vec()),
                (op::TEXT, b"t".to_vec())
            ]
        );
        assert_eq!(s.pings, vec![b"are you there".to_vec()]);
        assert_eq!(s.pongs, 1);
        assert_eq!(s.closes, vec![Some(1001), None]);
    }

    #[test]
    fn protocol_errors() {
        let err = |d: &[u8]| parse(d, &[]).1;
        let mut masked = frame(true, op::BINARY, b"x");
        masked[1] |= 0x80;
        assert_eq!(err(&masked), Err(WsError::Masked));
        assert_eq!(err(&[0xC2, 0]), Err(WsError::Reserved));
        assert_eq!(err(&[0x83, 0]), Err(WsError::BadOpcode(3)));
        assert_eq!(err(&[0x09, 0]), Err(WsError::BadControl));
        assert_eq!(err(&[0x89, 126, 0, 200]), Err(WsError::BadControl));
        assert_eq!(err(&[0x82, 126, 0, 5]), Err(WsError::BadLength));
        assert_eq!(
            err(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(WsError::BadLength)
        );
        assert_eq!(
            err(&[0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0]),
            Err(WsError::TooBig(1 << 28))
        );
        assert_eq!(
            err(&frame(true, op::CONTINUATION, b"x")),
            Err(WsError::Fragmentation)
        );
        let mut two = frame(false, op::BINARY, b"a");
        two.extend(frame(true, op::BINARY, b"b"));
        assert_eq!(err(&two), Err(WsError::Fragmentation));
    }

    #[test]
    fn masked_client_frames_unmask() {
        let f = masked_frame(op::PONG, b"abcdef", [9, 8, 7, 6]);
        assert_eq!(f[0], 0x8A);
        assert_eq!(f[1], 0x80 | 6);
        let un: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [9u8, 8, 7, 6][i % 4])
            .collect();
        assert_eq!(un, b"abcdef");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// A stream of messages (some fragmented, with pings between), cut at arbitrary
        /// read boundaries, parses exactly as uncut.
        #[test]
        fn fragmented_reads(
            sizes in proptest::collection::vec(0usize..70_000, 1..6),
            pings in proptest::collection::vec(0usize..126, 0..4),
            cuts in proptest::collection::vec(0usize..400_000, 0..50),
            split in any::<bool>(),
        ) {
            let mut data = Vec::new();
            let mut want = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                let p: Vec<u8> = (0..n).map(|j| (j + i) as u8).collect();
                if split && n > 2 {
                    data.extend(frame(false, op::BINARY, &p[..n / 2]));
                    if let Some(&k) = pings.get(i) {
                        data.extend(frame(true, op::PING, &vec![i as u8; k]));
                    }
                    data.extend(frame(true, op::CONTINUATION, &p[n / 2..]));
                } else {
                    data.extend(frame(true, op::BINARY, &p));
                    if let Some(&k) = pings.get(i) {
                        data.extend(frame(true, op::PING, &vec![i as u8; k]));
                    }
                }
                want.push((op::BINARY, p));
            }
            let mut cuts = cuts;
            cuts.sort_unstable();
            let (whole, r0) = parse(&data, &[]);
            let (cut, r1) = parse(&data, &cuts);
            prop_assert_eq!(r0, Ok(()));
            prop_assert_eq!(r1, Ok(()));
            prop_assert_eq!(&whole.messages, &want);
            prop_assert_eq!(&whole, &cut);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..500)) {
            let _ = parse(&data, &[1, 7, 40]);
        }
    }
}
