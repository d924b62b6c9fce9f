//! Metadata tags found in MP3 (and sometimes ADTS AAC) files: ID3v2 at the
//! start, ID3v1 and APEv2 at the end. A looped file or a concatenation of
//! files meets them again mid-stream. They are skipped whole, counted as tags
//! (never as garbage) and never sent to a client.

/// What a tag check found at the start of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TagCheck {
    /// No tag starts here.
    None,
    /// Cannot tell before the window holds this many bytes.
    NeedMore(usize),
    /// A tag of this many bytes starts here (may reach past the window).
    Tag(usize),
    /// An APE tag footer (32 bytes) ends a tag whose items, `items` bytes,
    /// came before it (a tag without a header is met footer first only if
    /// its items were skipped as garbage: the caller may count them back as
    /// tag bytes).
    ApeFooter { items: usize },
}

/// The largest APE tag believed (larger ones are taken for garbage): a tag
/// holding cover art is well under this.
const APE_MAX: usize = 16 << 20;

/// Check for a tag at the start of `window` (which must hold at least 4
/// bytes). An ID3v1 tag (`TAG` + 125 bytes, or an extended `TAG+` tag of 227
/// bytes) has nothing in it to check, so it is believed only at a `clean`
/// place: right after a frame, another tag, or the start of a session.
pub(super) fn check(window: &[u8], clean: bool) -> TagCheck {
    if window.starts_with(b"ID3") {
        let Some(h) = window.get(..10) else {
            return TagCheck::NeedMore(10);
        };
        return id3v2_len(h).map_or(TagCheck::None, TagCheck::Tag);
    }
    if window.starts_with(b"APET") {
        let Some(h) = window.get(..32) else {
            return TagCheck::NeedMore(32);
        };
        return ape(h);
    }
    if clean && window.starts_with(b"TAG+") {
        return TagCheck::Tag(227);
    }
    if clean && window.starts_with(b"TAG") {
        return TagCheck::Tag(128);
    }
    TagCheck::None
}

/// Whether the 4 bytes after a candidate frame look like the start of a tag
/// (which confirms the candidate as well as a next frame header does: files
/// end with a frame followed by a tag).
pub(super) fn starts_like_tag(next: &[u8]) -> bool {
    next.starts_with(b"ID3") || next.starts_with(b"TAG") || next.starts_with(b"APET")
}

/// The whole length of the ID3v2 tag whose 10-byte header is `h`, or `None`
/// if `h` is not a valid ID3v2 header: `ID3`, major version 2 to 4, a
/// revision other than 0xFF, no undefined flag set, and a synchsafe size
/// (four bytes below 0x80). The length is 10 + size, plus a 10-byte footer
/// when a v2.4 header says there is one.
pub(super) fn id3v2_len(h: &[u8]) -> Option<usize> {
    let [b'I', b'D', b'3', major, revision, flags, s0, s1, s2, s3] = *h else {
        return None;
    };
    let undefined_flags = match major {
        2 => 0x3F,
        3 => 0x1F,
        4 => 0x0F,
        _ => return None,
    };
    if revision == 0xFF || flags & undefined_flags != 0 {
        return None;
    }
    if [s0, s1, s2, s3].iter().any(|b| b & 0x80 != 0) {
        return None;
    }
    let size = (usize::from(s0) << 21)
        | (usize::from(s1) << 14)
        | (usize::from(s2) << 7)
        | usize::from(s3);
    let footer = if major == 4 && flags & 0x10 != 0 {
        10
    } else {
        0
    };
    Some(10 + size + footer)
}

/// An APE tag header or footer (`h` is its 32 bytes): `APETAGEX`, version
/// 1000 or 2000 (little-endian), the tag size (items + footer, not the
/// header), the item count, the flags (bit 29 set: this is the header), 8
/// zero bytes.
fn ape(h: &[u8]) -> TagCheck {
    let le = |at: usize| -> Option<usize> {
        let b = h.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if !h.starts_with(b"APETAGEX") {
        return TagCheck::None;
    }
    let (Some(version), Some(size), Some(flags)) = (le(8), le(12), le(20)) else {
        return TagCheck::None;
    };
    let reserved_zero = h.get(24..32).is_some_and(|r| r.iter().all(|b| *b == 0));
    if !(version == 1000 || version == 2000) || !reserved_zero || !(32..=APE_MAX).contains(&size) {
        return TagCheck::None;
    }
    if flags & (1 << 29) != 0 {
        TagCheck::Tag(32 + size)
    } else {
        TagCheck::ApeFooter { items: size - 32 }
    }
}

/// Tag bookkeeping shared by the MP3 and AAC framers.
#[derive(Debug, Clone, Copy)]
pub(super) struct TagState {
    /// The last decision was a frame or a tag, or the session just began:
    /// an ID3v1 tag is believed here.
    pub(super) clean: bool,
    /// Invalid bytes skipped since the last frame or tag: the items of an
    /// APE tag met footer first (they were skipped as garbage) are counted
    /// back from these.
    pub(super) garbage_run: usize,
}

impl TagState {
    /// The state at the start of a session.
    pub(super) fn new() -> TagState {
        TagState {
            clean: true,
            garbage_run: 0,
        }
    }

    /// A frame or a tag was decided.
    pub(super) fn good(&mut self) {
        self.clean = true;
        self.garbage_run = 0;
    }

    /// One invalid byte was skipped.
    pub(super) fn bad(&mut self) {
        self.clean = false;
        self.garbage_run = self.garbage_run.saturating_add(1);
    }
}

/// Decide a tag at the start of `window` and count it in `stats`; `None`
/// when no tag starts there. The returned action skips the tag.
pub(super) fn decide(
    window: &[u8],
    state: &mut TagState,
    stats: &mut super::FramerStats,
) -> Option<super::cutter::Action> {
    use super::cutter::Action;
    match check(window, state.clean) {
        TagCheck::None => None,
        TagCheck::NeedMore(n) => Some(Action::NeedMore(n)),
        TagCheck::Tag(len) => {
            stats.tags += 1;
            stats.tag_bytes += len as u64;
            state.good();
            Some(Action::Consume(len))
        }
        TagCheck::ApeFooter { items } => {
            // The items were skipped as garbage just before: count them back.
            let back = items.min(state.garbage_run) as u64;
            stats.invalid_bytes -= back.min(stats.invalid_bytes);
            stats.tags += 1;
            stats.tag_bytes += 32 + back;
            state.good();
            Some(Action::Consume(32))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id3v2_headers() {
        // Size 0x201 = 513 in synchsafe bytes 00 00 04 01.
        assert_eq!(id3v2_len(b"ID3\x03\x00\x00\x00\x00\x04\x01"), Some(523));
        // v2.4 with a footer.
        assert_eq!(id3v2_len(b"ID3\x04\x00\x10\x00\x00\x00\x05"), Some(25));
        assert_eq!(id3v2_len(b"ID3\x05\x00\x00\x00\x00\x00\x05"), None); // version
        assert_eq!(id3v2_len(b"ID3\x03\xFF\x00\x00\x00\x00\x05"), None); // revision
        assert_eq!(id3v2_len(b"ID3\x03\x00\x01\x00\x00\x00\x05"), None); // flag
        assert_eq!(id3v2_len(b"ID3\x03\x00\x00\x80\x00\x00\x05"), None); // synchsafe
        assert_eq!(id3v2_len(b"ID3\x03\x00\x00\x00\x00\x00"), None); // short
                                                                     // The largest: 4 × 7 bits.
        assert_eq!(
            id3v2_len(b"ID3\x03\x00\x00\x7F\x7F\x7F\x7F"),
            Some(10 + (1 << 28) - 1)
        );
    }

    fn ape_bytes(version: u32, size: u32, header: bool) -> Vec<u8> {
        let mut v = b"APETAGEX".to_vec();
        v.extend(version.to_le_bytes());
        v.extend(size.to_le_bytes());
        v.extend(3u32.to_le_bytes());
        v.extend((if header { 0xA000_0000u32 } else { 0x8000_0000 }).to_le_bytes());
        v.extend([0; 8]);
        v
    }

    #[test]
    fn ape_headers_and_footers() {
        assert_eq!(
            check(&ape_bytes(2000, 100, true), false),
            TagCheck::Tag(132)
        );
        assert_eq!(
            check(&ape_bytes(2000, 100, false), false),
            TagCheck::ApeFooter { items: 68 }
        );
        assert_eq!(
            check(&ape_bytes(1000, 32, false), false),
            TagCheck::ApeFooter { items: 0 }
        );
        assert_eq!(check(&ape_bytes(3000, 100, true), false), TagCheck::None);
        assert_eq!(check(&ape_bytes(2000, 31, true), false), TagCheck::None);
        let mut bad = ape_bytes(2000, 100, true);
        bad[30] = 1;
        assert_eq!(check(&bad, false), TagCheck::None);
        assert_eq!(
            check(&ape_bytes(2000, 100, true)[..20], false),
            TagCheck::NeedMore(32)
        );
    }

    #[test]
    fn id3v1_only_at_a_clean_place() {
        let mut t = b"TAG".to_vec();
        t.extend([b'x'; 125]);
        assert_eq!(check(&t, true), TagCheck::Tag(128));
        assert_eq!(check(&t, false), TagCheck::None);
        assert_eq!(check(b"TAG+xxxx", true), TagCheck::Tag(227));
        assert_eq!(check(b"ID3\x03", true), TagCheck::NeedMore(10));
        assert_eq!(check(b"\xFF\xFB\x90\x64", true), TagCheck::None);
    }
}
