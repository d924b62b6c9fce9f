//! The frame ring: one writer (the source thread), many lock-free readers (the
//! shards), in one anonymous shared mapping per stream.
//!
//! # Layout
//!
//! The mapping holds `capacity` slots of `stride` bytes each. A slot is
//!
//! ```text
//! offset 0   seq: AtomicU64   0 = never written; 2n+1 = frame n being written;
//!                             2n+2 = frame n complete
//! offset 8   len: AtomicU64   length of the frame in the slot (<= frame_max)
//! offset 16  bytes[frame_max] the frame
//! ```
//!
//! Frame `n` lives in slot `n % capacity`. The writer's `head` (the number of
//! frames published, i.e. the next frame number) sits on its own 128-byte line,
//! away from the slots, so the only line readers poll is written once per frame.
//!
//! # Protocol (a seqlock per slot)
//!
//! Writer, for frame `n`: `seq = 2n+1` (Relaxed) → `fence(Release)` → write len
//! and bytes → `seq = 2n+2` (Release) → `head = n+1` (Release).
//!
//! Reader, for frame `n`: load `head` (Acquire); load `seq` (Acquire) and
//! require `2n+2`; use `len` and the bytes (hand them to the kernel in a
//! `sendmsg`, or copy them); then `fence(Acquire)` and load `seq` again: if it
//! is still `2n+2` no write to the slot overlapped the use, so the bytes were
//! frame `n` whole. Otherwise they may be torn and must be thrown away (a
//! client that already sent them is disconnected and counted).
//!
//! Readers never write to shared memory, so any number of cores read without
//! contending for cache lines. Readers keep [`Ring::guard`] slots between
//! themselves and the writer so that a lap is detected before it happens in
//! the common case; the after-check catches the rest.
//!
//! # The data race, stated honestly
//!
//! The slot bytes are plain memory written by the writer while a reader may be
//! reading them. When the reader is the kernel (a `sendmsg` from the slot) this
//! is outside Rust's memory model. When a reader copies in Rust
//! ([`Ring::copy_frame`]), it uses volatile reads and validates afterwards, as
//! crossbeam's `SeqLock` does: formally still a data race, in practice the
//! standard seqlock technique, and no Rust reference to racy bytes is ever
//! created (all access is through raw pointers).

use std::io;
use std::ptr;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// Bytes of slot header before the frame bytes.
const SLOT_HEADER: usize = 16;

/// A frame's location in the ring, valid while its sequence number holds.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef {
    /// Frame number.
    pub n: u64,
    /// Start of the frame bytes inside the mapping.
    pub ptr: *const u8,
    /// Frame length in bytes.
    pub len: usize,
}

/// The shared ring of one stream.
pub struct Ring {
    /// Start of the mapping (page aligned).
    base: *mut u8,
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

// SAFETY: the mapping is shared memory accessed only through atomics (seq, len,
// head) and raw-pointer copies validated by the seqlock protocol; `Ring` owns
// the mapping and unmaps it only in Drop, when no reader can hold it (readers
// hold an `Arc` to the stream that owns the ring).
unsafe impl Send for Ring {}
// SAFETY: see above; all shared mutation goes through atomics or the
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

impl Ring {
    /// Map a ring of `capacity` slots of up to `frame_max` bytes.
    pub fn new(capacity: usize, frame_max: usize) -> io::Result<Ring> {
        if capacity < 3 || frame_max == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring needs at least 3 slots and frames of at least 1 byte",
            ));
        }
        let stride = (SLOT_HEADER + frame_max).div_ceil(64) * 64;
        let map_len = stride
            .checked_mul(capacity)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "ring size overflows"))?;
        // SAFETY: anonymous private mapping with no address hint; the result is
        // checked against MAP_FAILED before use. Anonymous memory is zeroed, so
        // every slot starts with seq = 0 (never written).
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Ring {
            base: base as *mut u8,
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

    #[inline]
    fn slot(&self, n: u64) -> *mut u8 {
        let index = (n % self.capacity) as usize;
        // SAFETY: index < capacity, so the offset is inside
        // the mapping of `capacity * stride` bytes.
        unsafe { self.base.add(index * self.stride) }
    }

    #[inline]
    fn seq(&self, n: u64) -> &AtomicU64 {
        // SAFETY: the slot header is 8-byte aligned (the mapping is page
        // aligned and stride is a multiple of 64), lives as long as `self`, and
        // is only ever accessed atomically.
        unsafe { &*(self.slot(n) as *const AtomicU64) }
    }

    #[inline]
    fn len_word(&self, n: u64) -> &AtomicU64 {
        // SAFETY: as for `seq`, at offset 8.
        unsafe { &*(self.slot(n).add(8) as *const AtomicU64) }
    }

    /// Locate frame `n` if the slot holds it complete right now. The caller
    /// must call [`Ring::still_valid`] after using the bytes.
    #[inline]
    pub fn frame(&self, n: u64) -> Option<FrameRef> {
        // Acquire: if we see 2n+2, we see the len and bytes the writer stored
        // before its Release store of 2n+2.
        if self.seq(n).load(Ordering::Acquire) != 2 * n + 2 {
            return None;
        }
        // Relaxed is enough: ordered after the Acquire load above. A torn value
        // is caught by `still_valid`; clamping keeps the iovec inside the slot
        // even then.
        let len = (self.len_word(n).load(Ordering::Relaxed) as usize).min(self.frame_max);
        // SAFETY: the bytes start SLOT_HEADER into the slot, inside the mapping.
        let ptr = unsafe { self.slot(n).add(SLOT_HEADER) } as *const u8;
        Some(FrameRef { n, ptr, len })
    }

    /// After using frame `n`'s bytes: true when no write to its slot began
    /// since [`Ring::frame`] returned it, so what was used is frame `n` whole.
    #[inline]
    pub fn still_valid(&self, n: u64) -> bool {
        // The Acquire fence orders the preceding reads of the slot bytes (by us
        // or by the kernel inside a syscall) before the seq load below: if any
        // of those reads saw a byte of a newer frame, this load sees at least
        // the writer's odd mark, which was published before that byte.
        fence(Ordering::Acquire);
        self.seq(n).load(Ordering::Relaxed) == 2 * n + 2
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
        let Some(f) = self.frame(n) else { return false };
        out.reserve(f.len);
        // SAFETY: as in `copy_frame_from`: volatile reads of the slot into
        // spare capacity of `out`, accepted only if `still_valid` holds.
        unsafe {
            let dst = out.as_mut_ptr().add(before);
            for i in 0..f.len {
                ptr::write(dst.add(i), ptr::read_volatile(f.ptr.add(i)));
            }
            out.set_len(before + f.len);
        }
        if self.still_valid(n) {
            true
        } else {
            out.truncate(before);
            false
        }
    }

    /// Like [`Ring::copy_frame`] but only the bytes from `offset` on.
    pub fn copy_frame_from(&self, n: u64, offset: usize, out: &mut Vec<u8>) -> bool {
        out.clear();
        let Some(f) = self.frame(n) else { return false };
        let offset = offset.min(f.len);
        out.reserve(f.len - offset);
        // SAFETY: `f.ptr + offset .. f.ptr + f.len` is inside the slot. The
        // bytes may be concurrently rewritten (see the module docs): they are
        // read with volatile loads into `out`'s spare capacity, and the copy is
        // only accepted when `still_valid` confirms no write overlapped.
        unsafe {
            let src = f.ptr.add(offset);
            let dst = out.as_mut_ptr();
            for i in 0..f.len - offset {
                ptr::write(dst.add(i), ptr::read_volatile(src.add(i)));
            }
            out.set_len(f.len - offset);
        }
        self.still_valid(n)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`map_len` are exactly what mmap returned; no reader
        // can reach the ring any more (we have `&mut self`).
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.map_len);
        }
    }
}

/// The single writer of a [`Ring`]. Not `Clone`: holding the only
/// `RingWriter` is what makes the seqlock's single-writer rule hold.
#[derive(Debug)]
pub struct RingWriter {
    ring: std::sync::Arc<Ring>,
}

impl RingWriter {
    /// Take the writer role for `ring`. Call once per ring.
    pub fn new(ring: std::sync::Arc<Ring>) -> RingWriter {
        RingWriter { ring }
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
        let seq = ring.seq(n);
        // Mark the slot odd (being written). Relaxed store + Release fence: any
        // reader whose byte reads observe the writes below will, after its own
        // Acquire fence, observe this odd mark (or later) in `seq`.
        seq.store(2 * n + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        ring.len_word(n)
            .store(frame.len() as u64, Ordering::Relaxed);
        // SAFETY: the destination is this slot's byte area (frame_max bytes,
        // inside the mapping) and `frame.len() <= frame_max`. Source and
        // destination cannot overlap (`frame` is not in the ring). Concurrent
        // readers only read these bytes through raw pointers / the kernel and
        // validate with `seq`.
        unsafe {
            ptr::copy_nonoverlapping(frame.as_ptr(), ring.slot(n).add(SLOT_HEADER), frame.len());
        }
        // Release: makes the len and bytes visible to a reader that Acquires
        // the even value.
        seq.store(2 * n + 2, Ordering::Release);
        // Release: a reader that Acquires head > n sees slot n complete.
        ring.head.store(n + 1, Ordering::Release);
        Some(n)
    }
}

#[cfg(test)]
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
