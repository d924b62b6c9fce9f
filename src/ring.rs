//! The frame ring: one writer (the source thread), many lock-free readers (the
//! shards), in one anonymous shared mapping per stream.
//!
//! # Layout
//!
//! The mapping holds `capacity` slots of `stride` bytes each (a multiple of
//! 64, so every slot starts 8-aligned; the mapping is page aligned). A slot is
//! a run of 64-bit words:
//!
//! ```text
//! word 0     seq: AtomicU64   0 = never written; 2n+1 = frame n being written;
//!                             2n+2 = frame n complete
//! word 1     len: AtomicU64   length of the frame in the slot (<= frame_max)
//! words 2..  data: [AtomicU64; frame_max.div_ceil(8)]  the frame's bytes, in
//!            memory order (byte i of the frame is byte i of the data area):
//!            word k holds bytes 8k..8k+8 as `u64::from_ne_bytes`, the last
//!            word padded with zeros
//! ```
//!
//! Frame `n` lives in slot `n % capacity`. The writer's `head` (the number of
//! frames published, i.e. the next frame number) sits on its own 128-byte line,
//! away from the slots, so the only line readers poll is written once per frame.
//!
//! # Protocol (a seqlock per slot)
//!
//! Writer, for frame `n`: `seq = 2n+1` (Relaxed) → `fence(Release)` → `len`
//! and the data words, each one word-sized Relaxed store → `seq = 2n+2`
//! (Release) → `head = n+1` (Release).
//!
//! Reader, for frame `n`: load `head` (Acquire); load `seq` (Acquire) and
//! require `2n+2`; load `len` (Relaxed); use the bytes — hand them to the
//! kernel in a `sendmsg`, or copy them with word-sized Relaxed loads
//! ([`Ring::copy_frame`]); then `fence(Acquire)` and load `seq` again
//! (Relaxed): if it is still `2n+2` no write to the slot overlapped the use,
//! so the bytes were frame `n` whole. Otherwise they may be torn and must be
//! thrown away (a client that already sent them is disconnected and counted).
//!
//! Why the orderings are enough (the argument of Boehm's "Can seqlocks get
//! along with programming language memory models?", as in crossbeam's
//! `SeqLock`):
//!
//! - *A copy that passes the check is not stale.* The reader's first `seq`
//!   load is Acquire and reads the writer's Release store of `2n+2`, so every
//!   store of frame `n` (len and data) happens-before the reader's loads; by
//!   coherence those loads return frame `n`'s values or later ones.
//! - *A copy that saw a later value fails the check.* If any data (or len)
//!   load reads a value the writer stored for a later frame `m` (same slot),
//!   that store is after the writer's `fence(Release)` that follows
//!   `seq = 2m+1`, and the load is before the reader's `fence(Acquire)`: the
//!   two fences synchronize, so `seq = 2m+1` happens-before the reader's
//!   second `seq` load, which therefore reads `2m+1` or later, never `2n+2`.
//! - *head.* The Release store of `head = n+1` comes after `seq = 2n+2`; a
//!   reader that Acquires `head > n` sees slot `n` complete (or rewritten,
//!   which `seq` tells).
//!
//! The loom model in this file (`mod loom_model`, run by `.ci/loom` under
//! `--cfg ringcast_loom`) checks exactly this code: every copy a reader
//! accepts is one frame whole.
//!
//! Readers never write to shared memory, so any number of cores read without
//! contending for cache lines. Readers keep [`Ring::guard`] slots between
//! themselves and the writer so that a lap is detected before it happens in
//! the common case; the after-check catches the rest.
//!
//! # Data races, stated honestly
//!
//! In Rust, every access to slot memory is atomic: the writer stores whole
//! words with `AtomicU64::store`, copies load whole words with
//! `AtomicU64::load` (the "atomic memcpy" crossbeam's `AtomicCell` notes ask
//! for), so a copy that overlaps a write is a race on atomics, not a data
//! race: it may see a mix of old and new words, which the seqlock check
//! detects, but it is not undefined behaviour. No `&[u8]` to slot bytes is
//! ever created.
//!
//! The kernel is the other reader: a shard hands [`FrameRef::ptr`] to
//! `sendmsg`, and the kernel reads the slot bytes with its own plain loads
//! while the writer may be storing to them. That is outside Rust's memory
//! model (like any memory shared with the kernel or another process); the
//! seqlock check after the `sendmsg` is what makes it sound in practice. It is
//! also why the data words hold the frame's bytes in native byte order: the
//! kernel sees the memory as plain bytes.

use std::io;
use std::mem::MaybeUninit;

#[cfg(ringcast_loom)]
use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(ringcast_loom))]
use std::sync::atomic::{fence, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// Bytes of slot header (`seq`, `len`) before the frame bytes.
const SLOT_HEADER: usize = 16;

/// Bytes per atomic word.
const WORD: usize = 8;

/// A frame's location in the ring, valid while its sequence number holds.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef {
    /// Frame number.
    pub n: u64,
    /// Start of the frame bytes inside the mapping (8-aligned). For the
    /// kernel (`sendmsg`): Rust code copies through [`Ring::copy_frame`].
    /// Under `cfg(ringcast_loom)` this points at loom's atomics, not bytes.
    pub ptr: *const u8,
    /// Frame length in bytes.
    pub len: usize,
}

/// The memory the slots live in: an anonymous shared mapping, seen as words.
#[cfg(not(ringcast_loom))]
struct Slots {
    /// Start of the mapping (page aligned, so 8-aligned).
    base: *mut u8,
    /// Length of the mapping in bytes (a multiple of 64).
    len: usize,
}

#[cfg(not(ringcast_loom))]
impl Slots {
    /// Map `len` bytes, zeroed.
    fn new(len: usize) -> io::Result<Slots> {
        // SAFETY: anonymous private mapping with no address hint; the result is
        // checked against MAP_FAILED before use. Anonymous memory is zeroed, so
        // every slot starts with seq = 0 (never written).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Slots {
            base: base.cast(),
            len,
        })
    }

    /// Words `first .. first + count` of the mapping.
    #[inline]
    fn words(&self, first: usize, count: usize) -> &[AtomicU64] {
        // INVARIANT: callers stay inside the mapping.
        debug_assert!((first + count) * WORD <= self.len);
        // SAFETY: the range is inside the mapping (checked above in debug
        // builds; `Ring::slot` only asks for whole slots), which is 8-aligned,
        // lives as long as `self`, and holds plain integers (every bit pattern
        // is a valid u64). `AtomicU64` has the size and alignment of `u64`.
        // Rust code only ever accesses this memory through these atomics; the
        // kernel reads it too (see the module docs), but never writes it.
        unsafe { std::slice::from_raw_parts(self.base.cast::<AtomicU64>().add(first), count) }
    }
}

#[cfg(not(ringcast_loom))]
impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned; no reader can
        // reach the ring any more (we are dropping its only owner).
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

/// Under loom the slots are a heap array of loom's atomics (loom cannot see
/// an mmap); everything above `Slots` is the same code as in the real ring.
#[cfg(ringcast_loom)]
struct Slots {
    /// The slot words, zeroed.
    words: Box<[AtomicU64]>,
}

#[cfg(ringcast_loom)]
impl Slots {
    fn new(len: usize) -> io::Result<Slots> {
        Ok(Slots {
            words: (0..len / WORD).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    #[inline]
    fn words(&self, first: usize, count: usize) -> &[AtomicU64] {
        &self.words[first..first + count]
    }
}

/// The shared ring of one stream.
pub struct Ring {
    /// The slots (`capacity * stride` bytes).
    slots: Slots,
    /// Length of the mapping in bytes.
    map_len: usize,
    /// Number of slots.
    capacity: u64,
    /// Bytes per slot (header + frame_max, rounded up to 64).
    stride: usize,
    /// Largest frame a slot holds.
    frame_max: usize,
    /// Number of frames ever published (= next frame number). Written only by
    /// the writer with Release after the slot is complete; readers load it with
    /// Acquire, which makes the slot's `seq` store visible to them. Alone on its
    /// cache line so slot writes do not invalidate it.
    head: CachePadded<AtomicU64>,
}

// SAFETY: the mapping is shared memory accessed by Rust only through atomics
// (seq, len, data words, head), validated by the seqlock protocol; `Ring`
// owns the mapping and unmaps it only in Drop, when no reader can hold it
// (readers hold an `Arc` to the stream that owns the ring).
unsafe impl Send for Ring {}
// SAFETY: see above; all shared mutation goes through atomics and the
// single-writer seqlock protocol (enforced by `RingWriter` being unique).
unsafe impl Sync for Ring {}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity)
            .field("frame_max", &self.frame_max)
            .field("head", &self.head())
            .finish()
    }
}

/// One slot, as its words.
struct Slot<'a> {
    /// `2n+1` while frame `n` is being written, `2n+2` once it is complete.
    seq: &'a AtomicU64,
    /// The frame's length in bytes.
    len: &'a AtomicU64,
    /// `frame_max.div_ceil(8)` words of frame bytes.
    data: &'a [AtomicU64],
}

impl Ring {
    /// Map a ring of `capacity` slots of up to `frame_max` bytes.
    pub fn new(capacity: usize, frame_max: usize) -> io::Result<Ring> {
        if capacity < 3 || frame_max == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring needs at least 3 slots and frames of at least 1 byte",
            ));
        }
        let stride = SLOT_HEADER
            .checked_add(frame_max)
            .map(|b| b.div_ceil(64) * 64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "ring size overflows"))?;
        // The data words fit in the slot: stride >= 16 + frame_max rounded up
        // to 8, since stride is a multiple of 64.
        debug_assert!(SLOT_HEADER + frame_max.div_ceil(WORD) * WORD <= stride);
        let map_len = stride
            .checked_mul(capacity)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "ring size overflows"))?;
        Ok(Ring {
            slots: Slots::new(map_len)?,
            map_len,
            capacity: capacity as u64,
            stride,
            frame_max,
            head: CachePadded::new(AtomicU64::new(0)),
        })
    }

    /// Number of slots.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Largest frame a slot holds.
    pub fn frame_max(&self) -> usize {
        self.frame_max
    }

    /// Bytes mapped for this ring.
    pub fn mapped_bytes(&self) -> usize {
        self.map_len
    }

    /// Slots a reader keeps between itself and the writer: a reader whose next
    /// frame is more than `capacity - guard` behind `head` treats itself as
    /// lapped and jumps forward, so the writer is (normally) never writing a
    /// slot that a reader is sending from.
    pub fn guard(&self) -> u64 {
        (self.capacity / 8).clamp(1, 16).min(self.capacity - 2)
    }

    /// Frames published so far (the next frame's number). Acquire: pairs with
    /// the writer's Release store, so slots below the returned head are
    /// visible as complete (unless since overwritten, which `seq` tells).
    #[inline]
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Oldest frame number a reader may still start sending now.
    #[inline]
    pub fn oldest_safe(&self, head: u64) -> u64 {
        head.saturating_sub(self.capacity - self.guard())
    }

    /// The words of the slot frame `n` lives in.
    #[inline]
    fn slot(&self, n: u64) -> Slot<'_> {
        self.slot_at((n % self.capacity) as usize)
    }

    /// The words of slot `index` (< capacity).
    #[inline]
    fn slot_at(&self, index: usize) -> Slot<'_> {
        debug_assert!((index as u64) < self.capacity);
        let stride_words = self.stride / WORD;
        // index < capacity: the slot's words are inside the mapping.
        let words = self.slots.words(index * stride_words, stride_words);
        let (header, data) = words.split_at(SLOT_HEADER / WORD);
        Slot {
            seq: &header[0],
            len: &header[1],
            data: &data[..self.frame_max.div_ceil(WORD)],
        }
    }

    /// Locate frame `n` if the slot holds it complete right now. The caller
    /// must call [`Ring::still_valid`] after using the bytes.
    #[inline]
    pub fn frame(&self, n: u64) -> Option<FrameRef> {
        let slot = self.slot(n);
        let len = self.begin_read(&slot, n)?;
        Some(FrameRef {
            n,
            ptr: slot.data.as_ptr().cast::<u8>(),
            len,
        })
    }

    /// After using frame `n`'s bytes: true when no write to its slot began
    /// since [`Ring::frame`] returned it, so what was used is frame `n` whole.
    #[inline]
    pub fn still_valid(&self, n: u64) -> bool {
        end_read(&self.slot(n), n)
    }

    /// The reader's first half: frame `n`'s length if `slot` holds it
    /// complete now.
    #[inline]
    fn begin_read(&self, slot: &Slot<'_>, n: u64) -> Option<usize> {
        // Acquire: if we see 2n+2, we see the len and bytes the writer stored
        // before its Release store of 2n+2.
        if slot.seq.load(Ordering::Acquire) != 2 * n + 2 {
            return None;
        }
        // Relaxed is enough: ordered after the Acquire load above. A torn value
        // is caught by `end_read`; clamping keeps the iovec (and a copy)
        // inside the slot even then.
        Some((slot.len.load(Ordering::Relaxed) as usize).min(self.frame_max))
    }

    /// Copy frame `n` into `out` (cleared first) if it can be read whole.
    /// Returns false (and leaves `out` unspecified) when the frame is gone or
    /// was overwritten during the copy.
    pub fn copy_frame(&self, n: u64, out: &mut Vec<u8>) -> bool {
        self.copy_frame_from(n, 0, out)
    }

    /// Append frame `n` whole to `out` if it can be read whole; on failure
    /// `out` is left as it was and false returned.
    pub fn append_frame(&self, n: u64, out: &mut Vec<u8>) -> bool {
        let before = out.len();
        if self.load_frame(n, 0, out) {
            true
        } else {
            out.truncate(before);
            false
        }
    }

    /// Like [`Ring::copy_frame`] but only the bytes from `offset` on.
    pub fn copy_frame_from(&self, n: u64, offset: usize, out: &mut Vec<u8>) -> bool {
        out.clear();
        self.load_frame(n, offset, out)
    }

    /// The validated copy: append frame `n`'s bytes from `offset` (clamped to
    /// its length) to `out` with word-sized atomic loads, then check `seq`.
    /// True when the appended bytes are frame `n`'s; on false `out` holds
    /// whatever was appended (possibly torn, never beyond the slot).
    #[inline]
    fn load_frame(&self, n: u64, offset: usize, out: &mut Vec<u8>) -> bool {
        let slot = self.slot(n);
        let Some(len) = self.begin_read(&slot, n) else {
            return false;
        };
        let offset = offset.min(len);
        let count = len - offset;
        out.reserve(count);
        let before = out.len();
        load_bytes(slot.data, offset, &mut out.spare_capacity_mut()[..count]);
        // SAFETY: `load_bytes` initialized the first `count` bytes of the
        // spare capacity (reserved above).
        unsafe { out.set_len(before + count) };
        end_read(&slot, n)
    }
}

/// The reader's second half, after using the bytes of frame `n` from `slot`:
/// true when no write to the slot began since `begin_read` saw it complete.
#[inline]
fn end_read(slot: &Slot<'_>, n: u64) -> bool {
    // The Acquire fence orders the preceding reads of the slot bytes (our
    // Relaxed word loads, or the kernel's reads inside a syscall) before the
    // seq load below: if any of those reads saw a word of a newer frame, this
    // load sees at least the writer's odd mark, which was published (Release
    // fence) before that word.
    fence(Ordering::Acquire);
    slot.seq.load(Ordering::Relaxed) == 2 * n + 2
}

/// Words per unrolled block of the copy loops (one 64-byte cache line).
const BLOCK_WORDS: usize = 8;

/// Store `frame` into `data` word by word (Relaxed atomic stores), the bytes
/// in memory order (`from_ne_bytes`, so the kernel reading the words as bytes
/// sees the frame). The last partial word is padded with zeros, so a slot
/// never holds bytes of an older frame past the new frame's end within that
/// word. Words past the frame are not touched.
#[inline]
fn store_bytes(data: &[AtomicU64], frame: &[u8]) {
    debug_assert!(frame.len() <= data.len() * WORD);
    // Relaxed for every word: ordered after the odd `seq` mark by the
    // writer's Release fence, before the even mark by its Release store.
    let store = |word: &AtomicU64, bytes: &[u8]| {
        let bytes: [u8; WORD] = bytes.try_into().expect("whole words");
        word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
    };
    // Whole lines first, eight stores per iteration (LLVM neither merges nor
    // vectorizes atomic stores, so the unrolling is ours to do).
    let lines = frame.chunks_exact(BLOCK_WORDS * WORD);
    let rest = lines.remainder();
    for (line, block) in lines.zip(data.chunks_exact(BLOCK_WORDS)) {
        let line: &[u8; BLOCK_WORDS * WORD] = line.try_into().expect("whole line");
        for (k, word) in block.iter().enumerate() {
            store(word, &line[k * WORD..(k + 1) * WORD]);
        }
    }
    let mut words = data[frame.len() / (BLOCK_WORDS * WORD) * BLOCK_WORDS..].iter();
    let mut chunks = rest.chunks_exact(WORD);
    for (chunk, word) in (&mut chunks).zip(&mut words) {
        store(word, chunk);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut bytes = [0u8; WORD];
        copy_short(&mut bytes[..tail.len()], tail);
        if let Some(word) = words.next() {
            store(word, &bytes);
        }
    }
}

/// Copy `dst.len()` bytes starting at byte `start` of `data` into `dst`, word
/// by word (Relaxed atomic loads; the caller validates with the seqlock).
/// `start` need not be a multiple of 8: the first and last words are split.
#[inline]
fn load_bytes(data: &[AtomicU64], start: usize, dst: &mut [MaybeUninit<u8>]) {
    debug_assert!(start + dst.len() <= data.len() * WORD);
    if dst.is_empty() {
        return;
    }
    // Relaxed for every word: the loads sit between the Acquire `seq` load in
    // `begin_read` (nothing older than the frame is seen) and the Acquire
    // fence in `end_read` (anything newer fails the check).
    let load = |word: &AtomicU64| {
        word.load(Ordering::Relaxed)
            .to_ne_bytes()
            .map(MaybeUninit::new)
    };
    let mut data = &data[start / WORD..];
    let mut dst = dst;
    let skip = start % WORD;
    if skip != 0 {
        let Some((word, rest)) = data.split_first() else {
            return;
        };
        let bytes = load(word);
        let take = (WORD - skip).min(dst.len());
        let (head, rest_dst) = dst.split_at_mut(take);
        copy_short(head, &bytes[skip..skip + take]);
        dst = rest_dst;
        data = rest;
    }
    let mut lines = dst.chunks_exact_mut(BLOCK_WORDS * WORD);
    let whole_lines = lines.len();
    for (line, block) in (&mut lines).zip(data.chunks_exact(BLOCK_WORDS)) {
        for (k, word) in block.iter().enumerate() {
            line[k * WORD..(k + 1) * WORD].copy_from_slice(&load(word));
        }
    }
    let data = &data[(whole_lines * BLOCK_WORDS).min(data.len())..];
    let mut chunks = lines.into_remainder().chunks_exact_mut(WORD);
    let mut words = data.iter();
    for (chunk, word) in (&mut chunks).zip(&mut words) {
        chunk.copy_from_slice(&load(word));
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        if let Some(word) = words.next() {
            copy_short(tail, &load(word)[..tail.len()]);
        }
    }
}

/// `dst.copy_from_slice(src)` for fewer than 8 elements, without a call to
/// `memcpy` for a variable length.
#[inline(always)]
fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    debug_assert!(dst.len() == src.len() && src.len() < WORD);
    let n = src.len();
    let mut i = 0;
    if n & 4 != 0 {
        dst[..4].copy_from_slice(&src[..4]);
        i = 4;
    }
    if n & 2 != 0 {
        dst[i..i + 2].copy_from_slice(&src[i..i + 2]);
        i += 2;
    }
    if n & 1 != 0 {
        dst[i] = src[i];
    }
}

/// The single writer of a [`Ring`]. Not `Clone`: holding the only
/// `RingWriter` is what makes the seqlock's single-writer rule hold.
#[derive(Debug)]
pub struct RingWriter {
    /// The ring written.
    ring: std::sync::Arc<Ring>,
    /// The slot of the next frame (`head % capacity`), kept here so that a
    /// publish divides nothing.
    next_slot: usize,
}

impl RingWriter {
    /// Take the writer role for `ring`. Call once per ring.
    pub fn new(ring: std::sync::Arc<Ring>) -> RingWriter {
        let next_slot = (ring.head.load(Ordering::Relaxed) % ring.capacity) as usize;
        RingWriter { ring, next_slot }
    }

    /// The ring written.
    pub fn ring(&self) -> &std::sync::Arc<Ring> {
        &self.ring
    }

    /// Publish one frame; returns its frame number. Frames longer than the
    /// ring's `frame_max` are a caller bug (framers never emit them) and are
    /// refused with `None` rather than truncated.
    pub fn publish(&mut self, frame: &[u8]) -> Option<u64> {
        let ring = &*self.ring;
        if frame.len() > ring.frame_max {
            return None;
        }
        // Relaxed: only this writer stores `head`.
        let n = ring.head.load(Ordering::Relaxed);
        debug_assert_eq!(self.next_slot as u64, n % ring.capacity);
        let slot = ring.slot_at(self.next_slot);
        // Mark the slot odd (being written). Relaxed store + Release fence: any
        // reader whose loads observe one of the stores below will, after its
        // own Acquire fence, observe this odd mark (or later) in `seq`.
        slot.seq.store(2 * n + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        // Relaxed, like the data words: covered by the fence above and the
        // Release store below.
        slot.len.store(frame.len() as u64, Ordering::Relaxed);
        store_bytes(slot.data, frame);
        // Release: makes the len and data words visible to a reader that
        // Acquires the even value.
        slot.seq.store(2 * n + 2, Ordering::Release);
        // Release: a reader that Acquires head > n sees slot n complete.
        ring.head.store(n + 1, Ordering::Release);
        self.next_slot += 1;
        if self.next_slot as u64 == ring.capacity {
            self.next_slot = 0;
        }
        Some(n)
    }
}

#[cfg(all(test, not(ringcast_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// Frame `n`'s bytes: its length and every byte derive from `n`, so a
    /// reader can verify a frame knowing only its number.
    fn frame_bytes(n: u64, max: usize, out: &mut Vec<u8>) {
        out.clear();
        let len = 8 + (n as usize * 7919) % (max - 8 + 1);
        out.extend_from_slice(&n.to_le_bytes());
        let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push(x as u8);
        }
    }

    #[test]
    fn publish_then_read() {
        let ring = Arc::new(Ring::new(4, 100).unwrap());
        let mut w = RingWriter::new(ring.clone());
        assert_eq!(ring.head(), 0);
        assert!(ring.frame(0).is_none());
        assert_eq!(w.publish(b"hello"), Some(0));
        assert_eq!(ring.head(), 1);
        let mut out = Vec::new();
        assert!(ring.copy_frame(0, &mut out));
        assert_eq!(out, b"hello");
        assert!(ring.copy_frame_from(0, 2, &mut out));
        assert_eq!(out, b"llo");
        // Too long: refused, not truncated.
        assert_eq!(w.publish(&[0u8; 101]), None);
        assert_eq!(ring.head(), 1);
    }

    #[test]
    fn overwritten_frames_are_gone() {
        let ring = Arc::new(Ring::new(3, 8).unwrap());
        let mut w = RingWriter::new(ring.clone());
        for i in 0..7u8 {
            w.publish(&[i]);
        }
        let mut out = Vec::new();
        for n in 0..4 {
            assert!(
                !ring.copy_frame(n, &mut out),
                "frame {n} should be overwritten"
            );
        }
        for n in 4..7 {
            assert!(ring.copy_frame(n, &mut out));
            assert_eq!(out, [n as u8]);
        }
        assert!(ring.frame(7).is_none());
        assert_eq!(ring.oldest_safe(7), 7 - (3 - ring.guard()));
    }

    /// The bytes of slot memory behind a `FrameRef`, read as the kernel reads
    /// them (plain bytes; no writer runs concurrently in these tests).
    fn slot_bytes(f: &FrameRef, count: usize) -> Vec<u8> {
        // SAFETY: `count` stays inside the slot's data words (callers pass at
        // most the frame length rounded up to a word), and no thread writes
        // the ring while the test reads it.
        unsafe { std::slice::from_raw_parts(f.ptr, count) }.to_vec()
    }

    #[test]
    fn odd_lengths_round_trip_at_every_offset() {
        // frame_max 21: not a multiple of 8 (three data words, the last one
        // partly past frame_max).
        let ring = Arc::new(Ring::new(5, 21).unwrap());
        let mut w = RingWriter::new(ring.clone());
        let mut out = Vec::new();
        for len in 1..=21usize {
            let frame: Vec<u8> = (0..len).map(|i| (len * 31 + i) as u8).collect();
            let n = w.publish(&frame).unwrap();
            let f = ring.frame(n).unwrap();
            assert_eq!(f.len, len);
            assert_eq!(f.ptr as usize % 8, 0, "slot data is word aligned");
            // The kernel sees the frame's bytes in order (native byte order
            // of the words), and zeros after it in its last word.
            let padded = len.div_ceil(8) * 8;
            let mut want = frame.clone();
            want.resize(padded, 0);
            assert_eq!(slot_bytes(&f, padded), want, "len {len}");
            assert!(ring.still_valid(n));
            assert!(ring.copy_frame(n, &mut out));
            assert_eq!(out, frame, "len {len}");
            for offset in 0..=len + 2 {
                assert!(ring.copy_frame_from(n, offset, &mut out));
                assert_eq!(out, frame[offset.min(len)..], "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn append_frame_appends_whole_frames_or_nothing() {
        let ring = Arc::new(Ring::new(3, 13).unwrap());
        let mut w = RingWriter::new(ring.clone());
        let mut out = b"xyz".to_vec();
        w.publish(b"0123456789abc");
        w.publish(b"d");
        assert!(ring.append_frame(0, &mut out));
        assert!(ring.append_frame(1, &mut out));
        assert_eq!(out, b"xyz0123456789abcd");
        // Not yet published, and overwritten: `out` stays as it was.
        assert!(!ring.append_frame(2, &mut out));
        for i in 2..6u8 {
            w.publish(&[i; 9]);
        }
        assert!(!ring.append_frame(0, &mut out));
        assert_eq!(out, b"xyz0123456789abcd");
        assert!(ring.append_frame(5, &mut out));
        assert_eq!(&out[17..], [5u8; 9]);
    }

    /// A short frame in a slot that held a longer one: the copy is exactly
    /// the short frame, and the slot's partial last word holds no byte of
    /// the older frame.
    #[test]
    fn partial_last_word_never_leaks_an_older_frame() {
        let ring = Arc::new(Ring::new(3, 40).unwrap());
        let mut w = RingWriter::new(ring.clone());
        let mut out = Vec::new();
        w.publish(&[0xAA; 40]);
        w.publish(&[0xBB; 40]);
        w.publish(&[0xCC; 40]);
        for len in 1..=17usize {
            // Fill the slot with a long frame, then lap it with a short one.
            let long = w.publish(&[0xEE; 40]).unwrap();
            w.publish(&[0xDD; 40]);
            w.publish(&[0xDD; 40]);
            let short: Vec<u8> = (1..=len as u8).collect();
            let n = w.publish(&short).unwrap();
            assert_eq!(n % 3, long % 3, "same slot");
            assert!(ring.copy_frame(n, &mut out));
            assert_eq!(out, short);
            for offset in 0..len {
                assert!(ring.copy_frame_from(n, offset, &mut out));
                assert_eq!(out, short[offset..]);
            }
            let mut tail = b"t".to_vec();
            assert!(ring.append_frame(n, &mut tail));
            assert_eq!(tail[1..], short[..]);
            let f = ring.frame(n).unwrap();
            let word_end = len.div_ceil(8) * 8;
            let bytes = slot_bytes(&f, word_end);
            assert_eq!(bytes[..len], short[..]);
            assert!(
                bytes[len..].iter().all(|&b| b == 0),
                "len {len}: stale bytes {:x?} in the last word",
                &bytes[len..]
            );
            w.publish(&[0xDD; 40]);
            w.publish(&[0xDD; 40]);
        }
    }

    /// The word copy loops against a plain model, for every start and length
    /// over a few words (whole lines, words and split words).
    #[test]
    fn word_copies_match_bytes_for_every_start_and_length() {
        const WORDS: usize = 2 * BLOCK_WORDS + 3;
        let data: Vec<AtomicU64> = (0..WORDS).map(|_| AtomicU64::new(u64::MAX)).collect();
        for len in 0..=WORDS * WORD {
            let frame: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            for word in &data {
                word.store(u64::MAX, Ordering::Relaxed);
            }
            store_bytes(&data, &frame);
            // Memory order: the words' native bytes are the frame, zero
            // padded to a word, and untouched (all ones) past that.
            let bytes: Vec<u8> = data
                .iter()
                .flat_map(|w| w.load(Ordering::Relaxed).to_ne_bytes())
                .collect();
            let padded = len.div_ceil(WORD) * WORD;
            assert_eq!(bytes[..len], frame[..]);
            assert!(bytes[len..padded].iter().all(|&b| b == 0));
            assert!(bytes[padded..].iter().all(|&b| b == 0xFF));
            for start in 0..=len {
                let mut out = vec![MaybeUninit::new(0x55u8); len - start];
                load_bytes(&data, start, &mut out);
                // SAFETY: every element was initialized above.
                let got: Vec<u8> = out.iter().map(|b| unsafe { b.assume_init() }).collect();
                assert_eq!(got, frame[start..], "len {len} start {start}");
            }
        }
    }

    #[test]
    fn a_new_writer_continues_at_head() {
        let ring = Arc::new(Ring::new(3, 8).unwrap());
        let mut w = RingWriter::new(ring.clone());
        w.publish(b"a");
        w.publish(b"b");
        drop(w);
        let mut w = RingWriter::new(ring.clone());
        for (n, b) in (2..9u64).zip(b'c'..) {
            assert_eq!(w.publish(&[b]), Some(n));
        }
        let mut out = Vec::new();
        assert!(ring.copy_frame(8, &mut out));
        assert_eq!(out, b"i");
    }

    /// Readers verify every frame they accept while the writer laps them.
    /// Zero torn frames may be accepted; torn reads must be detected.
    #[test]
    fn stress_no_torn_frame_accepted() {
        const MAX: usize = 512;
        let iterations = 20;
        for it in 0..iterations {
            let cap = 3 + it % 13;
            let ring = Arc::new(Ring::new(cap, MAX).unwrap());
            let stop = Arc::new(AtomicBool::new(false));
            let mut readers = Vec::new();
            for r in 0..3 {
                let ring = ring.clone();
                let stop = stop.clone();
                readers.push(std::thread::spawn(move || {
                    let mut out = Vec::new();
                    let mut expect = Vec::new();
                    let (mut accepted, mut rejected) = (0u64, 0u64);
                    let mut next = 0u64;
                    while !stop.load(Ordering::Relaxed) || next < ring.head() {
                        let head = ring.head();
                        if next >= head {
                            std::hint::spin_loop();
                            continue;
                        }
                        if next < ring.oldest_safe(head) && r != 0 {
                            // Readers 1 and 2 honour the guard; reader 0 does
                            // not, so it meets torn slots on purpose.
                            next = head - 1;
                        }
                        if ring.copy_frame(next, &mut out) {
                            frame_bytes(next, MAX, &mut expect);
                            assert_eq!(out, expect, "accepted a torn frame {next}");
                            accepted += 1;
                        } else {
                            rejected += 1;
                        }
                        next += 1;
                    }
                    (accepted, rejected)
                }));
            }
            let mut w = RingWriter::new(ring.clone());
            let mut buf = Vec::new();
            for n in 0..20_000u64 {
                frame_bytes(n, MAX, &mut buf);
                assert_eq!(w.publish(&buf), Some(n));
            }
            stop.store(true, Ordering::Relaxed);
            let mut total = 0;
            for r in readers {
                let (a, _rej) = r.join().unwrap();
                total += a;
            }
            assert!(total > 0, "readers accepted nothing");
        }
    }
}

/// A loom model of the ring protocol: the real `Ring` and `RingWriter` (only
/// `Slots` differs: loom's atomics on the heap instead of a mapping), one
/// writer lapping a 3-slot ring, readers copying frames the writer may be
/// rewriting. loom runs every interleaving (up to its preemption bound) and
/// every value each Relaxed load may see under the C++/Rust memory model;
/// the assertions say a copy the seqlock accepts is one frame whole.
///
/// Run by `.ci/loom`:
/// `RUSTFLAGS="--cfg ringcast_loom" cargo test --release --lib --target-dir target/loom ring::loom_model`
#[cfg(all(test, ringcast_loom))]
mod loom_model {
    use super::*;
    use std::sync::Arc;

    /// Three slots: frame 3 laps frame 0's slot.
    const CAP: usize = 3;
    /// Two data words per slot, the second one partial (13 = 8 + 5).
    const FRAME_MAX: usize = 13;
    /// Frames the writer publishes in most models.
    const FRAMES: u64 = 4;

    /// Frame `n`: even frames are 13 bytes (a whole word and a partial one),
    /// odd frames 6 (one partial word); byte `i` is `n << 4 | i`, so every
    /// byte says which frame it belongs to.
    fn frame_bytes(n: u64) -> Vec<u8> {
        let len = if n & 1 == 0 { 13 } else { 6 };
        (0..len).map(|i| ((n as u8) << 4) | i as u8).collect()
    }

    /// An accepted copy of frame `n` from `offset`: every byte is frame `n`'s.
    fn check(n: u64, offset: usize, got: &[u8], how: &str) {
        let want = frame_bytes(n);
        for (i, b) in got.iter().enumerate() {
            assert_eq!(
                u64::from(b >> 4),
                n,
                "{how}: accepted a torn copy of frame {n}: byte {} is from frame {}",
                offset + i,
                b >> 4
            );
        }
        assert_eq!(got, &want[offset.min(want.len())..], "{how}: frame {n}");
    }

    /// Frames below `head` that the writer will never rewrite must be
    /// readable whole (head's Acquire/Release makes the slot visible).
    fn must_succeed(n: u64, head: u64, frames: u64) -> bool {
        n < head && n + CAP as u64 >= frames
    }

    /// The writer thread: publishes frames `0..frames`.
    fn writer(ring: Arc<Ring>, frames: u64) -> loom::thread::JoinHandle<()> {
        loom::thread::spawn(move || {
            let mut w = RingWriter::new(ring);
            for n in 0..frames {
                assert_eq!(w.publish(&frame_bytes(n)), Some(n));
            }
        })
    }

    /// Run `f` under loom (preemption bound: `LOOM_MAX_PREEMPTIONS`, else
    /// 3) and say how many executions it explored.
    fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let runs = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let mut b = loom::model::Builder::new();
        if b.preemption_bound.is_none() {
            b.preemption_bound = Some(3);
        }
        let bound = b.preemption_bound;
        let start = std::time::Instant::now();
        b.check(move || {
            counter.fetch_add(1, Relaxed);
            f()
        });
        eprintln!(
            "loom {name}: {} executions, preemption bound {bound:?}, {:.1?}",
            runs.load(Relaxed),
            start.elapsed()
        );
    }

    /// copy_frame of the lapped slot and of the newest frame.
    #[test]
    fn copy_frame_is_never_torn() {
        model("copy_frame_is_never_torn", || {
            let ring = Arc::new(Ring::new(CAP, FRAME_MAX).unwrap());
            let w = writer(ring.clone(), FRAMES);
            let mut out = Vec::new();
            // Frame 0 while frame 3 may be overwriting its slot.
            if ring.copy_frame(0, &mut out) {
                check(0, 0, &out, "copy_frame");
            }
            let head = ring.head();
            if head > 0 {
                let n = head - 1;
                if ring.copy_frame(n, &mut out) {
                    check(n, 0, &out, "copy_frame");
                } else {
                    assert!(
                        !must_succeed(n, head, FRAMES),
                        "frame {n} < head {head} rejected"
                    );
                }
            }
            w.join().unwrap();
        });
    }

    /// copy_frame_from at an offset inside a word, and append_frame.
    #[test]
    fn copy_frame_from_and_append_frame_are_never_torn() {
        model("copy_frame_from_and_append_frame_are_never_torn", || {
            let ring = Arc::new(Ring::new(CAP, FRAME_MAX).unwrap());
            let w = writer(ring.clone(), FRAMES);
            let mut out = Vec::new();
            if ring.copy_frame_from(0, 3, &mut out) {
                check(0, 3, &out, "copy_frame_from");
            }
            let head = ring.head();
            let n = head.saturating_sub(1);
            let mut tail = vec![0xFF];
            if ring.append_frame(n, &mut tail) {
                assert_eq!(tail[0], 0xFF);
                check(n, 0, &tail[1..], "append_frame");
            } else {
                assert_eq!(tail, [0xFF], "a failed append leaves the vector alone");
                assert!(
                    !must_succeed(n, head, FRAMES),
                    "frame {n} < head {head} rejected"
                );
            }
            w.join().unwrap();
        });
    }

    /// Two readers: one uses frame()/still_valid the way a send does (the
    /// length it saw is frame n's when still_valid accepts), one copies.
    #[test]
    fn two_readers_frame_and_copy() {
        model("two_readers_frame_and_copy", || {
            let ring = Arc::new(Ring::new(CAP, FRAME_MAX).unwrap());
            let w = writer(ring.clone(), FRAMES);
            let r = {
                let ring = ring.clone();
                loom::thread::spawn(move || {
                    if let Some(f) = ring.frame(0) {
                        if ring.still_valid(0) {
                            assert_eq!(f.len, frame_bytes(0).len(), "frame() len");
                        }
                    }
                })
            };
            let mut out = Vec::new();
            if ring.copy_frame(0, &mut out) {
                check(0, 0, &out, "copy_frame");
            }
            r.join().unwrap();
            w.join().unwrap();
        });
    }

    /// Two laps over slot 0 (frames 0, 3 and 6): a copy of frame 3 may meet
    /// frame 0's or frame 6's words; a copy at an offset inside a word of
    /// the newest frame.
    #[test]
    fn two_laps_copy_between_laps() {
        const LAPS_FRAMES: u64 = 7;
        model("two_laps_copy_between_laps", || {
            let ring = Arc::new(Ring::new(CAP, FRAME_MAX).unwrap());
            let w = writer(ring.clone(), LAPS_FRAMES);
            let mut out = Vec::new();
            if ring.copy_frame(3, &mut out) {
                check(3, 0, &out, "copy_frame");
            }
            let head = ring.head();
            if head > 0 {
                let n = head - 1;
                if ring.copy_frame_from(n, 5, &mut out) {
                    check(n, 5, &out, "copy_frame_from");
                } else {
                    assert!(
                        !must_succeed(n, head, LAPS_FRAMES),
                        "frame {n} < head {head} rejected"
                    );
                }
            }
            w.join().unwrap();
        });
    }
}
