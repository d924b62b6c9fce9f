//! HTTP: read and parse a request head with a size limit, and the bytes of
//! every response ringcast sends.
//!
//! ringcast answers GET with `200` and the stream, HEAD with the same headers
//! and no body, any other method with `405`, and a malformed request with
//! `400`. A request head larger than [`MAX_REQUEST_BYTES`] gets `431`; one
//! that does not arrive within the header timeout gets `408`. The stream's
//! body is delimited by connection close (no chunking), as Icecast does and as
//! HTTP/1.1 allows.

/// Largest request head accepted.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Most headers parsed.
const MAX_HEADERS: usize = 64;

/// Request methods ringcast serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Send the stream.
    Get,
    /// Send the headers only.
    Head,
    /// An encoder pushes a stream (FFmpeg, Liquidsoap; Icecast 2.4 style).
    Put,
    /// An encoder pushes a stream (libshout's legacy method).
    Source,
    /// A CORS preflight.
    Options,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// Path without the query string.
    pub path: String,
    /// Query string (after '?'), possibly empty.
    pub query: String,
    /// HTTP minor version (0 or 1).
    pub minor_version: u8,
    /// Bytes the head took (a body or pipelined data may follow).
    pub head_len: usize,
    /// The headers as sent (name, value), values trimmed.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request is refused; each maps to one status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// Not HTTP, or broken syntax → 400.
    Malformed,
    /// A method other than GET/HEAD → 405.
    MethodNotAllowed,
    /// Head larger than the limit → 431.
    TooLarge,
}

/// Outcome of parsing what has arrived so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// A whole head.
    Complete(Request),
    /// Need more bytes (not an error).
    Partial,
}

/// Parse the bytes received so far.
pub fn parse_request(buf: &[u8]) -> Result<Parse, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(head_len)) => {
            let method = match req.method {
                Some("GET") => Method::Get,
                Some("HEAD") => Method::Head,
                Some("PUT") => Method::Put,
                Some("SOURCE") => Method::Source,
                Some("OPTIONS") => Method::Options,
                Some(_) => return Err(RequestError::MethodNotAllowed),
                None => return Err(RequestError::Malformed),
            };
            let target = req.path.ok_or(RequestError::Malformed)?;
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p, q),
                None => (target, ""),
            };
            // Absolute-form targets (proxies) are reduced to their path.
            let path = if let Some(rest) = path.strip_prefix("http://") {
                rest.find('/').map(|i| &rest[i..]).unwrap_or("/")
            } else {
                path
            };
            if !path.starts_with('/') && path != "*" {
                return Err(RequestError::Malformed);
            }
            let headers = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).trim().to_string(),
                    )
                })
                .collect();
            Ok(Parse::Complete(Request {
                method,
                path: path.to_string(),
                query: query.to_string(),
                minor_version: req.version.unwrap_or(1),
                head_len,
                headers,
            }))
        }
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_REQUEST_BYTES {
                Err(RequestError::TooLarge)
            } else {
                Ok(Parse::Partial)
            }
        }
        Err(httparse::Error::TooManyHeaders) => Err(RequestError::TooLarge),
        Err(_) => Err(RequestError::Malformed),
    }
}

/// The response head for a stream.
pub fn stream_head(minor_version: u8, content_type: &str) -> Vec<u8> {
    stream_head_with(minor_version, content_type, &HeadExtras::default())
}

/// What a stream's response head says besides its content type.
#[derive(Debug, Default, Clone)]
pub struct HeadExtras<'a> {
    /// `icy-metaint` (the listener asked for in-band titles).
    pub metaint: Option<usize>,
    /// The `icy-*` description of the stream.
    pub info: Option<&'a crate::config::StreamInfo>,
    /// `Access-Control-Allow-Origin` (and the exposed `icy-*` headers).
    pub cors_origin: Option<&'a str>,
    /// Extra headers (name, value).
    pub extra: &'a [(String, String)],
}

/// Response headers a browser may read across origins.
pub const EXPOSED_HEADERS: &str =
    "icy-metaint, icy-name, icy-genre, icy-url, icy-description, icy-br, icy-pub, Content-Type";

/// The response head for a stream, with its `icy-*`, CORS and extra
/// headers. Every value is stripped of control characters.
pub fn stream_head_with(minor_version: u8, content_type: &str, x: &HeadExtras<'_>) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut h = String::with_capacity(512);
    h.push_str(if minor_version == 0 {
        "HTTP/1.0 200 OK\r\n"
    } else {
        "HTTP/1.1 200 OK\r\n"
    });
    let _ = write!(h, "Content-Type: {}\r\n", sanitize(content_type));
    if let Some(info) = x.info {
        let mut line = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                let _ = write!(h, "{name}: {}\r\n", sanitize(v));
            }
        };
        line("icy-name", &info.name);
        line("icy-description", &info.description);
        line("icy-genre", &info.genre);
        line("icy-url", &info.url);
        if let Some(br) = info.bitrate {
            let _ = write!(h, "icy-br: {br}\r\n");
        }
        if let Some(p) = info.public {
            let _ = write!(h, "icy-pub: {}\r\n", u8::from(p));
        }
    }
    if let Some(m) = x.metaint {
        let _ = write!(h, "icy-metaint: {m}\r\n");
    }
    if let Some(origin) = x.cors_origin {
        let _ = write!(
            h,
            "Access-Control-Allow-Origin: {}\r\nAccess-Control-Expose-Headers: {EXPOSED_HEADERS}\r\n",
            sanitize(origin)
        );
    }
    for (name, value) in x.extra {
        let _ = write!(h, "{}: {}\r\n", sanitize(name), sanitize(value));
    }
    let _ = write!(
        h,
        "Cache-Control: no-cache, no-store\r\nConnection: close\r\nX-Content-Type-Options: nosniff\r\nServer: ringcast/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    h.into_bytes()
}

/// The answer to a CORS preflight (`OPTIONS`) for a stream.
pub fn preflight_response(origin: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: {}\r\nAccess-Control-Allow-Methods: GET, HEAD, OPTIONS\r\nAccess-Control-Allow-Headers: Icy-MetaData, Range, Content-Type\r\nAccess-Control-Expose-Headers: {EXPOSED_HEADERS}\r\nAccess-Control-Max-Age: 86400\r\nContent-Length: 0\r\nConnection: close\r\nServer: ringcast/{}\r\n\r\n",
        sanitize(origin),
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// A complete short response (status line, headers, text body).
pub fn simple_response(status: u16, reason: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}Server: ringcast/{}\r\n\r\n{body}",
        body.len(),
        env!("CARGO_PKG_VERSION"),
    )
    .into_bytes()
}

/// The response for a refused request.
pub fn error_response(err: RequestError) -> Vec<u8> {
    match err {
        RequestError::Malformed => simple_response(400, "Bad Request", "", "bad request\n"),
        RequestError::MethodNotAllowed => simple_response(
            405,
            "Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "method not allowed\n",
        ),
        RequestError::TooLarge => simple_response(
            431,
            "Request Header Fields Too Large",
            "",
            "request header too large\n",
        ),
    }
}

/// The response when the request head did not arrive in time.
pub fn timeout_response() -> Vec<u8> {
    simple_response(408, "Request Timeout", "", "request header timeout\n")
}

/// The response for an unknown path.
pub fn not_found_response() -> Vec<u8> {
    simple_response(404, "Not Found", "", "no such stream\n")
}

/// The response for a mount whose (push or relay) source is not there and
/// that has no fallback delivering.
pub fn not_live_response() -> Vec<u8> {
    simple_response(404, "Not Found", "", "the stream is not live\n")
}

/// The response when a client limit is reached.
pub fn unavailable_response() -> Vec<u8> {
    simple_response(
        503,
        "Service Unavailable",
        "Retry-After: 5\r\n",
        "too many listeners\n",
    )
}

/// Header values come from configuration or from encoders; keep CR/LF and
/// other control characters out of the response.
pub fn sanitize(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

/// The value of `key` in a query string (`a=1&b=x+y`), percent-decoded to
/// bytes (a title may be Latin-1); `+` is a space, a bad escape stays as it is.
pub fn query_bytes(query: &str, key: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k, true) == key.as_bytes()).then(|| decode(v, true))
    })
}

/// [`query_bytes`] as text (invalid UTF-8 replaced).
pub fn query_text(query: &str, key: &str) -> Option<String> {
    query_bytes(query, key).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Percent-decode a URL part (RFC 3986: `%XX` to its byte; a `+` stays a
/// `+`, as in a URL's user and password).
pub fn percent_decode(s: &str) -> Vec<u8> {
    decode(s, false)
}

/// `%XX` to its byte, and with `plus_is_space` (query strings, as forms and
/// Icecast's source clients write them) `+` to a space.
fn decode(s: &str, plus_is_space: bool) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn get_and_head() {
        let r = parse_request(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\nrest").unwrap();
        assert_eq!(
            r,
            Parse::Complete(Request {
                method: Method::Get,
                path: "/a".into(),
                query: "b=1".into(),
                minor_version: 1,
                head_len: 32,
                headers: vec![("Host".into(), "x".into())],
            })
        );
        match parse_request(b"HEAD / HTTP/1.0\r\n\r\n").unwrap() {
            Parse::Complete(r) => {
                assert_eq!(r.method, Method::Head);
                assert_eq!(r.minor_version, 0);
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn push_methods_and_headers() {
        let r = parse_request(
            b"PUT /live.mp3 HTTP/1.1\r\nAuthorization: Basic eDp5\r\nContent-Type:  audio/mpeg \r\nExpect: 100-continue\r\n\r\nbody",
        )
        .unwrap();
        let Parse::Complete(r) = r else { panic!() };
        assert_eq!(r.method, Method::Put);
        assert_eq!(r.header("content-type"), Some("audio/mpeg"));
        assert_eq!(r.header("EXPECT"), Some("100-continue"));
        assert_eq!(r.header("x-none"), None);
        let Parse::Complete(r) = parse_request(b"SOURCE /m HTTP/1.0\r\n\r\n").unwrap() else {
            panic!()
        };
        assert_eq!(r.method, Method::Source);
    }

    #[test]
    fn partial_and_errors() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHo").unwrap(),
            Parse::Partial
        );
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\n\r\n"),
            Err(RequestError::MethodNotAllowed)
        );
        assert_eq!(
            parse_request(b"\x16\x03\x01garbage\r\n\r\n"),
            Err(RequestError::Malformed)
        );
        assert_eq!(
            parse_request(b"GET nopath HTTP/1.1\r\n\r\n"),
            Err(RequestError::Malformed)
        );
        let big = vec![b'a'; MAX_REQUEST_BYTES];
        let mut req = b"GET /".to_vec();
        req.extend_from_slice(&big);
        assert_eq!(parse_request(&req), Err(RequestError::TooLarge));
    }

    #[test]
    fn heads_are_well_formed() {
        let h = String::from_utf8(stream_head(1, "audio/mpeg\r\nX: y")).unwrap();
        assert!(h.starts_with("HTTP/1.1 200 OK\r\nContent-Type: audio/mpegX: y\r\n"));
        assert!(h.ends_with("\r\n\r\n"));
        let r = String::from_utf8(error_response(RequestError::Malformed)).unwrap();
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(r.ends_with("\r\n\r\nbad request\n"));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_request(&data);
        }
    }
}
