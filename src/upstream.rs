//! Relays: the HTTP client that pulls a stream from an upstream server
//! (another ringcast, Icecast, any HTTP progressive server), as Icecast's
//! relays do: `GET /mount` with `Icy-MetaData: 1`, following redirects,
//! answering a 401 with the relay role's credentials.
//!
//! It runs on the stream's source thread and blocks (with timeouts) only
//! there; once the response head is in, the socket is read like any other
//! source (`source.rs`), the chunked encoding and the inline metadata blocks
//! taken out on the way.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::config::{FramerKind, StreamInfo};
use crate::http;

/// Most redirects followed.
pub const MAX_REDIRECTS: usize = 5;
/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// An `http://` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80 when not given).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// `user:password` given in the URL.
    pub userinfo: Option<(String, String)>,
}

impl Url {
    /// Parse `http://[user:pass@]host[:port][/path]`.
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("HTTP://"))
            .ok_or_else(|| format!("{s:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                (Some((percent_decode(user), percent_decode(pass))), h)
            }
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: bad IPv6 address"))?;
            let port = after.strip_prefix(':').unwrap_or("");
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (hostport.to_string(), ""),
            }
        };
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        let port = if port.is_empty() {
            80
        } else {
            port.parse()
                .map_err(|_| format!("{s:?}: bad port {port:?}"))?
        };
        Ok(Url {
            host,
            port,
            path: path.to_string(),
            userinfo,
        })
    }

    /// `host:port` as a `Host` header (brackets for IPv6).
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The URL as text, without credentials (for logs and status).
    pub fn display(&self) -> String {
        format!("http://{}{}", self.host_header(), self.path)
    }

    /// Resolve a redirect's `Location` against this URL.
    fn join(&self, location: &str) -> Result<Url, String> {
        if location.starts_with("http://") || location.starts_with("HTTP://") {
            return Url::parse(location);
        }
        if location.contains("://") {
            return Err(format!(
                "redirect to {location:?}: only http:// is supported"
            ));
        }
        let mut u = self.clone();
        u.path = if location.starts_with('/') {
            location.to_string()
        } else {
            let base = self.path.rsplit_once('/').map_or("", |(b, _)| b);
            format!("{base}/{location}")
        };
        Ok(u)
    }
}

fn percent_decode(s: &str) -> String {
    String::from_utf8_lossy(&crate::http::percent_decode(s)).into_owned()
}

/// Why an upstream could not be used. Each is logged and counted by the
/// caller, then retried (the next upstream, then with backoff).
#[derive(Debug)]
pub enum UpstreamError {
    /// The connection failed (refused, unreachable, reset, timed out).
    Connect(io::Error),
    /// The response head did not come in time, or was not HTTP.
    BadResponse(String),
    /// A status other than 200 (after redirects and one authenticated try).
    Status(u16),
    /// More than [`MAX_REDIRECTS`] redirects, or a redirect loop.
    TooManyRedirects,
    /// The upstream serves another format than the mount's framer cuts.
    ContentType(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "cannot connect: {e}"),
            UpstreamError::BadResponse(why) => write!(f, "bad response: {why}"),
            UpstreamError::Status(s) => write!(f, "upstream answered {s}"),
            UpstreamError::TooManyRedirects => write!(f, "too many redirects"),
            UpstreamError::ContentType(t) => {
                write!(
                    f,
                    "upstream content type {t:?} is not what the mount's framer cuts"
                )
            }
        }
    }
}

/// A connected upstream whose response head is read.
#[derive(Debug)]
pub struct Connected {
    /// The socket (blocking, with the timeouts cleared).
    pub sock: TcpStream,
    /// Body bytes read with the head.
    pub leftover: Vec<u8>,
    /// The URL finally connected to (after redirects).
    pub url: Url,
    /// `icy-metaint`, when the upstream sends inline titles.
    pub metaint: Option<usize>,
    /// The body is chunked.
    pub chunked: bool,
    /// What the upstream's `icy-*` headers say about the stream.
    pub info: StreamInfo,
    /// The response's content type.
    pub content_type: Option<String>,
    /// Redirects followed.
    pub redirects: usize,
}

/// Connect to `url` and read its response head: follow up to
/// [`MAX_REDIRECTS`] redirects; on a 401, try once more with `relay_auth`
/// (the URL's own credentials come first). The content type must be one
/// `framer` cuts.
pub fn connect(
    url: &Url,
    relay_auth: Option<(String, String)>,
    framer: FramerKind,
    timeout: Duration,
) -> Result<Connected, UpstreamError> {
    let mut url = url.clone();
    let mut auth = url.userinfo.clone();
    let mut tried_relay = false;
    let mut seen: Vec<String> = Vec::new();
    let mut redirects = 0;
    // Redirects, plus one authenticated try.
    for _ in 0..MAX_REDIRECTS + 2 {
        seen.push(url.display());
        let (sock, head, leftover) = request(&url, auth.as_ref(), timeout)?;
        match head.status {
            200 => {
                if let Some(t) = &head.content_type {
                    if !crate::ingest::supports(framer, t) {
                        return Err(UpstreamError::ContentType(t.clone()));
                    }
                }
                let _ = sock.set_read_timeout(None);
                let _ = sock.set_write_timeout(None);
                return Ok(Connected {
                    sock,
                    leftover,
                    url,
                    metaint: head.metaint,
                    chunked: head.chunked,
                    info: head.info,
                    content_type: head.content_type,
                    redirects,
                });
            }
            301 | 302 | 303 | 307 | 308 => {
                let Some(loc) = head.location else {
                    return Err(UpstreamError::BadResponse(
                        "a redirect without Location".into(),
                    ));
                };
                let next = url.join(&loc).map_err(UpstreamError::BadResponse)?;
                if seen.contains(&next.display()) {
                    return Err(UpstreamError::TooManyRedirects);
                }
                if next.userinfo.is_some() {
                    auth = next.userinfo.clone();
                }
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(UpstreamError::TooManyRedirects);
                }
                url = next;
            }
            401 if !tried_relay && relay_auth.is_some() && auth != relay_auth => {
                tried_relay = true;
                auth = relay_auth.clone();
            }
            s => return Err(UpstreamError::Status(s)),
        }
    }
    Err(UpstreamError::TooManyRedirects)
}

/// A small GET (a mirror's `/admin/streamlist.txt`): the status and the
/// body (at most 1 MiB), following no redirect.
pub fn fetch(
    url: &Url,
    auth: Option<(String, String)>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), UpstreamError> {
    let (mut sock, head, mut body) = request(url, auth.as_ref(), timeout)?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 8192];
    while body.len() < 1 << 20 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let _ = sock.set_read_timeout(Some(left));
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    Ok((head.status, body))
}

/// The parts of a response head a relay needs.
#[derive(Debug, Default)]
struct Head {
    status: u16,
    content_type: Option<String>,
    location: Option<String>,
    metaint: Option<usize>,
    chunked: bool,
    info: StreamInfo,
}

/// One GET: connect, send, read the head.
fn request(
    url: &Url,
    auth: Option<&(String, String)>,
    timeout: Duration,
) -> Result<(TcpStream, Head, Vec<u8>), UpstreamError> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(UpstreamError::Connect)?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut sock = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut sock = sock.ok_or(UpstreamError::Connect(last))?;
    let _ = sock.set_nodelay(true);
    let _ = sock.set_write_timeout(Some(timeout));
    let mut req = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: ringcast/{}\r\nAccept: */*\r\nIcy-MetaData: 1\r\n",
        url.path,
        url.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    if let Some((u, p)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    sock.write_all(req.as_bytes())
        .map_err(UpstreamError::Connect)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(UpstreamError::BadResponse(
                "no response head in time".into(),
            ));
        }
        let _ = sock.set_read_timeout(Some(left));
        let n = match sock.read(&mut chunk) {
            Ok(0) => {
                return Err(UpstreamError::BadResponse(
                    "closed before a response head".into(),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(UpstreamError::BadResponse(
                    "no response head in time".into(),
                ))
            }
            Err(e) => return Err(UpstreamError::Connect(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        // Shoutcast 1 answers "ICY 200 OK": read it as HTTP/1.0.
        if buf.starts_with(b"ICY ") {
            buf.splice(..3, b"HTTP/1.0".iter().copied());
        }
        if let Some((head, len)) = parse_head(&buf)? {
            let rest = buf[len..].to_vec();
            return Ok((sock, head, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(UpstreamError::BadResponse("response head too large".into()));
        }
    }
}

fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, UpstreamError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(UpstreamError::BadResponse(format!("not HTTP ({e})"))),
    };
    let mut head = Head {
        status: resp.code.unwrap_or(0),
        ..Head::default()
    };
    let text = |v: &[u8]| http::sanitize(String::from_utf8_lossy(v).trim());
    for h in resp.headers.iter() {
        let v = text(h.value);
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "content-type" => head.content_type = Some(v),
            "location" => head.location = Some(v),
            "icy-metaint" => head.metaint = v.parse().ok().filter(|n| *n > 0),
            "transfer-encoding" => head.chunked = v.to_ascii_lowercase().contains("chunked"),
            "icy-name" => head.info.name = Some(v),
            "icy-description" => head.info.description = Some(v),
            "icy-genre" => head.info.genre = Some(v),
            "icy-url" => head.info.url = Some(v),
            "icy-br" => head.info.bitrate = v.split(',').next().and_then(|b| b.trim().parse().ok()),
            "icy-pub" => head.info.public = Some(v == "1"),
            _ => {}
        }
    }
    Ok(Some((head, len)))
}

/// Mirroring (Icecast master/slave): poll an origin's
/// `/admin/streamlist.txt` every `interval` and tell the main thread which
/// mounts it lists, so it relays new ones and ends those gone. Runs until
/// the server stops.
pub fn spawn_mirror(
    index: usize,
    mirror: crate::config::Mirror,
    shared: std::sync::Arc<crate::shared::ServerShared>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("mirror-{index}"))
        .spawn(move || {
            let url = match Url::parse(&format!(
                "{}/admin/streamlist.txt",
                mirror.origin.trim_end_matches('/')
            )) {
                Ok(u) => u,
                Err(e) => {
                    log::error!("mirror {}: {e}", mirror.origin);
                    return;
                }
            };
            let mut last: Option<Vec<String>> = None;
            loop {
                let auth = match (&mirror.user, &mirror.password) {
                    (Some(u), Some(crate::config::Secret::Plain(p))) => {
                        Some((u.clone(), p.clone()))
                    }
                    _ => shared
                        .credentials()
                        .users_with(crate::config::Role::Relay, "")
                        .find_map(|u| match &u.password {
                            crate::config::Secret::Plain(p) => Some((u.name.clone(), p.clone())),
                            crate::config::Secret::Bcrypt(_) => None,
                        }),
                };
                match fetch(&url, auth, Duration::from_secs(10)) {
                    Ok((200, body)) => {
                        let mounts: Vec<String> = String::from_utf8_lossy(&body)
                            .lines()
                            .map(|l| l.trim().to_string())
                            .filter(|l| l.starts_with('/') && !l.contains(char::is_whitespace))
                            .collect();
                        if last.as_ref() != Some(&mounts) {
                            log::info!("mirror {}: {} mounts", mirror.origin, mounts.len());
                            shared.ask_main(crate::shared::MainRequest::MirrorMounts {
                                index,
                                mounts: mounts.clone(),
                            });
                            last = Some(mounts);
                        }
                    }
                    Ok((status, _)) => {
                        log::warn!(
                            "mirror {}: the stream list answered {status}",
                            mirror.origin
                        )
                    }
                    Err(e) => log::warn!("mirror {}: the stream list: {e}", mirror.origin),
                }
                let until = Instant::now() + mirror.interval;
                while Instant::now() < until {
                    if shared.shutdown.load(std::sync::atomic::Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls() {
        let u = Url::parse("http://relay:p%40ss@example.org:8001/live.mp3?x=1").unwrap();
        assert_eq!(u.host, "example.org");
        assert_eq!(u.port, 8001);
        assert_eq!(u.path, "/live.mp3?x=1");
        assert_eq!(u.userinfo, Some(("relay".into(), "p@ss".into())));
        // A `+` in a URL's password is a plus, not a space (RFC 3986).
        let plus = Url::parse("http://source:a+b%2B@h/m").unwrap();
        assert_eq!(plus.userinfo, Some(("source".into(), "a+b+".into())));
        assert_eq!(u.display(), "http://example.org:8001/live.mp3?x=1");
        let v6 = Url::parse("http://[::1]:9/m").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 9));
        assert_eq!(v6.host_header(), "[::1]:9");
        assert_eq!(Url::parse("http://h").unwrap().path, "/");
        assert!(Url::parse("https://h/").is_err());
        assert!(Url::parse("http://:80/").is_err());
        assert!(Url::parse("http://h:x/").is_err());
        assert_eq!(u.join("/other").unwrap().path, "/other");
        assert_eq!(u.join("http://b:2/c").unwrap().host, "b");
    }

    /// A one-shot upstream on loopback answering each connection with the
    /// next canned response; returns what each request was.
    fn upstream(responses: Vec<Vec<u8>>) -> (Url, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for r in responses {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                seen.push(String::from_utf8_lossy(&got).into_owned());
                let _ = s.write_all(&r);
            }
            seen
        });
        (
            Url::parse(&format!("http://127.0.0.1:{port}/live.mp3")).unwrap(),
            h,
        )
    }

    #[test]
    fn a_relay_asks_for_titles_follows_redirects_and_authenticates() {
        let (url, h) = upstream(vec![
            b"HTTP/1.0 302 Found\r\nLocation: /moved.mp3\r\n\r\n".to_vec(),
            b"HTTP/1.0 401 Authentication Required\r\nWWW-Authenticate: Basic realm=\"x\"\r\n\r\n".to_vec(),
            b"HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\nicy-metaint:16000\r\nicy-name:Up\r\n\r\nBODY".to_vec(),
        ]);
        let c = connect(
            &url,
            Some(("relay".into(), "pw".into())),
            FramerKind::Mp3,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(c.metaint, Some(16000));
        assert_eq!(c.info.name.as_deref(), Some("Up"));
        assert_eq!(c.url.path, "/moved.mp3");
        assert_eq!(c.redirects, 1);
        assert_eq!(c.leftover, b"BODY");
        let seen = h.join().unwrap();
        assert!(seen[0].starts_with("GET /live.mp3 HTTP/1.0\r\n"));
        assert!(seen[0].contains("Icy-MetaData: 1\r\n"));
        assert!(!seen[1].contains("Authorization"));
        // relay:pw
        assert!(
            seen[2].contains("Authorization: Basic cmVsYXk6cHc=\r\n"),
            "{}",
            seen[2]
        );
    }

    #[test]
    fn bad_upstreams_are_errors_not_panics() {
        let (url, _h) = upstream(vec![
            b"HTTP/1.0 200 OK\r\nContent-Type: application/ogg\r\n\r\n".to_vec(),
        ]);
        assert!(matches!(
            connect(&url, None, FramerKind::Mp3, Duration::from_secs(5)),
            Err(UpstreamError::ContentType(_))
        ));
        let (url, _h) = upstream(vec![b"garbage\x00\x01\r\n\r\n".to_vec()]);
        assert!(matches!(
            connect(&url, None, FramerKind::Mp3, Duration::from_secs(5)),
            Err(UpstreamError::BadResponse(_))
        ));
        let loops: Vec<Vec<u8>> = (0..3)
            .map(|_| b"HTTP/1.0 302 Found\r\nLocation: /live.mp3\r\n\r\n".to_vec())
            .collect();
        let (url, _h) = upstream(loops);
        assert!(matches!(
            connect(&url, None, FramerKind::Mp3, Duration::from_secs(5)),
            Err(UpstreamError::TooManyRedirects)
        ));
        let (url, _h) = upstream(vec![b"HTTP/1.0 404 Not Found\r\n\r\n".to_vec()]);
        assert!(matches!(
            connect(&url, None, FramerKind::Mp3, Duration::from_secs(5)),
            Err(UpstreamError::Status(404))
        ));
        // Nobody listening.
        let dead = Url::parse("http://127.0.0.1:1/x").unwrap();
        assert!(matches!(
            connect(&dead, None, FramerKind::Mp3, Duration::from_secs(2)),
            Err(UpstreamError::Connect(_))
        ));
        // Shoutcast's ICY status line.
        let (url, _h) = upstream(vec![b"ICY 200 OK\r\nicy-metaint: 8192\r\n\r\n".to_vec()]);
        assert_eq!(
            connect(&url, None, FramerKind::Mp3, Duration::from_secs(5))
                .unwrap()
                .metaint,
            Some(8192)
        );
    }
}
