//! The value syntaxes every front end shares: Go's integers, booleans and
//! durations, listen addresses, users, log levels, header values, and the
//! word lists of `RINGCAST_EXEC`. Pure functions: none of them panics on any
//! input (property-tested).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(s: &[u8]) -> Option<bool> {
    match s {
        b"1" | b"t" | b"T" | b"TRUE" | b"true" | b"True" => Some(true),
        b"0" | b"f" | b"F" | b"FALSE" | b"false" | b"False" => Some(false),
        _ => None,
    }
}

/// Split `RINGCAST_EXEC` into words the way a POSIX shell splits a simple
/// command, without any expansion and without running a shell: blanks
/// separate words; `'...'` is literal; in `"..."` a backslash escapes only
/// `"`, `\`, `$`, `` ` `` and a newline; elsewhere a backslash escapes the
/// next character (a backslash-newline is dropped). `$`, `~`, `*`, `;`, `|`
/// and the like are ordinary characters. An unterminated quote or a trailing
/// backslash is an error.
pub(crate) fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    // Whether a word has started (so that '' makes an empty word).
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated ' quote".to_owned()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => {}
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated \" quote".to_owned()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated \" quote".to_owned()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err("a trailing backslash escapes nothing".to_owned()),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

pub(crate) fn parse_level(s: &str) -> Option<log::LevelFilter> {
    match s.trim().to_ascii_lowercase().as_str() {
        "error" => Some(log::LevelFilter::Error),
        "warn" => Some(log::LevelFilter::Warn),
        "info" => Some(log::LevelFilter::Info),
        "debug" => Some(log::LevelFilter::Debug),
        "trace" => Some(log::LevelFilter::Trace),
        _ => None,
    }
}

/// An HTTP field value: visible ASCII, space, tab or non-ASCII; not empty.
pub(crate) fn check_header_value(s: &str) -> Result<(), &'static str> {
    if s.trim().is_empty() {
        return Err("must not be empty");
    }
    if s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err("control characters are not allowed in a header value");
    }
    Ok(())
}

/// Go's `strconv.ParseInt(s, 0, 64)` syntax: optional sign, then `0x`/`0X`
/// hex, `0b`/`0B` binary, `0o`/`0O` or a leading `0` octal, else decimal;
/// underscores only between digits (or after a base prefix). Magnitudes up
/// to `u64::MAX` are returned; range checks are the caller's.
pub(crate) fn parse_go_int(s: &str) -> Result<i128, String> {
    const SYNTAX: &str = "not an integer";
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let b = body.as_bytes();
    let (base, digits, prefixed) = match b {
        [b'0', b'x' | b'X', rest @ ..] => (16, rest, true),
        [b'0', b'b' | b'B', rest @ ..] => (2, rest, true),
        [b'0', b'o' | b'O', rest @ ..] => (8, rest, true),
        [b'0', rest @ ..] if !rest.is_empty() => (8, rest, true),
        _ => (10, b, false),
    };
    if digits.is_empty() {
        return Err(SYNTAX.to_owned());
    }
    let mut value: u128 = 0;
    // Whether the previous character was a digit (or the base prefix, after
    // which Go allows an underscore).
    let mut prev_digit = prefixed;
    let mut prev_underscore = false;
    for &c in digits {
        if c == b'_' {
            if !prev_digit {
                return Err(SYNTAX.to_owned());
            }
            prev_digit = false;
            prev_underscore = true;
            continue;
        }
        let d = match c {
            b'0'..=b'9' => u128::from(c - b'0'),
            b'a'..=b'z' => u128::from(c - b'a' + 10),
            b'A'..=b'Z' => u128::from(c - b'A' + 10),
            _ => return Err(SYNTAX.to_owned()),
        };
        if d >= base {
            return Err(SYNTAX.to_owned());
        }
        value = value * base + d;
        if value > u128::from(u64::MAX) {
            return Err("value out of range".to_owned());
        }
        prev_digit = true;
        prev_underscore = false;
    }
    if prev_underscore {
        return Err(SYNTAX.to_owned());
    }
    let value = value as i128; // <= u64::MAX, fits
    Ok(if neg { -value } else { value })
}

/// A numeric uid, or a user name resolved with `getpwnam_r`.
pub(crate) fn parse_uid(s: &str) -> Result<u32, String> {
    if let Ok(n) = parse_go_int(s) {
        // u32::MAX is (uid_t)-1, "no change" to setuid: not a user.
        return match u32::try_from(n) {
            Ok(uid) if uid != u32::MAX => Ok(uid),
            _ => Err("not a valid uid".to_owned()),
        };
    }
    if s.is_empty() {
        return Err("must be a uid or a user name".to_owned());
    }
    lookup_user(s)
}

/// Look a user name up in the password database (`getpwnam_r`).
fn lookup_user(name: &str) -> Result<u32, String> {
    crate::sys::uid_by_name(name)
}

/// Parse a duration in Go's `time.ParseDuration` syntax: `"0"`, or one or
/// more decimal numbers, each with an optional fraction and a unit: `ns`,
/// `us` (or `µs`, `μs`), `ms`, `s`, `m`, `h` — e.g. `300ms`, `1.5s`, `1m30s`,
/// `2h45m`. A leading `+` is allowed; negative durations are an error, as
/// is anything longer than Go's limit (2^63-1 ns, about 292 years).
/// Fractions below a nanosecond are truncated, as in Go.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || "not a duration (write e.g. 0, 300ms, 1.5s, 1m30s, 2h45m)".to_owned();
    let mut rest = match s.as_bytes().first() {
        Some(b'+') => &s[1..],
        Some(b'-') => {
            return Err("a duration must not be negative".to_owned());
        }
        _ => s,
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    const MAX_NANOS: u128 = i64::MAX as u128;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        // Integer part.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_digits = &rest[..int_len];
        rest = &rest[int_len..];
        // Fraction.
        let mut frac_digits = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_digits = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        // Unit: everything up to the next digit or '.'.
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err("missing unit in duration (ns, us, ms, s, m or h)".to_owned()),
            _ => {
                return Err(format!(
                    "unknown unit {unit:?} in duration (use ns, us, ms, s, m or h)"
                ))
            }
        };
        let too_long = || "duration too long (at most 2562047h)".to_owned();
        let mut int: u128 = 0;
        for d in int_digits.bytes() {
            int = int * 10 + u128::from(d - b'0');
            if int > MAX_NANOS {
                return Err(too_long());
            }
        }
        // The fraction as Go's leadingFraction reads it (digits while they
        // fit in 63 bits), scaled in f64 as Go does, so results match Go's
        // to the nanosecond (e.g. 0.3333333333333333333h is 20m exactly).
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        for d in frac_digits.bytes() {
            match frac
                .checked_mul(10)
                .and_then(|f| f.checked_add(u64::from(d - b'0')))
            {
                Some(f) if f <= 1 << 63 => {
                    frac = f;
                    scale *= 10.0;
                }
                _ => break,
            }
        }
        // A float-to-int `as` cast saturates; it cannot panic.
        let frac_nanos = (frac as f64 * (per_unit as f64 / scale)) as u128;
        total = int
            .checked_mul(per_unit)
            .and_then(|n| n.checked_add(frac_nanos))
            .and_then(|n| n.checked_add(total))
            .filter(|&n| n <= MAX_NANOS)
            .ok_or_else(too_long)?;
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Parse a listen address `HOST:PORT` as Go's `net.Listen` does: an empty
/// host (`:8000`) is `0.0.0.0`; IPv6 literals are bracketed (`[::1]:80`); a
/// host name is resolved (its first IPv4 address is preferred). The port is
/// a decimal number 0..=65535 (0 picks a free port) and may not be missing.
pub fn parse_address(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = if let Some(after) = s.strip_prefix('[') {
        let Some(end) = after.find(']') else {
            return Err("missing ']' in address".to_owned());
        };
        let port = after[end + 1..]
            .strip_prefix(':')
            .ok_or_else(|| "missing port in address (write HOST:PORT)".to_owned())?;
        (&after[..end], port)
    } else {
        let Some(colon) = s.rfind(':') else {
            return Err("missing port in address (write HOST:PORT, or :PORT)".to_owned());
        };
        let host = &s[..colon];
        if host.contains(':') {
            return Err("too many colons in address (bracket IPv6: [::1]:80)".to_owned());
        }
        (host, &s[colon + 1..])
    };
    if port.is_empty() {
        return Err("missing port in address (write HOST:PORT, or :PORT)".to_owned());
    }
    if port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid port {port:?}"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port {port:?} (0 to 65535)"))?;
    if host.is_empty() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let valid_name = host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid_name {
        return Err(format!("invalid host {host:?}"));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("host {host:?} has no address"))
}

/// An `http://` URL of another server, split: what relays, destinations and
/// mirrors connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    /// The host as written (lower case; an IPv6 literal without brackets).
    pub host: String,
    /// The port (80 when not written).
    pub port: u16,
    /// The path with its query (`/live.mp3?x=1`); empty when not written.
    pub path: String,
    /// `user` of `user:password@`, percent-decoded.
    pub user: Option<String>,
    /// `password` of `user:password@`, percent-decoded.
    pub password: Option<String>,
}

impl HttpUrl {
    /// `http://host:port` and the path, without credentials.
    pub(crate) fn without_credentials(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            format!("http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// Parse `http://[user[:password]@]host[:port][/path[?query]]`. No host
/// name is resolved here (that is the runtime's, at each connect). Messages
/// never quote the password.
pub(crate) fn parse_http_url(s: &str) -> Result<HttpUrl, String> {
    let scheme_end = s.find("://");
    let scheme = scheme_end.map(|i| s[..i].to_ascii_lowercase());
    let rest = match (scheme.as_deref(), scheme_end) {
        (Some("http"), Some(i)) => &s[i + 3..],
        (Some("https"), _) => {
            return Err(
                "https:// is not supported: ringcast does not speak TLS to other servers \
                 (use http://, or a TLS tunnel such as stunnel)"
                    .to_owned(),
            )
        }
        _ => return Err("must be an http:// URL (http://host[:port]/path)".to_owned()),
    };
    if rest.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("spaces and control characters are not allowed in a URL".to_owned());
    }
    if !rest.is_ascii() {
        return Err("must be ASCII (percent-encode other characters)".to_owned());
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    if path.contains('#') {
        return Err("must not have a #fragment".to_owned());
    }
    if path.starts_with('?') {
        return Err("the path must start with '/'".to_owned());
    }
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (u, p) = match info.find(':') {
                Some(c) => (&info[..c], Some(&info[c + 1..])),
                None => (info, None),
            };
            let user = percent_decode(u).ok_or("bad percent-encoding in the user name")?;
            if user.is_empty() {
                return Err("the user name before '@' is empty".to_owned());
            }
            let password = match p {
                None => None,
                Some(p) => {
                    let p = percent_decode(p).ok_or("bad percent-encoding in the password")?;
                    if p.is_empty() {
                        return Err("the password after ':' is empty".to_owned());
                    }
                    Some(p)
                }
            };
            if user.contains(':') || user.bytes().any(|b| b < 0x20 || b == 0x7f) {
                return Err("the user name must not contain ':' or control characters".to_owned());
            }
            (Some(user), password)
        }
    };
    let (host, port) = if let Some(after) = hostport.strip_prefix('[') {
        let end = after.find(']').ok_or("missing ']' in the host")?;
        let host = &after[..end];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not an IPv6 address in [...]".to_owned());
        }
        (host, &after[end + 1..])
    } else {
        match hostport.rfind(':') {
            Some(c) => (&hostport[..c], &hostport[c..]),
            None => (hostport, ""),
        }
    };
    if host.is_empty() {
        return Err("needs a host (http://host[:port]/path)".to_owned());
    }
    let name_ok = host.contains(':')
        || host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !name_ok || host.len() > 253 {
        return Err("not a valid host name".to_owned());
    }
    let port = match port {
        "" => 80,
        p => {
            let digits = p.strip_prefix(':').unwrap_or(p);
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err("invalid port (1 to 65535)".to_owned());
            }
            match digits.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err("invalid port (1 to 65535)".to_owned()),
            }
        }
    };
    Ok(HttpUrl {
        host: host.to_ascii_lowercase(),
        port,
        path: path.to_owned(),
        user,
        password,
    })
}

/// `%XX` decoded; `None` when a `%` is not followed by two hex digits or
/// the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A URL as a message may quote it: whatever stands between `://` and the
/// last `@` after the user name's `:` becomes `<secret>` (on the safe side:
/// a password with an unencoded `/` or `@` in it is hidden too).
pub(crate) fn redact_url(s: &str) -> String {
    let Some(i) = s.find("://") else {
        return s.to_owned();
    };
    let (head, rest) = s.split_at(i + 3);
    match (rest.rfind('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{head}{}:<secret>{}", &rest[..colon], &rest[at..])
        }
        _ => s.to_owned(),
    }
}

/// Whether `s` is meant as a bcrypt hash (`$2a$`, `$2b$`, `$2y$`), and if
/// so whether it is one as `htpasswd -B` writes it: a two-digit cost 04 to
/// 31, `$`, then 53 characters of bcrypt's base64 (22 of salt, 31 of hash).
pub(crate) fn bcrypt_syntax(s: &str) -> Option<Result<(), &'static str>> {
    let b = s.as_bytes();
    if !(b.starts_with(b"$2a$") || b.starts_with(b"$2b$") || b.starts_with(b"$2y$")) {
        return None;
    }
    let ok = || {
        let cost = std::str::from_utf8(b.get(4..6)?).ok()?;
        if !cost.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let cost: u32 = cost.parse().ok()?;
        let tail = b.get(7..)?;
        ((4..=31).contains(&cost)
            && b.get(6) == Some(&b'$')
            && tail.len() == 53
            && tail
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/'))
        .then_some(())
    };
    Some(ok().ok_or(
        "starts like a bcrypt hash but is not one ($2y$, a cost 04 to 31, $, \
         53 characters of ./A-Za-z0-9, as htpasswd -B writes)",
    ))
}

/// An HTTP header name: a token (RFC 9110 `tchar`s), not empty.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A response header ringcast sets itself (or from another setting), so a
/// `[stream.headers]` entry may not: why, else `None`.
pub(crate) fn reserved_header(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    const FROM_SETTINGS: &[(&str, &str)] = &[
        (
            "content-type",
            "ringcast sets this header: use content_type",
        ),
        ("icy-metaint", "ringcast sets this header: use icy_metaint"),
        ("icy-name", "ringcast sets this header: use name"),
        (
            "icy-description",
            "ringcast sets this header: use description",
        ),
        ("icy-genre", "ringcast sets this header: use genre"),
        ("icy-url", "ringcast sets this header: use url"),
        ("icy-br", "ringcast sets this header: use bitrate"),
        ("icy-pub", "ringcast sets this header: use public"),
    ];
    const OWN: &[&str] = &[
        "content-length",
        "connection",
        "transfer-encoding",
        "server",
        "cache-control",
        "upgrade",
        "x-content-type-options",
    ];
    if let Some((_, why)) = FROM_SETTINGS.iter().find(|(h, _)| *h == lower) {
        return Some(why);
    }
    if lower.starts_with("access-control-") {
        return Some("ringcast sets the CORS headers: use cors_origin");
    }
    if OWN.contains(&lower.as_str()) || lower.starts_with("sec-websocket-") {
        return Some("ringcast sets this header itself");
    }
    None
}

/// A WebSocket channel key: 1 to 128 of `a-z`, `0-9`, `_`, `-`.
pub(crate) fn is_channel_key(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn go_integer_syntax() {
        assert_eq!(parse_go_int("0x40"), Ok(64));
        assert_eq!(parse_go_int("0100"), Ok(64));
        assert_eq!(parse_go_int("0o100"), Ok(64));
        assert_eq!(parse_go_int("0b1000000"), Ok(64));
        assert_eq!(parse_go_int("+64"), Ok(64));
        assert_eq!(parse_go_int("1_000_000"), Ok(1_000_000));
        assert_eq!(parse_go_int("0x_1F"), Ok(31));
        assert_eq!(parse_go_int("-0x10"), Ok(-16));
        assert_eq!(parse_go_int("0"), Ok(0));
        for bad in [
            "", "-", "0x", "08", "_1", "1_", "1__0", "1e3", " 1", "1.0", "0xg",
        ] {
            assert!(parse_go_int(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_go_examples() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("+0", 0),
            ("0s", 0),
            ("5s", 5_000_000_000),
            ("30s", 30_000_000_000),
            ("1478s", 1_478_000_000_000),
            ("+5s", 5_000_000_000),
            ("5.0s", 5_000_000_000),
            ("5.6s", 5_600_000_000),
            ("5.s", 5_000_000_000),
            (".5s", 500_000_000),
            ("1.5s", 1_500_000_000),
            ("1.004s", 1_004_000_000),
            ("1.0040s", 1_004_000_000),
            ("100.00100s", 100_001_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12\u{b5}s", 12_000),
            ("12\u{3bc}s", 12_000),
            ("13ms", 13_000_000),
            ("300ms", 300_000_000),
            ("14s", 14_000_000_000),
            ("15m", 900_000_000_000),
            ("16h", 57_600_000_000_000),
            ("1m30s", 90_000_000_000),
            ("2h45m", 9_900_000_000_000),
            ("3h30m", 12_600_000_000_000),
            ("10.5s4m", 250_500_000_000),
            ("1h1m1s", 3_661_000_000_000),
            ("2m3.4s", 123_400_000_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("39h9m14.425s", 140_954_425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 1_200_000_000_000),
            ("9007199254740993ns", 9_007_199_254_740_993),
            ("9223372036854775807ns", 9_223_372_036_854_775_807),
            ("9223372036854775.807us", 9_223_372_036_854_775_807),
            ("9223372036s854ms775us807ns", 9_223_372_036_854_775_807),
            ("0.100000000000000000000h", 360_000_000_000),
        ];
        for (s, nanos) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_nanos(*nanos)), "{s:?}");
        }
        let bad = [
            "",
            "3",
            "-",
            "s",
            ".",
            ".s",
            "+.s",
            "1d",
            "1.2.3s",
            "5s3",
            "-5s",
            "-0",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "3000000h",
            " 1s",
            "1 s",
            "1sec",
            "1µ",
            "\u{b5}s",
        ];
        for s in bad {
            assert!(parse_duration(s).is_err(), "{s:?}");
        }
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
    }

    #[test]
    fn addresses() {
        let v4 = |a: [u8; 4], p| SocketAddr::new(IpAddr::V4(a.into()), p);
        assert_eq!(parse_address(":0"), Ok(v4([0, 0, 0, 0], 0)));
        assert_eq!(parse_address(":8000"), Ok(v4([0, 0, 0, 0], 8000)));
        assert_eq!(parse_address("127.0.0.1:0"), Ok(v4([127, 0, 0, 1], 0)));
        assert_eq!(
            parse_address("10.1.2.3:10123"),
            Ok(v4([10, 1, 2, 3], 10123))
        );
        assert_eq!(
            parse_address("[::1]:80"),
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 80))
        );
        assert_eq!(
            parse_address("[::]:0"),
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0))
        );
        let local = parse_address("localhost:8000").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8000, "{local}");
        for bad in [
            "",
            ":",
            "127.0.0.1",
            "127.0.0.1:",
            "::1",
            "[::1]",
            "[::1]80",
            "[::1",
            ":65536",
            ":-1",
            ":http",
            ":80x",
            "a b:80",
            "host\0:80",
            "1.2.3.4:123456",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn words_split_like_a_shell_without_expansion() {
        let w = |s: &str| split_words(s).unwrap();
        assert_eq!(w("cat /dev/zero"), ["cat", "/dev/zero"]);
        assert_eq!(w("  a\t b\n"), ["a", "b"]);
        assert_eq!(
            w("sh -c 'echo $HOME | tr a b'"),
            ["sh", "-c", "echo $HOME | tr a b"]
        );
        assert_eq!(w(r#"a "b \"c\" \$d \x" e"#), ["a", r#"b "c" $d \x"#, "e"]);
        assert_eq!(w(r"a\ b c\\d"), ["a b", r"c\d"]);
        assert_eq!(w("'' \"\""), ["", ""]);
        assert_eq!(w("~ * ; $X"), ["~", "*", ";", "$X"]);
        assert_eq!(w("a\\\nb"), ["ab"]);
        assert_eq!(w(""), Vec::<String>::new());
        assert_eq!(w("   "), Vec::<String>::new());
        for bad in ["'a", "\"a", "a\\", "\"a\\"] {
            assert!(split_words(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn http_urls() {
        let u = parse_http_url("HTTP://Us%65r:p%3Aw@Host.Example:8000/a/b?c=d").unwrap();
        assert_eq!(
            u,
            HttpUrl {
                host: "host.example".into(),
                port: 8000,
                path: "/a/b?c=d".into(),
                user: Some("User".into()),
                password: Some("p:w".into()),
            }
        );
        assert_eq!(u.without_credentials(), "http://host.example:8000/a/b?c=d");
        let u = parse_http_url("http://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("::1", 80, ""));
        assert_eq!(u.without_credentials(), "http://[::1]:80");
        // The last '@' ends the credentials.
        let u = parse_http_url("http://u:p@ss@h/x").unwrap();
        assert_eq!(
            (u.password.as_deref(), u.host.as_str()),
            (Some("p@ss"), "h")
        );
        for bad in [
            "",
            "http://",
            "http:///x",
            "https://h/x",
            "ws://h/x",
            "http://h:/x",
            "http://h:0/x",
            "http://h:65536/x",
            "http://h:x/x",
            "http://h/#f",
            "http://h/ x",
            "http://h?x",
            "http://[::1/x",
            "http://[nope]/x",
            "http://a b/x",
            "http://:p@h/x",
            "http://u:@h/x",
            "http://u:%4@h/x",
            "http://u:%ff@h/x",
        ] {
            assert!(parse_http_url(bad).is_err(), "{bad:?}");
        }
        assert!(parse_http_url("https://h/").unwrap_err().contains("TLS"));
    }

    #[test]
    fn urls_in_messages_hide_their_password() {
        assert_eq!(redact_url("http://u:pw@h/x"), "http://u:<secret>@h/x");
        assert_eq!(redact_url("http://u:p/w@h/x"), "http://u:<secret>@h/x");
        assert_eq!(redact_url("http://u@h/x"), "http://u@h/x");
        assert_eq!(redact_url("http://h:80/x"), "http://h:80/x");
        assert_eq!(redact_url("no url"), "no url");
    }

    #[test]
    fn bcrypt_hashes() {
        let good = "$2y$05$abcdefghijklmnopqrstuu5Ry4hEJ4hBqCJq0ODRb1aQ4v8NG6QTu";
        assert_eq!(bcrypt_syntax(good), Some(Ok(())));
        assert_eq!(bcrypt_syntax(&good.replace("$2y$", "$2a$")), Some(Ok(())));
        assert_eq!(bcrypt_syntax(&good.replace("$2y$", "$2b$")), Some(Ok(())));
        for plain in ["secret", "$1$abc", "$2x$05$...", "$2$05$", ""] {
            assert_eq!(bcrypt_syntax(plain), None, "{plain:?}");
        }
        for bad in [
            "$2y$",
            "$2y$05$short",
            &good.replace("$05$", "$03$"),
            &good.replace("$05$", "$32$"),
            &good.replace("$05$", "$5x$"),
            &good.replace("$05$", "$05_"),
            &format!("{good}x"),
            &good.replace('a', "!"),
        ] {
            assert!(matches!(bcrypt_syntax(bad), Some(Err(_))), "{bad:?}");
        }
    }

    #[test]
    fn header_names_and_channel_keys() {
        assert!(is_token("X-Station") && is_token("a!#$%&'*+-.^_`|~9"));
        assert!(!is_token("") && !is_token("a b") && !is_token("a:b") && !is_token("é"));
        assert!(reserved_header("content-TYPE").is_some());
        assert!(reserved_header("Access-Control-Max-Age").is_some());
        assert!(reserved_header("sec-websocket-version").is_some());
        assert!(reserved_header("X-Frame-Options").is_none());
        assert!(is_channel_key("a") && is_channel_key(&"z9_-".repeat(32)));
        assert!(!is_channel_key("") && !is_channel_key(&"a".repeat(129)));
        assert!(!is_channel_key("A") && !is_channel_key("a.b"));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_durations_and_addresses_never_panic(s in "[0-9.a-zµμ+:\\[\\]-]{0,16}") {
                let _ = parse_duration(&s);
                if !s.bytes().any(|b| b.is_ascii_alphabetic()) {
                    let _ = parse_address(&s); // no host names: no DNS in a property test
                }
            }

            #[test]
            fn arbitrary_urls_never_panic_and_never_show_a_password(
                s in "[ -~é]{0,24}",
                user in "[a-z]{1,6}",
                password in "[A-Z]{8,12}",
                rest in "[a-z0-9:/@.?#%\\[\\]-]{0,12}",
            ) {
                let _ = parse_http_url(&s);
                let _ = redact_url(&s);
                let _ = bcrypt_syntax(&s);
                let url = format!("http://{user}:{password}@{rest}");
                prop_assert!(!redact_url(&url).contains(&password));
                if let Err(why) = parse_http_url(&url) {
                    prop_assert!(!why.contains(&password));
                }
            }

            #[test]
            fn quoted_words_split_back(words in proptest::collection::vec("\\PC{0,8}", 0..5)) {
                let quoted: Vec<String> = words
                    .iter()
                    .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
                    .collect();
                prop_assert_eq!(split_words(&quoted.join(" ")).unwrap(), words);
            }
        }
    }
}
