//! In-band titles (ICY metadata): the blocks Icecast and Shoutcast put in a
//! listener's stream every `icy-metaint` audio bytes, built for listeners
//! and stripped from a relayed upstream.
//!
//! A block is one length byte L, then L × 16 bytes:
//! `StreamTitle='...';StreamUrl='...';` padded with zero bytes (at most
//! 255 × 16 = 4080 bytes); a single zero byte when nothing changed. The
//! title is sent as Icecast 2.4 sends it: no escaping of quotes (players
//! parse up to `';`), so the title is cleaned of what would break a block
//! or a player: control characters (CR, LF, NUL), and the `';` sequence.

use std::sync::Arc;

/// Longest block payload: 255 × 16 bytes.
pub const MAX_BLOCK: usize = 255 * 16;

/// A stream's title as listeners see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Title {
    /// The song title (`StreamTitle`).
    pub title: String,
    /// A URL (`StreamUrl`), when given.
    pub url: Option<String>,
}

impl Title {
    /// A title, cleaned: no control characters, no `';` (which ends a value
    /// inside a block), at most what fits a block.
    pub fn new(title: &str, url: Option<&str>) -> Title {
        Title {
            title: clean(title, 2000),
            url: url.map(|u| clean(u, 1000)).filter(|u| !u.is_empty()),
        }
    }

    /// The metadata block of this title (length byte included). A title too
    /// long for one block is cut at a character boundary and keeps its
    /// closing `';`; the URL goes only when it fits after the whole title.
    pub fn block(&self) -> Vec<u8> {
        let url = self.url.as_ref().map(|u| format!("StreamUrl='{u}';"));
        // Latin-1 when every character fits (what most players assume for
        // ICY), UTF-8 otherwise (what most players then show right).
        let latin1 = self
            .title
            .chars()
            .chain(url.iter().flat_map(|u| u.chars()))
            .all(|c| (c as u32) <= 0xff);
        let encode = |s: &str| -> Vec<u8> {
            if latin1 {
                s.chars().map(|c| c as u8).collect()
            } else {
                s.as_bytes().to_vec()
            }
        };
        const OPEN: &[u8] = b"StreamTitle='";
        const CLOSE: &[u8] = b"';";
        let room = MAX_BLOCK - OPEN.len() - CLOSE.len();
        let title = encode(&self.title);
        let keep = if title.len() <= room {
            title.len()
        } else if latin1 {
            room
        } else {
            // UTF-8: the longest prefix that ends on a character boundary.
            (0..=room)
                .rev()
                .find(|&i| self.title.is_char_boundary(i))
                .unwrap_or(0)
        };
        let mut bytes = Vec::with_capacity(MAX_BLOCK);
        bytes.extend_from_slice(OPEN);
        bytes.extend_from_slice(&title[..keep]);
        bytes.extend_from_slice(CLOSE);
        if let Some(u) = url.map(|u| encode(&u)) {
            if bytes.len() + u.len() <= MAX_BLOCK {
                bytes.extend_from_slice(&u);
            }
        }
        let blocks = bytes.len().div_ceil(16);
        let mut out = Vec::with_capacity(1 + blocks * 16);
        out.push(blocks as u8);
        out.extend_from_slice(&bytes);
        out.resize(1 + blocks * 16, 0);
        out
    }
}

/// The block that says "nothing changed".
pub const EMPTY_BLOCK: [u8; 1] = [0];

fn clean(s: &str, max_chars: usize) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect();
    while out.contains("';") {
        out = out.replace("';", "'");
    }
    out.trim().to_string()
}

/// Decode a title given as Latin-1 bytes (Icecast's default for non-Ogg
/// titles) or in `charset` (e.g. `UTF-8` from libshout's `charset=`).
pub fn decode_title(bytes: &[u8], charset: Option<&str>) -> String {
    let utf8 =
        charset.is_some_and(|c| c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("utf8"));
    if utf8 {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        bytes.iter().map(|&b| b as char).collect()
    }
}

/// Read `StreamTitle` and `StreamUrl` out of a block's payload (the bytes
/// after the length byte).
pub fn parse_block(payload: &[u8]) -> Option<Title> {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    let text = &payload[..end];
    // Upstream titles are Latin-1 unless they are valid UTF-8.
    let text = match std::str::from_utf8(text) {
        Ok(t) => t.to_string(),
        Err(_) => decode_title(text, None),
    };
    let field = |name: &str| -> Option<String> {
        let start = text.find(&format!("{name}='"))? + name.len() + 2;
        let rest = &text[start..];
        let stop = rest.find("';").unwrap_or(rest.len());
        Some(rest[..stop].to_string())
    };
    let title = field("StreamTitle")?;
    Some(Title::new(&title, field("StreamUrl").as_deref()))
}

/// A stream's current title and its version (bumped on every change), so a
/// listener knows whether its next block carries news.
#[derive(Debug)]
pub struct TitleBoard {
    current: std::sync::Mutex<(u32, Arc<Title>, Arc<[u8]>)>,
    version: std::sync::atomic::AtomicU32,
}

impl Default for TitleBoard {
    fn default() -> TitleBoard {
        let empty = Title::default();
        TitleBoard {
            current: std::sync::Mutex::new((0, Arc::new(empty.clone()), Arc::from(empty.block()))),
            version: std::sync::atomic::AtomicU32::new(0),
        }
    }
}

impl TitleBoard {
    /// Set a new title (any thread).
    pub fn set(&self, title: Title) {
        let block: Arc<[u8]> = Arc::from(title.block());
        let mut c = match self.current.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if *c.1 == title {
            return;
        }
        let v = c.0.wrapping_add(1).max(1);
        *c = (v, Arc::new(title), block);
        // Release: a reader that sees the version sees the new block (it
        // also takes the lock to read it).
        self.version.store(v, std::sync::atomic::Ordering::Release);
    }

    /// The version of the current title (0: none yet). One atomic load.
    pub fn version(&self) -> u32 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current title, its block and version.
    pub fn current(&self) -> (u32, Arc<Title>, Arc<[u8]>) {
        match self.current.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Strips the metadata blocks out of an upstream's body (`icy-metaint`),
/// keeping the audio bytes and the latest title.
#[derive(Debug)]
pub struct IcyStripper {
    metaint: usize,
    /// Audio bytes left before the next length byte.
    audio_left: usize,
    /// Inside a block: bytes of it still to come; the block so far.
    block_left: usize,
    block: Vec<u8>,
    in_length: bool,
}

impl IcyStripper {
    /// A stripper for blocks every `metaint` audio bytes.
    pub fn new(metaint: usize) -> IcyStripper {
        IcyStripper {
            metaint: metaint.max(1),
            audio_left: metaint.max(1),
            block_left: 0,
            block: Vec::new(),
            in_length: false,
        }
    }

    /// Split `input`: audio bytes are appended to `audio`; every complete
    /// block that carries a title is returned.
    pub fn push(&mut self, input: &[u8], audio: &mut Vec<u8>) -> Vec<Title> {
        let mut titles = Vec::new();
        let mut i = 0;
        while i < input.len() {
            if self.block_left > 0 {
                let take = self.block_left.min(input.len() - i);
                self.block.extend_from_slice(&input[i..i + take]);
                self.block_left -= take;
                i += take;
                if self.block_left == 0 {
                    if let Some(t) = parse_block(&self.block) {
                        titles.push(t);
                    }
                    self.block.clear();
                    self.audio_left = self.metaint;
                }
            } else if self.in_length {
                let n = input[i] as usize * 16;
                i += 1;
                self.in_length = false;
                if n == 0 {
                    self.audio_left = self.metaint;
                } else {
                    self.block_left = n;
                }
            } else {
                let take = self.audio_left.min(input.len() - i);
                audio.extend_from_slice(&input[i..i + take]);
                self.audio_left -= take;
                i += take;
                if self.audio_left == 0 {
                    self.in_length = true;
                }
            }
        }
        titles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blocks_are_built_as_icecast_builds_them() {
        let b = Title::new("Hello", None).block();
        // `StreamTitle='Hello';` is 20 bytes: two 16-byte blocks.
        assert_eq!(b[0], 2);
        assert_eq!(b.len(), 33);
        assert_eq!(&b[1..21], b"StreamTitle='Hello';");
        assert!(b[21..].iter().all(|&x| x == 0));
        let b = Title::new("A", Some("http://x/")).block();
        assert_eq!(
            &b[1..b.iter().rposition(|&x| x != 0).unwrap() + 1],
            b"StreamTitle='A';StreamUrl='http://x/';"
        );
    }

    #[test]
    fn titles_cannot_break_a_block() {
        let t = Title::new("Evil';StreamUrl='http://bad/';\r\nX", None);
        assert!(!t.title.contains("';"));
        assert!(!t.title.contains('\r') && !t.title.contains('\n'));
        let b = t.block();
        let text = String::from_utf8_lossy(&b[1..]);
        assert_eq!(text.matches("';").count(), 1, "{text}");
        // 5,000 bytes: cut (to 2,000 characters), one well-formed block.
        let long = "x".repeat(5000);
        let b = Title::new(&long, None).block();
        assert_eq!(b.len(), 1 + 16 * b[0] as usize);
        assert!(b.len() <= 1 + MAX_BLOCK);
        assert_eq!(parse_block(&b[1..]).unwrap().title.len(), 2000);
    }

    #[test]
    fn a_long_utf8_title_is_cut_at_a_character_and_keeps_its_end() {
        // 2,000 three-byte characters (6,000 bytes) and a URL: the title is
        // cut to what fits, on a character boundary, `';` kept; no URL.
        let long = "\u{65e5}".repeat(5000);
        let b = Title::new(&long, Some("http://x/")).block();
        assert_eq!(b.len(), 1 + 16 * b[0] as usize);
        assert!(b.len() <= 1 + MAX_BLOCK);
        let end = b.iter().rposition(|&x| x != 0).unwrap() + 1;
        let text = std::str::from_utf8(&b[1..end]).expect("whole UTF-8 characters");
        assert!(
            text.starts_with("StreamTitle='") && text.ends_with("';"),
            "{text}"
        );
        assert_eq!(text.matches("';").count(), 1);
        let t = parse_block(&b[1..]).unwrap();
        assert_eq!(t.title.chars().count(), (MAX_BLOCK - 15) / 3);
        assert!(t.title.chars().all(|c| c == '\u{65e5}'));
        assert_eq!(t.url, None);
        // A URL that fits after the title stays.
        let b = Title::new(&"\u{65e5}".repeat(100), Some("http://x/")).block();
        assert_eq!(
            parse_block(&b[1..]).unwrap().url.as_deref(),
            Some("http://x/")
        );
    }

    #[test]
    fn latin1_when_it_fits_utf8_otherwise() {
        let b = Title::new("Café", None).block();
        assert!(b[1..].windows(4).any(|w| w == b"Caf\xe9"));
        let b = Title::new("東京", None).block();
        assert!(String::from_utf8_lossy(&b[1..]).contains("東京"));
        assert_eq!(decode_title(b"Caf\xe9", None), "Café");
        assert_eq!(decode_title("Café".as_bytes(), Some("UTF-8")), "Café");
    }

    #[test]
    fn a_stripper_returns_audio_and_titles() {
        let metaint = 8;
        let mut body = Vec::new();
        let mut audio_in = Vec::new();
        for k in 0..5u8 {
            let chunk = [k; 8];
            body.extend_from_slice(&chunk);
            audio_in.extend_from_slice(&chunk);
            if k == 2 {
                body.extend_from_slice(&Title::new("Two", None).block());
            } else {
                body.push(0);
            }
        }
        for split in 1..body.len() {
            let mut s = IcyStripper::new(metaint);
            let mut audio = Vec::new();
            let mut titles = s.push(&body[..split], &mut audio);
            titles.extend(s.push(&body[split..], &mut audio));
            assert_eq!(audio, audio_in);
            assert_eq!(titles, vec![Title::new("Two", None)]);
        }
    }

    #[test]
    fn the_board_bumps_its_version_on_change_only() {
        let b = TitleBoard::default();
        assert_eq!(b.version(), 0);
        b.set(Title::new("a", None));
        assert_eq!(b.version(), 1);
        b.set(Title::new("a", None));
        assert_eq!(b.version(), 1);
        b.set(Title::new("b", None));
        assert_eq!(b.version(), 2);
        assert_eq!(b.current().1.title, "b");
    }

    proptest! {
        #[test]
        fn blocks_parse_back(title in "[ -~]{0,300}") {
            let t = Title::new(&title, None);
            let b = t.block();
            prop_assert_eq!(b.len(), 1 + b[0] as usize * 16);
            let parsed = parse_block(&b[1..]).unwrap();
            prop_assert_eq!(parsed.title, t.title);
        }

        #[test]
        fn the_stripper_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2000), metaint in 1usize..64) {
            let mut s = IcyStripper::new(metaint);
            let _ = s.push(&data, &mut Vec::new());
        }
    }
}
