//! ICY metadata (in-band titles): split a listener's body into audio bytes and
//! metadata blocks, and check every block.
//!
//! A listener that sends `Icy-MetaData: 1` gets `icy-metaint: N` in the response head and
//! then, after every N audio bytes, one block: a length byte L and L × 16 bytes of
//! `StreamTitle='...';` (more `Key='value';` fields may follow) padded with zero bytes; a
//! single zero byte (L = 0) when nothing changed. [`IcyDemux`] consumes the body in
//! pieces of any size with fixed-size state, passes the audio on (to the frame checker)
//! and reports each block's verdict: unchanged, a title (the connection's first, a
//! change, or a repeat), or malformed and why.
//!
//! A value ends at the first `';` (Icecast does not escape quotes; players read up to
//! `';`), so a `'` inside a title is part of it.

/// Bytes of a title kept for the report (its start).
pub const SAMPLE: usize = 48;

/// Why a metadata block is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The block ended inside a key or a value: no closing `';` (a title cut short).
    Unterminated,
    /// Not `Key='value';` fields then zero padding: a bad key character, no `='` after a
    /// key, a NUL inside a value (with more text after it), or a non-zero byte after the
    /// padding began.
    Syntax,
    /// The first field is not `StreamTitle`.
    NoTitle,
    /// A block of zero bytes only, or 16 or more bytes of padding (L is one too large).
    Padding,
    /// A UTF-8 title cut inside a character: the value is valid UTF-8 with at least one
    /// multi-byte character, and ends in the middle of one.
    Utf8Cut,
}

impl Malformed {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::Unterminated => "unterminated",
            Malformed::Syntax => "syntax",
            Malformed::NoTitle => "no StreamTitle first",
            Malformed::Padding => "padding",
            Malformed::Utf8Cut => "UTF-8 cut inside a character",
        }
    }
}

/// What a block said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// L = 0: nothing changed.
    Unchanged,
    /// A well-formed block with a title.
    Title {
        /// The connection's first title.
        first: bool,
        /// Differs from the connection's previous title.
        changed: bool,
    },
    /// A malformed block.
    Malformed(Malformed),
}

/// What the demultiplexer reports while it consumes bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum IcyEvent<'a> {
    /// Audio bytes (never split by a block; consecutive events are consecutive audio).
    Audio(&'a [u8]),
    /// A whole block: its verdict and its size on the wire (length byte included).
    Block {
        /// What the block said.
        verdict: Verdict,
        /// 1 + L × 16.
        bytes: u32,
        /// Index of this block on the connection (0 = its first).
        index: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// Expecting a key's first letter, or a zero byte (padding).
    KeyStart,
    /// Inside a key.
    Key,
    /// After `=`: expecting `'`.
    Quote,
    /// Inside a value.
    Value,
    /// Inside a value, just after a `'` (a `;` now ends the value).
    ValueQuote,
    /// Zero padding.
    Padding,
    /// A zero byte inside a key or a value: the text was cut there and padded (an
    /// unterminated field if only zeros follow).
    CutPadding,
}

/// A streaming check of one block's payload.
#[derive(Clone, Debug)]
struct BlockCheck {
    field: Field,
    /// Fields completed.
    fields: u32,
    /// Bytes of the current key matched against `StreamTitle` (first field only).
    key_pos: u8,
    /// The first field's key is `StreamTitle` so far.
    key_ok: bool,
    pad: u32,
    err: Option<Malformed>,
    /// FNV-1a over the title value.
    hash: u64,
    title_len: u32,
    sample: [u8; SAMPLE],
    /// UTF-8 continuation bytes still needed in the title.
    utf8_need: u8,
    /// The title had a complete multi-byte UTF-8 character.
    utf8_multi: bool,
    /// The title is not valid UTF-8 (so it is Latin-1 or broken; no cut verdict).
    utf8_bad: bool,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const TITLE_KEY: &[u8] = b"StreamTitle";

impl BlockCheck {
    fn new() -> Self {
        BlockCheck {
            field: Field::KeyStart,
            fields: 0,
            key_pos: 0,
            key_ok: true,
            pad: 0,
            err: None,
            hash: FNV_OFFSET,
            title_len: 0,
            sample: [0; SAMPLE],
            utf8_need: 0,
            utf8_multi: false,
            utf8_bad: false,
        }
    }

    fn fail(&mut self, why: Malformed) {
        if self.err.is_none() {
            self.err = Some(why);
        }
    }

    fn title_byte(&mut self, b: u8) {
        if self.fields != 0 {
            return;
        }
        if (self.title_len as usize) < SAMPLE {
            self.sample[self.title_len as usize] = b;
        }
        self.title_len += 1;
        self.hash = (self.hash ^ b as u64).wrapping_mul(FNV_PRIME);
        if self.utf8_need > 0 {
            if b & 0xC0 == 0x80 {
                self.utf8_need -= 1;
                if self.utf8_need == 0 {
                    self.utf8_multi = true;
                }
                return;
            }
            self.utf8_bad = true;
            self.utf8_need = 0;
        }
        match b {
            0x00..=0x7F => {}
            0xC2..=0xDF => self.utf8_need = 1,
            0xE0..=0xEF => self.utf8_need = 2,
            0xF0..=0xF4 => self.utf8_need = 3,
            _ => self.utf8_bad = true,
        }
    }

    fn byte(&mut self, b: u8) {
        if self.err.is_some() {
            return;
        }
        match self.field {
            Field::KeyStart => {
                if b == 0 {
                    if self.fields == 0 {
                        self.fail(Malformed::Padding);
                    }
                    self.field = Field::Padding;
                    self.pad = 1;
                } else if b.is_ascii_alphabetic() {
                    self.field = Field::Key;
                    self.key_pos = 0;
                    self.key_ok = true;
                    self.key_char(b);
                } else {
                    self.fail(Malformed::Syntax);
                }
            }
            Field::Key => {
                if b == 0 {
                    self.field = Field::CutPadding;
                } else if b == b'=' {
                    if self.fields == 0
                        && !(self.key_ok && self.key_pos as usize == TITLE_KEY.len())
                    {
                        self.fail(Malformed::NoTitle);
                    }
                    self.field = Field::Quote;
                } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                    self.key_char(b);
                } else {
                    self.fail(Malformed::Syntax);
                }
            }
            Field::Quote => {
                if b == b'\'' {
                    self.field = Field::Value;
                } else if b == 0 {
                    self.field = Field::CutPadding;
                } else {
                    self.fail(Malformed::Syntax);
                }
            }
            Field::Value => self.value_byte(b),
            Field::ValueQuote => {
                if b == 0 {
                    self.field = Field::CutPadding;
                } else if b == b';' {
                    self.end_value();
                } else {
                    // The quote was part of the value.
                    self.title_byte(b'\'');
                    self.field = Field::Value;
                    self.value_byte(b);
                }
            }
            Field::Padding => {
                if b == 0 {
                    self.pad += 1;
                } else {
                    self.fail(Malformed::Syntax);
                }
            }
            Field::CutPadding => {
                if b != 0 {
                    self.fail(Malformed::Syntax);
                }
            }
        }
    }

    fn key_char(&mut self, b: u8) {
        if self.fields == 0 {
            let p = self.key_pos as usize;
            self.key_ok &= p < TITLE_KEY.len() && TITLE_KEY[p] == b;
            self.key_pos = self.key_pos.saturating_add(1);
        }
    }

    fn value_byte(&mut self, b: u8) {
        match b {
            b'\'' => self.field = Field::ValueQuote,
            0 => self.field = Field::CutPadding,
            _ => self.title_byte(b),
        }
    }

    fn end_value(&mut self) {
        if self.fields == 0 {
            if self.utf8_need > 0 && !self.utf8_bad && self.utf8_multi {
                self.fail(Malformed::Utf8Cut);
            }
            // Fold the length in: "" and a title of NULs hash apart.
            self.hash = (self.hash ^ self.title_len as u64).wrapping_mul(FNV_PRIME);
        }
        self.fields += 1;
        self.field = Field::KeyStart;
    }

    /// The payload is complete: its verdict (`Ok` = a well-formed title).
    fn finish(&mut self) -> Result<(), Malformed> {
        if let Some(e) = self.err {
            return Err(e);
        }
        match self.field {
            Field::KeyStart if self.fields > 0 => Ok(()),
            Field::KeyStart => Err(Malformed::Padding),
            Field::Padding if self.pad >= 16 => Err(Malformed::Padding),
            Field::Padding => Ok(()),
            Field::Value | Field::CutPadding
                if self.fields == 0 && self.utf8_need > 0 && !self.utf8_bad && self.utf8_multi =>
            {
                // Cut inside a character and without its closing `';`.
                Err(Malformed::Utf8Cut)
            }
            _ => Err(Malformed::Unterminated),
        }
    }
}

/// Splits a body into audio and metadata blocks and checks every block; fixed-size state.
#[derive(Clone, Debug)]
pub struct IcyDemux {
    metaint: u32,
    /// Audio bytes before the next length byte.
    audio_left: u32,
    /// Payload bytes of the current block still to come (0 = not in a block).
    block_left: u32,
    block_bytes: u32,
    check: BlockCheck,
    /// Hash of the connection's previous title.
    last_title: Option<u64>,
    blocks: u64,
    /// The start of the last title checked (well-formed or not), and its length.
    last_sample: [u8; SAMPLE],
    last_len: u32,
}

impl IcyDemux {
    /// A demultiplexer for a body with `icy-metaint: metaint` (at least 1).
    pub fn new(metaint: u32) -> Self {
        let metaint = metaint.max(1);
        IcyDemux {
            metaint,
            audio_left: metaint,
            block_left: 0,
            block_bytes: 0,
            check: BlockCheck::new(),
            last_title: None,
            blocks: 0,
            last_sample: [0; SAMPLE],
            last_len: 0,
        }
    }

    /// The `icy-metaint` this demultiplexer splits at.
    pub fn metaint(&self) -> u32 {
        self.metaint
    }

    /// The start of the last block's title (up to [`SAMPLE`] bytes, lossily decoded: UTF-8
    /// when valid, else Latin-1) and the title's whole length in bytes.
    pub fn last_title(&self) -> (String, u32) {
        let b = &self.last_sample[..(self.last_len as usize).min(SAMPLE)];
        let s = match std::str::from_utf8(b) {
            Ok(s) => s.to_string(),
            Err(e) if e.error_len().is_none() => {
                // Valid UTF-8 up to a character cut by the sample's end (or the server).
                let ok = std::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or("");
                format!("{ok}\u{FFFD}")
            }
            Err(_) => b.iter().map(|&c| c as char).collect(),
        };
        (s, self.last_len)
    }

    /// True while inside a block (a body that ends here ended inside one).
    pub fn mid_block(&self) -> bool {
        self.block_left > 0
    }

    /// Consumes `data`, reporting audio and blocks through `on`.
    pub fn feed(&mut self, mut data: &[u8], on: &mut impl FnMut(IcyEvent)) {
        while !data.is_empty() {
            if self.block_left > 0 {
                let n = (self.block_left as usize).min(data.len());
                for &b in &data[..n] {
                    self.check.byte(b);
                }
                data = &data[n..];
                self.block_left -= n as u32;
                if self.block_left == 0 {
                    self.end_block(on);
                }
            } else if self.audio_left > 0 {
                let n = (self.audio_left as usize).min(data.len());
                on(IcyEvent::Audio(&data[..n]));
                data = &data[n..];
                self.audio_left -= n as u32;
            } else {
                let len = data[0] as u32;
                data = &data[1..];
                if len == 0 {
                    let index = self.blocks;
                    self.blocks += 1;
                    self.audio_left = self.metaint;
                    on(IcyEvent::Block {
                        verdict: Verdict::Unchanged,
                        bytes: 1,
                        index,
                    });
                } else {
                    self.block_left = len * 16;
                    self.block_bytes = 1 + len * 16;
                    self.check = BlockCheck::new();
                }
            }
        }
    }

    fn end_block(&mut self, on: &mut impl FnMut(IcyEvent)) {
        let verdict = match self.check.finish() {
            Ok(()) => {
                let h = self.check.hash;
                let first = self.last_title.is_none();
                let changed = !first && self.last_title != Some(h);
                self.last_title = Some(h);
                Verdict::Title { first, changed }
            }
            Err(e) => Verdict::Malformed(e),
        };
        self.last_sample = self.check.sample;
        self.last_len = self.check.title_len;
        let index = self.blocks;
        self.blocks += 1;
        self.audio_left = self.metaint;
        on(IcyEvent::Block {
            verdict,
            bytes: self.block_bytes,
            index,
        });
    }
}

/// Builds a block as Icecast does (for tests): length byte, `text`, zero padding to a
/// multiple of 16. `text` must be at most 4080 bytes.
pub fn block(text: &[u8]) -> Vec<u8> {
    assert!(text.len() <= 255 * 16, "block text too long");
    let n = text.len().div_ceil(16);
    let mut out = vec![n as u8];
    out.extend_from_slice(text);
    out.resize(1 + n * 16, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `data` cut at `cuts`; returns the audio and the verdicts.
    fn run(metaint: u32, data: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<Verdict>, IcyDemux) {
        let mut d = IcyDemux::new(metaint);
        let mut audio = Vec::new();
        let mut v = Vec::new();
        let mut on = |e: IcyEvent| match e {
            IcyEvent::Audio(a) => audio.extend_from_slice(a),
            IcyEvent::Block { verdict, .. } => v.push(verdict),
        };
        let mut at = 0;
        for &c in cuts {
            let c = c.clamp(at, data.len());
            d.feed(&data[at..c], &mut on);
            at = c;
        }
        d.feed(&data[at..], &mut on);
        (audio, v, d)
    }

    /// Audio `audio` with `blocks[i]` after the (i+1)-th `metaint` bytes.
    fn interleave(metaint: usize, audio: &[u8], blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, chunk) in audio.chunks(metaint).enumerate() {
            out.extend_from_slice(chunk);
            if chunk.len() == metaint {
                out.extend_from_slice(blocks.get(i).map_or(&[0u8][..], |b| b));
            }
        }
        out
    }

    fn verdict(text: &[u8]) -> Verdict {
        let mut data = vec![7u8; 10];
        data.extend(block(text));
        run(10, &data, &[]).1[0]
    }

    const FIRST: Verdict = Verdict::Title {
        first: true,
        changed: false,
    };

    #[test]
    fn well_formed_blocks() {
        assert_eq!(verdict(b"StreamTitle='Song';"), FIRST);
        assert_eq!(verdict(b"StreamTitle='';"), FIRST);
        assert_eq!(
            verdict(b"StreamTitle='Don't stop';StreamUrl='http://x/';"),
            FIRST
        );
        // Exactly 16 bytes: no padding at all.
        assert_eq!(verdict(b"StreamTitle='a';"), FIRST);
        assert_eq!(verdict(b"StreamTitle='abc';"), FIRST);
        // UTF-8 and Latin-1 titles.
        assert_eq!(verdict("StreamTitle='Café – 東京';".as_bytes()), FIRST);
        assert_eq!(verdict(b"StreamTitle='Caf\xe9';"), FIRST);
    }

    #[test]
    fn malformed_blocks() {
        let m = |t: &[u8]| match verdict(t) {
            Verdict::Malformed(k) => k,
            v => panic!("{:?} passed as {v:?}", String::from_utf8_lossy(t)),
        };
        assert_eq!(m(b"StreamTitle='cut sho"), Malformed::Unterminated);
        assert_eq!(m(b"StreamTitle="), Malformed::Unterminated);
        assert_eq!(m(b"StreamTit"), Malformed::Unterminated);
        assert_eq!(m(b"StreamUrl='x';StreamTitle='a';"), Malformed::NoTitle);
        assert_eq!(m(b"Streamtitle='a';"), Malformed::NoTitle);
        assert_eq!(m(b"StreamTitleX='a';"), Malformed::NoTitle);
        assert_eq!(m(b"StreamTitle'a';"), Malformed::Syntax);
        assert_eq!(m(b"StreamTitle=a;"), Malformed::Syntax);
        assert_eq!(m(b"StreamTitle='a';junk"), Malformed::Unterminated);
        assert_eq!(m(b"StreamTitle='a';;"), Malformed::Syntax);
        assert_eq!(m(b"StreamTitle='a';\0\0x"), Malformed::Syntax);
        assert_eq!(m(b"StreamTitle='a\0b';"), Malformed::Syntax);
        assert_eq!(m(b" StreamTitle='a';"), Malformed::Syntax);
        // UTF-8 cut inside a character, with and without its `';`.
        let t = "StreamTitle='東京".as_bytes();
        assert_eq!(m(&t[..t.len() - 1]), Malformed::Utf8Cut);
        let mut t2 = t[..t.len() - 1].to_vec();
        t2.extend_from_slice(b"';");
        assert_eq!(m(&t2), Malformed::Utf8Cut);
        // Zero bytes only, and a length byte one too large.
        let mut d = vec![1u8; 4];
        d.push(1);
        d.extend([0u8; 16]);
        assert_eq!(
            run(4, &d, &[]).1,
            vec![Verdict::Malformed(Malformed::Padding)]
        );
        let mut d = vec![1u8; 4];
        d.push(2);
        d.extend_from_slice(b"StreamTitle='a';");
        d.extend([0u8; 16]);
        assert_eq!(
            run(4, &d, &[]).1,
            vec![Verdict::Malformed(Malformed::Padding)]
        );
    }

    #[test]
    fn titles_first_changed_and_repeated() {
        let a = block(b"StreamTitle='A';");
        let b = block(b"StreamTitle='B';");
        let audio: Vec<u8> = (0..60u8).collect();
        let data = interleave(10, &audio, &[a.clone(), vec![0], a.clone(), b, vec![0], a]);
        let (got, v, d) = run(10, &data, &[]);
        assert_eq!(got, audio);
        assert_eq!(
            v,
            vec![
                FIRST,
                Verdict::Unchanged,
                Verdict::Title {
                    first: false,
                    changed: false
                },
                Verdict::Title {
                    first: false,
                    changed: true
                },
                Verdict::Unchanged,
                Verdict::Title {
                    first: false,
                    changed: true
                },
            ]
        );
        assert_eq!(d.last_title(), ("A".to_string(), 1));
    }

    #[test]
    fn a_cut_title_is_reported_with_its_start() {
        let title = "東京".repeat(700); // 4,200 bytes: more than a block holds
        let mut text = format!("StreamTitle='{title}';").into_bytes();
        text.truncate(255 * 16); // what a server that cuts bytes sends
        let mut data = vec![0u8; 8];
        data.extend(block(&text));
        let (_, v, d) = run(8, &data, &[3, 100, 2000]);
        assert_eq!(v, vec![Verdict::Malformed(Malformed::Utf8Cut)]);
        let (s, len) = d.last_title();
        assert!(s.starts_with("東京東京"), "{s}");
        assert_eq!(len as usize, 255 * 16 - 13);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any mix of blocks, cut at arbitrary read boundaries, gives back exactly the
        /// audio, and the same verdicts as the uncut stream.
        #[test]
        fn any_read_boundaries(
            metaint in 1usize..64,
            audio_len in 0usize..2000,
            titles in proptest::collection::vec(
                proptest::option::of("[ -~é東]{0,40}"), 0..40),
            cuts in proptest::collection::vec(0usize..5000, 0..60),
        ) {
            let audio: Vec<u8> = (0..audio_len).map(|i| (i * 31 + 7) as u8).collect();
            let blocks: Vec<Vec<u8>> = titles
                .iter()
                .map(|t| match t {
                    None => vec![0],
                    Some(t) => {
                        let mut t = t.clone();
                        while t.contains("';") {
                            t = t.replace("';", "'");
                        }
                        block(format!("StreamTitle='{t}';").as_bytes())
                    }
                })
                .collect();
            let data = interleave(metaint, &audio, &blocks);
            let (a0, v0, _) = run(metaint as u32, &data, &[]);
            let mut cuts = cuts;
            cuts.sort_unstable();
            let (a1, v1, _) = run(metaint as u32, &data, &cuts);
            prop_assert_eq!(&a0, &audio);
            prop_assert_eq!(&a1, &audio);
            prop_assert_eq!(&v0, &v1);
            prop_assert!(v1.iter().all(|v| !matches!(v, Verdict::Malformed(_))), "{:?}", v1);
            let n_blocks = audio_len / metaint;
            prop_assert_eq!(v1.len(), n_blocks);
        }

        /// Arbitrary bytes never panic and never lose audio bytes.
        #[test]
        fn garbage_never_panics(
            metaint in 1u32..50,
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(0usize..3000, 0..20),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let (a, _, _) = run(metaint, &data, &cuts);
            prop_assert!(a.len() <= data.len());
        }
    }
}
