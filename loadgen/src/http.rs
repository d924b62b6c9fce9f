//! The little HTTP/1.1 client side loadgen needs: URLs, the GET request, the response
//! head, and the three ways a response body can be delimited (connection close,
//! Content-Length, chunked).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// One `http://host:port/path` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// Where to connect (the first address the host resolves to).
    pub addr: SocketAddr,
    /// The complete GET request for this URL.
    pub request: Vec<u8>,
    /// The request path (with its query).
    pub path: String,
    /// The authority (`host:port` as given), for `Host:`.
    pub host: String,
}

/// Parses `http://host[:port][/path]` (or `ws://`, the same on the wire until the
/// upgrade). Only plain http is supported.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| format!("--url {url}: only http:// (and ws://) URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("--url {url}: no host"));
    }
    let with_port = if authority.starts_with('[') {
        if authority.contains("]:") {
            authority.to_string()
        } else {
            format!("{authority}:80")
        }
    } else if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("--url {url}: cannot resolve {with_port}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {url}: {with_port} resolves to no address"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: loadgen/{}\r\nAccept: */*\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    Ok(Target {
        url: url.to_string(),
        addr,
        request,
        path: path.to_string(),
        host: authority.to_string(),
    })
}

/// The same GET request as HTTP/1.0: `request`'s request line with its version
/// replaced (the headers stay; HTTP/1.0 allows `Host`). Returns `request` unchanged when
/// its first line does not end in `HTTP/1.1`.
pub fn http10_request(request: &[u8]) -> Vec<u8> {
    let mut out = request.to_vec();
    if let Some(eol) = request.windows(2).position(|w| w == b"\r\n") {
        if eol >= 8 && &request[eol - 8..eol] == b"HTTP/1.1" {
            out[eol - 1] = b'0';
        }
    }
    out
}

/// How the response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No length: the body runs until the server closes (ringcast, streamserve).
    UntilClose,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, blank line included: where the body starts.
    pub len: usize,
    /// The status code.
    pub status: u16,
    /// How the body is delimited.
    pub body: BodyKind,
}

/// Why a response head was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The status line is not `HTTP/1.x NNN ...`.
    BadStatusLine,
    /// A header line has no colon, or a Content-Length is not a number.
    BadHeader,
    /// No blank line within the limit.
    TooLarge,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::BadStatusLine => write!(f, "malformed status line"),
            HeadError::BadHeader => write!(f, "malformed response header"),
            HeadError::TooLarge => write!(f, "response head too large"),
        }
    }
}

/// Largest response head accepted.
pub const MAX_HEAD: usize = 8192;

/// Parses a response head at the start of `b`. `Ok(None)` = need more bytes.
pub fn parse_head(b: &[u8]) -> Result<Option<Head>, HeadError> {
    let Some(end) = find_head_end(b) else {
        if b.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        return Ok(None);
    };
    let text = &b[..end];
    let mut lines = text
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().ok_or(HeadError::BadStatusLine)?;
    let status = parse_status_line(status_line)?;
    let mut body = BodyKind::UntilClose;
    let mut chunked = false;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let colon = line
            .iter()
            .position(|&c| c == b':')
            .ok_or(HeadError::BadHeader)?;
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let s = std::str::from_utf8(value).map_err(|_| HeadError::BadHeader)?;
            let n: u64 = s.parse().map_err(|_| HeadError::BadHeader)?;
            body = BodyKind::Length(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let lower = value.to_ascii_lowercase();
            if lower.windows(7).any(|w| w == b"chunked") {
                chunked = true;
            }
        }
    }
    if chunked {
        // RFC 9112 6.3: chunked wins over Content-Length.
        body = BodyKind::Chunked;
    }
    if status == 204 || status == 304 || (100..200).contains(&status) {
        body = BodyKind::Length(0);
    }
    Ok(Some(Head {
        len: end,
        status,
        body,
    }))
}

/// The values of every header `name` (case-insensitive) in a response head's bytes,
/// trimmed; the status line is skipped.
pub fn header_values<'a>(head: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    let end = find_head_end(head).unwrap_or(head.len());
    head[..end]
        .split(|&c| c == b'\n')
        .skip(1)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter_map(move |l| {
            let colon = l.iter().position(|&c| c == b':')?;
            l[..colon]
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| trim(&l[colon + 1..]))
        })
}

/// The `icy-metaint` of a response head: None when absent, Err when not a number.
pub fn icy_metaint(head: &[u8]) -> Result<Option<u32>, HeadError> {
    match header_values(head, "icy-metaint").next() {
        None => Ok(None),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .map(Some)
            .ok_or(HeadError::BadHeader),
    }
}

/// `request` with `line` (a header line without its CRLF) added before the blank line
/// that ends it.
pub fn with_header(request: &[u8], line: &str) -> Vec<u8> {
    let mut out = request.to_vec();
    if out.ends_with(b"\r\n\r\n") {
        out.truncate(out.len() - 2);
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
    }
    out
}

/// Strips spaces and tabs at both ends.
pub fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn parse_status_line(l: &[u8]) -> Result<u16, HeadError> {
    let rest = l.strip_prefix(b"HTTP/1.").ok_or(HeadError::BadStatusLine)?;
    if rest.len() < 5 || !rest[0].is_ascii_digit() || rest[1] != b' ' {
        return Err(HeadError::BadStatusLine);
    }
    let code = &rest[2..5];
    if !code.iter().all(u8::is_ascii_digit) || rest.get(5).is_some_and(|&c| c != b' ') {
        return Err(HeadError::BadStatusLine);
    }
    Ok(code.iter().fold(0u16, |a, &d| a * 10 + (d - b'0') as u16))
}

/// Index just past the blank line ending the head (`\r\n\r\n` or `\n\n`).
fn find_head_end(b: &[u8]) -> Option<usize> {
    let lim = b.len().min(MAX_HEAD);
    let b = &b[..lim];
    for i in 0..b.len() {
        if b[i] == b'\n' {
            if b.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
    }
    None
}

/// A streaming decoder for `Transfer-Encoding: chunked` with fixed-size state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chunked {
    state: ChunkState,
    /// Chunk size being parsed, or data bytes left in the current chunk.
    n: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of a chunk size.
    #[default]
    Size,
    /// After the size: extensions up to the end of the line.
    SizeExt,
    /// Inside chunk data.
    Data,
    /// Expecting the CR (or LF) after chunk data.
    DataEnd,
    /// Expecting the LF after the CR.
    DataLf,
    /// After the last chunk: trailer lines; `n` = bytes in the current line.
    Trailer,
    /// The body is complete.
    Done,
}

/// A chunked-encoding syntax error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkError;

impl Chunked {
    /// True once the last chunk and the trailer were read.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, passing body data to `out` without copying.
    pub fn feed(&mut self, input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<(), ChunkError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Done => return Ok(()),
                ChunkState::Size => {
                    let c = input[i];
                    i += 1;
                    match (c as char).to_digit(16) {
                        Some(d) => {
                            if self.n > (u64::MAX >> 8) {
                                return Err(ChunkError);
                            }
                            self.n = self.n * 16 + d as u64;
                        }
                        None if c == b';' || c == b' ' || c == b'\t' || c == b'\r' => {
                            self.state = ChunkState::SizeExt
                        }
                        None if c == b'\n' => self.end_size_line(),
                        None => return Err(ChunkError),
                    }
                }
                ChunkState::SizeExt => {
                    let c = input[i];
                    i += 1;
                    if c == b'\n' {
                        self.end_size_line();
                    }
                }
                ChunkState::Data => {
                    let take = (self.n.min((input.len() - i) as u64)) as usize;
                    out(&input[i..i + take]);
                    i += take;
                    self.n -= take as u64;
                    if self.n == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::DataEnd => {
                    let c = input[i];
                    i += 1;
                    match c {
                        b'\r' => self.state = ChunkState::DataLf,
                        b'\n' => self.state = ChunkState::Size,
                        _ => return Err(ChunkError),
                    }
                }
                ChunkState::DataLf => {
                    let c = input[i];
                    i += 1;
                    if c != b'\n' {
                        return Err(ChunkError);
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let c = input[i];
                    i += 1;
                    if c == b'\n' {
                        if self.n == 0 {
                            self.state = ChunkState::Done;
                        }
                        self.n = 0;
                    } else if c != b'\r' {
                        self.n += 1;
                    }
                }
            }
        }
        Ok(())
    }

    fn end_size_line(&mut self) {
        if self.n == 0 {
            self.state = ChunkState::Trailer;
        } else {
            self.state = ChunkState::Data;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http10_version_of_a_request() {
        let t = parse_url("http://127.0.0.1:8000/live.mp3").unwrap();
        let r = http10_request(&t.request);
        let text = String::from_utf8(r).unwrap();
        assert!(
            text.starts_with("GET /live.mp3 HTTP/1.0\r\nHost: 127.0.0.1:8000\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!(text.len(), t.request.len());
        // Anything else is left alone.
        assert_eq!(
            http10_request(b"GET / HTTP/1.0\r\n\r\n"),
            b"GET / HTTP/1.0\r\n\r\n"
        );
        assert_eq!(http10_request(b"junk"), b"junk");
    }

    #[test]
    fn header_lookup_and_additions() {
        let h = b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nicy-metaint: 16000\r\nX-A: 1\r\nx-a:  2 \r\n\r\nicy-metaint: 5";
        assert_eq!(icy_metaint(h), Ok(Some(16000)));
        let v: Vec<&[u8]> = header_values(h, "X-A").collect();
        assert_eq!(v, vec![&b"1"[..], &b"2"[..]]);
        assert_eq!(icy_metaint(b"HTTP/1.1 200 OK\r\n\r\n"), Ok(None));
        assert_eq!(
            icy_metaint(b"HTTP/1.1 200 OK\r\nIcy-MetaInt: x\r\n\r\n"),
            Err(HeadError::BadHeader)
        );
        let t = parse_url("http://127.0.0.1:8000/live").unwrap();
        let r = String::from_utf8(with_header(&t.request, "Icy-MetaData: 1")).unwrap();
        assert!(r.ends_with("Accept: */*\r\nIcy-MetaData: 1\r\n\r\n"), "{r}");
    }

    #[test]
    fn parses_ringcast_style_head() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\nBODY";
        let h = parse_head(r).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.body, BodyKind::UntilClose);
        assert_eq!(&r[h.len..], b"BODY");
    }

    #[test]
    fn incomplete_head_needs_more() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nX: y\r\n"), Ok(None));
    }

    #[test]
    fn length_and_chunked() {
        let h = parse_head(b"HTTP/1.0 200 OK\nContent-Length: 12\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, BodyKind::Length(12));
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, BodyKind::Chunked);
    }

    #[test]
    fn bad_heads() {
        assert_eq!(
            parse_head(b"HTTP/2 200 OK\r\n\r\n"),
            Err(HeadError::BadStatusLine)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n"),
            Err(HeadError::BadHeader)
        );
        assert_eq!(parse_head(&[b'a'; MAX_HEAD]), Err(HeadError::TooLarge));
        let h = parse_head(b"HTTP/1.1 404 Not Found\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 404);
    }

    #[test]
    fn chunked_decodes_at_any_split() {
        let enc = b"5;ext=1\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nX-T: 1\r\n\r\n";
        for cut in 0..enc.len() {
            let mut d = Chunked::default();
            let mut out = Vec::new();
            d.feed(&enc[..cut], &mut |b| out.extend_from_slice(b))
                .unwrap();
            d.feed(&enc[cut..], &mut |b| out.extend_from_slice(b))
                .unwrap();
            assert_eq!(out, b"hello world!", "cut {cut}");
            assert!(d.done());
        }
        let mut d = Chunked::default();
        assert_eq!(d.feed(b"zz\r\n", &mut |_| {}), Err(ChunkError));
    }

    #[test]
    fn url_parsing() {
        let t = parse_url("http://127.0.0.1:8000/live/a").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8000".parse().unwrap());
        assert!(t
            .request
            .starts_with(b"GET /live/a HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"));
        let t = parse_url("http://127.0.0.1:9").unwrap();
        assert!(t.request.starts_with(b"GET / HTTP/1.1"));
        assert!(parse_url("https://x/").is_err());
    }
}
