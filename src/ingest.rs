//! Push ingest: the rules of an encoder's handshake (Icecast 2.4's, which
//! FFmpeg, libshout clients and Liquidsoap expect) and the chunked-body
//! decoder.
//!
//! An encoder sends `PUT /mount` (FFmpeg, Liquidsoap) or `SOURCE /mount`
//! (libshout), HTTP Basic credentials of the source role, a content type,
//! often `Expect: 100-continue`, `ice-*` headers describing the stream, and
//! then the stream as the body until it ends — raw, or chunked (Liquidsoap
//! with `chunked=true`; Icecast 2.4 does not decode those, ringcast does).
//!
//! The shard answers the handshake ([`Accepted::response`]); from then on
//! the socket is read by the stream's source thread (`source.rs`), never by
//! a shard.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use crate::config::{FramerKind, StreamInfo};
use crate::http::{self, Request};

/// What a handshake accepted: how to answer and how to read the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The encoder asked `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The body is chunked.
    pub chunked: bool,
    /// The content type (SOURCE without one: `audio/mpeg`, as Icecast).
    pub content_type: String,
    /// What the `ice-*` headers said.
    pub info: StreamInfo,
    /// A WebSocket publisher (`/CHANNEL/KEY/publish`): the body is masked
    /// client messages.
    pub websocket: bool,
}

impl Accepted {
    /// The bytes that accept the source: Icecast 2.4.4 answers
    /// `Expect: 100-continue` with a `100 Continue` and at once the final
    /// `200 OK`, then reads the body; FFmpeg, libshout and Liquidsoap all
    /// accept that order.
    pub fn response(&self) -> &'static [u8] {
        if self.expect_continue {
            b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\nHTTP/1.0 200 OK\r\n\r\n"
        } else {
            b"HTTP/1.0 200 OK\r\n\r\n"
        }
    }
}

/// Why a handshake was refused, each with Icecast's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials (libshout's probe) or wrong ones: 401 with
    /// `WWW-Authenticate`.
    Unauthorized,
    /// Another source feeds the mount: 403 "Mountpoint in use".
    InUse,
    /// PUT without a content type: 403.
    NoContentType,
    /// A content type the mount's framer does not cut: 403.
    UnsupportedContentType,
    /// The mount is not a push mount: 405.
    NotPushMount,
}

impl Refusal {
    /// The response.
    pub fn response(self) -> Vec<u8> {
        match self {
            Refusal::Unauthorized => http::simple_response(
                401,
                "Authorization Required",
                "WWW-Authenticate: Basic realm=\"ringcast\"\r\n",
                "you need to authenticate\n",
            ),
            Refusal::InUse => http::simple_response(403, "Forbidden", "", "Mountpoint in use\n"),
            Refusal::NoContentType => {
                http::simple_response(403, "Forbidden", "", "No Content-type given\n")
            }
            Refusal::UnsupportedContentType => {
                http::simple_response(403, "Forbidden", "", "Content-type not supported\n")
            }
            Refusal::NotPushMount => http::simple_response(
                405,
                "Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                "this mount does not take a source\n",
            ),
        }
    }

    /// A word for the log.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Unauthorized => "unauthorized",
            Refusal::InUse => "mount in use",
            Refusal::NoContentType => "no content type",
            Refusal::UnsupportedContentType => "unsupported content type",
            Refusal::NotPushMount => "not a push mount",
        }
    }
}

/// True when a framer cuts streams of `content_type` (parameters ignored).
pub fn supports(framer: FramerKind, content_type: &str) -> bool {
    let t = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match framer {
        FramerKind::Raw => true,
        FramerKind::Mp3 => matches!(
            t.as_str(),
            "audio/mpeg" | "audio/mp3" | "audio/mpeg3" | "audio/x-mpeg" | "audio/x-mp3"
        ),
        FramerKind::Aac => matches!(
            t.as_str(),
            "audio/aac" | "audio/aacp" | "audio/x-aac" | "audio/mp4a-latm" | "audio/x-hx-aac-adts"
        ),
        FramerKind::Ogg => matches!(
            t.as_str(),
            "application/ogg"
                | "audio/ogg"
                | "video/ogg"
                | "audio/opus"
                | "audio/x-ogg"
                | "audio/vorbis"
        ),
    }
}

/// Check the parts of a source request that need no credentials: the
/// method's content-type rule and the framer.
pub fn check(req: &Request, framer: FramerKind) -> Result<Accepted, Refusal> {
    let content_type = match (req.header("content-type"), req.method) {
        (Some(t), _) if !t.is_empty() => http::sanitize(t),
        (_, http::Method::Source) => "audio/mpeg".to_string(),
        _ => return Err(Refusal::NoContentType),
    };
    if !supports(framer, &content_type) {
        return Err(Refusal::UnsupportedContentType);
    }
    let expect_continue = req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    Ok(Accepted {
        expect_continue,
        chunked,
        content_type,
        info: ice_info(req),
        websocket: false,
    })
}

/// The `ice-*` headers as the listeners' `icy-*` (sanitised; `ice-password`
/// is never read). `ice-bitrate`, or `bitrate=` inside `ice-audio-info`,
/// gives the bitrate.
pub fn ice_info(req: &Request) -> StreamInfo {
    let text = |name: &str| {
        req.header(name)
            .map(|v| http::sanitize(v).chars().take(256).collect::<String>())
            .filter(|v| !v.is_empty())
    };
    let bitrate = text("ice-bitrate")
        .or_else(|| text("icy-br"))
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| {
            text("ice-audio-info").and_then(|info| {
                info.split(';').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    (k.trim().eq_ignore_ascii_case("bitrate") || k.trim() == "ice-bitrate")
                        .then(|| v.trim().parse().ok())
                        .flatten()
                })
            })
        });
    StreamInfo {
        name: text("ice-name").or_else(|| text("icy-name")),
        description: text("ice-description").or_else(|| text("icy-description")),
        genre: text("ice-genre").or_else(|| text("icy-genre")),
        url: text("ice-url").or_else(|| text("icy-url")),
        bitrate,
        public: text("ice-public")
            .or_else(|| text("icy-pub"))
            .map(|v| v.trim() == "1" || v.trim().eq_ignore_ascii_case("true")),
    }
}

/// A source connection handed from a shard to the stream's source thread.
#[derive(Debug)]
pub struct PushConn {
    /// The socket (the shard's glommio stream closed its own descriptor).
    pub fd: OwnedFd,
    /// Body bytes that came with the request head.
    pub leftover: Vec<u8>,
    /// What the handshake accepted.
    pub accepted: Accepted,
    /// The encoder's address, for logs.
    pub peer: SocketAddr,
    /// The user it authenticated as, for logs.
    pub user: String,
}

/// A chunked body went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError;

/// An incremental decoder of `Transfer-Encoding: chunked`.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    /// Hex digits of the size line so far.
    size: u64,
    /// Bytes of the current chunk still to come.
    left: u64,
    /// The size line had at least one digit.
    digits: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size.
    #[default]
    Size,
    /// After the size: an extension up to CRLF.
    Extension,
    /// The LF of the size line.
    SizeLf,
    /// Chunk data.
    Data,
    /// The CR after the data.
    DataCr,
    /// The LF after the data.
    DataLf,
    /// After the last chunk: trailers up to an empty line.
    Trailer,
    /// The body is complete.
    Done,
}

impl Chunked {
    /// A decoder at the start of a body.
    pub fn new() -> Chunked {
        Chunked::default()
    }

    /// True once the last (empty) chunk and the trailers have been read.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decode `input`, appending the body bytes to `out`. Errors on a
    /// malformed size line or a missing CRLF.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(d))
                            .filter(|s| *s <= 1 << 40)
                            .ok_or(ChunkError)?;
                        self.digits = true;
                        i += 1;
                    }
                    b';' | b' ' | b'\t' if self.digits => {
                        self.state = ChunkState::Extension;
                        i += 1;
                    }
                    b'\r' if self.digits => {
                        self.state = ChunkState::SizeLf;
                        i += 1;
                    }
                    b'\n' if self.digits => {
                        self.end_size_line();
                        i += 1;
                    }
                    _ => return Err(ChunkError),
                },
                ChunkState::Extension => {
                    if b == b'\n' {
                        self.end_size_line();
                    }
                    i += 1;
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError);
                    }
                    self.end_size_line();
                    i += 1;
                }
                ChunkState::Data => {
                    let take = (self.left as usize).min(input.len() - i);
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    self.left -= take as u64;
                    if self.left == 0 {
                        self.state = ChunkState::DataCr;
                    }
                }
                ChunkState::DataCr => {
                    self.state = match b {
                        b'\r' => ChunkState::DataLf,
                        b'\n' => ChunkState::Size,
                        _ => return Err(ChunkError),
                    };
                    i += 1;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError);
                    }
                    self.state = ChunkState::Size;
                    i += 1;
                }
                ChunkState::Trailer => {
                    // Trailer lines until an empty one: count line lengths
                    // in `size`.
                    match b {
                        b'\n' if self.size == 0 => self.state = ChunkState::Done,
                        b'\n' => self.size = 0,
                        b'\r' => {}
                        _ => self.size += 1,
                    }
                    i += 1;
                }
                ChunkState::Done => return Ok(()),
            }
        }
        Ok(())
    }

    fn end_size_line(&mut self) {
        if self.size == 0 {
            self.state = ChunkState::Trailer;
        } else {
            self.left = self.size;
            self.state = ChunkState::Data;
        }
        self.size = 0;
        self.digits = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, Parse};
    use proptest::prelude::*;

    fn req(text: &str) -> Request {
        match parse_request(text.as_bytes()).unwrap() {
            Parse::Complete(r) => r,
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn icecast_content_type_rules() {
        let put = req("PUT /m HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(check(&put, FramerKind::Mp3), Err(Refusal::NoContentType));
        let source = req("SOURCE /m HTTP/1.0\r\n\r\n");
        let a = check(&source, FramerKind::Mp3).unwrap();
        assert_eq!(a.content_type, "audio/mpeg");
        assert!(!a.expect_continue);
        let ogg = req("PUT /m HTTP/1.1\r\nContent-Type: application/ogg\r\n\r\n");
        assert_eq!(
            check(&ogg, FramerKind::Mp3),
            Err(Refusal::UnsupportedContentType)
        );
        assert!(check(&ogg, FramerKind::Ogg).is_ok());
        let ok = req("PUT /m HTTP/1.1\r\nContent-Type: audio/mpeg; charset=x\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n");
        let a = check(&ok, FramerKind::Mp3).unwrap();
        assert!(a.expect_continue && a.chunked);
        assert!(std::str::from_utf8(a.response())
            .unwrap()
            .starts_with("HTTP/1.1 100 Continue\r\n"));
        let r = String::from_utf8(Refusal::Unauthorized.response()).unwrap();
        assert!(r.starts_with("HTTP/1.1 401 ") && r.contains("WWW-Authenticate: Basic realm="));
        assert!(String::from_utf8(Refusal::InUse.response())
            .unwrap()
            .contains("Mountpoint in use"));
    }

    #[test]
    fn ice_headers_become_stream_info_sanitised_and_without_the_password() {
        let r = req(concat!(
            "SOURCE /m HTTP/1.0\r\n",
            "ice-name: My\t Radio\r\n",
            "ice-genre: Jazz\r\n",
            "ice-url: http://example.org\r\n",
            "ice-description: Late night\r\n",
            "ice-public: 1\r\n",
            "ice-audio-info: samplerate=44100;bitrate=128;channels=2\r\n",
            "ice-password: hackme\r\n\r\n"
        ));
        let info = ice_info(&r);
        assert_eq!(info.name.as_deref(), Some("My Radio"));
        assert_eq!(info.genre.as_deref(), Some("Jazz"));
        assert_eq!(info.url.as_deref(), Some("http://example.org"));
        assert_eq!(info.description.as_deref(), Some("Late night"));
        assert_eq!(info.bitrate, Some(128));
        assert_eq!(info.public, Some(true));
        assert!(!format!("{info:?}").contains("hackme"));
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let body =
            b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: y\r\n\r\n";
        for split in 0..body.len() {
            let mut d = Chunked::new();
            let mut out = Vec::new();
            d.decode(&body[..split], &mut out).unwrap();
            d.decode(&body[split..], &mut out).unwrap();
            assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
            assert!(d.done(), "split {split}");
        }
        // Liquidsoap writes upper-case hex.
        let mut d = Chunked::new();
        let mut out = Vec::new();
        d.decode(b"1A\r\nabcdefghijklmnopqrstuvwxyz\r\n", &mut out)
            .unwrap();
        assert_eq!(out.len(), 26);
        assert!(Chunked::new().decode(b"zz\r\n", &mut Vec::new()).is_err());
        assert!(Chunked::new().decode(b"2\r\nabX", &mut Vec::new()).is_err());
    }

    proptest! {
        #[test]
        fn the_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = Chunked::new();
            let _ = d.decode(&data, &mut Vec::new());
        }

        #[test]
        fn encode_then_decode(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..10)) {
            let mut enc = Vec::new();
            for c in &chunks {
                enc.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                enc.extend_from_slice(c);
                enc.extend_from_slice(b"\r\n");
            }
            enc.extend_from_slice(b"0\r\n\r\n");
            let mut d = Chunked::new();
            let mut out = Vec::new();
            for b in enc.chunks(3) {
                d.decode(b, &mut out).unwrap();
            }
            prop_assert!(d.done());
            prop_assert_eq!(out, chunks.concat());
        }
    }
}
