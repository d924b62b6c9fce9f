//! One listener's delivery state and the hot path that writes frames to it.
//!
//! A [`Sender`] knows the next frame a client needs and how much of it has
//! gone out. [`Sender::try_send`] gathers everything pending — header bytes,
//! a copied-out frame remainder, then frames straight from the ring slots — into
//! one `sendmsg` (bounded by [`MAX_IOV`] pieces and [`MAX_SEND_BYTES`]), then
//! validates every slot it sent from (seqlock check after the send). Nothing is
//! copied per client on this path.
//!
//! When the socket buffer is full the client is *blocked*: the remainder of the
//! frame it is in (or the whole next frame) is copied out of the ring into a
//! small per-client buffer, validated, and written with glommio's write, which
//! waits for the socket to become writable. That copy is what lets a blocked
//! client survive being lapped without ever sending a torn or truncated frame:
//! the frame it is in the middle of is safe in its own buffer, and when it comes
//! back it skips forward to the newest frame at a frame boundary. The buffer is
//! at most one frame and exists only while a client is blocked.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use std::sync::atomic::Ordering;

use crate::config::{FramerKind, StreamConfig};
use crate::reservoir;
use crate::ring::Ring;
use crate::stats::ClientStats;
use crate::stream::{ClientLive, Stream};
use crate::sys::{self, io_slice, IoSlice, SendResult};

/// Most pieces in one vectored send (header + tail + frames).
pub const MAX_IOV: usize = 64;
/// Most bytes asked of one vectored send.
pub const MAX_SEND_BYTES: usize = 256 * 1024;
/// Most bytes of lagging frames copied out of the ring per send.
pub const MAX_COPY_BYTES: usize = 64 * 1024;

/// Buffers for owned frame bytes (`tail`), kept per shard thread so that a
/// client that copies (a lead-in, a lagging moment, a fast writer) does not
/// allocate and fault in fresh memory for every send, while idle clients hold
/// none. At most [`POOL_BUFFERS`] are kept.
const POOL_BUFFERS: usize = 16;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A tail buffer from the pool (empty, maybe with capacity).
fn take_buffer() -> Vec<u8> {
    POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default()
}

/// Give a tail buffer back to the pool (or drop it when the pool is full or
/// the buffer is unusually large).
fn give_back(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > 4 * MAX_COPY_BYTES {
        return;
    }
    buf.clear();
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_BUFFERS {
            p.push(buf);
        }
    });
}

/// Reusable buffers for building one vectored send, one per shard: `try_send`
/// never awaits, so the shard's clients take turns with them, and no client
/// carries (or re-initialises) arrays of its own.
#[derive(Debug, Default)]
pub struct SendScratch {
    iov: Vec<IoSlice>,
    /// For each frame piece: (frame number, full length, bytes in the piece).
    pieces: Vec<(u64, usize, usize)>,
}

impl SendScratch {
    /// Buffers with room for the largest send.
    pub fn new() -> SendScratch {
        SendScratch {
            iov: Vec::with_capacity(MAX_IOV),
            pieces: Vec::with_capacity(MAX_IOV),
        }
    }
}

/// What one call of [`Sender::try_send`] did.
#[derive(Debug)]
pub enum Step {
    /// Bytes went out; call again.
    Progress,
    /// Nothing is pending: wait for a new frame.
    CaughtUp,
    /// The socket buffer is full: call [`Sender::prepare_blocked`] and write
    /// [`Sender::blocked_bytes`] with an awaiting write.
    Blocked,
    /// The response is over.
    Finished(End),
}

/// Why a response ended.
#[derive(Debug)]
pub enum End {
    /// `client-max-bytes` reached after whole frames.
    MaxBytes,
    /// A frame being sent was overwritten (torn) or could not be completed.
    Torn,
    /// The socket failed (peer gone).
    Failed(io::Error),
}

/// A client's position in the ring and what of it is on its way out.
#[derive(Debug)]
pub struct Sender {
    ring: Arc<Ring>,
    fd: RawFd,
    /// Next frame (number) to send from the ring.
    pub next: u64,
    /// Bytes of frame `next` already sent (a partial send).
    offset: usize,
    /// True until the header bytes of the stream have been taken.
    needs_header: bool,
    /// First frame of the header this client got.
    header_from: u64,
    /// The stream's headers describe a logical stream that can change
    /// mid-stream (Ogg): a connected client gets the new header before the
    /// first frame of the new logical stream, as Icecast does.
    resend_headers: bool,
    /// Header bytes to send before any frame, and how many went out.
    prefix: Option<Arc<[u8]>>,
    prefix_pos: usize,
    /// Owned frame bytes sent before the ring frames: the remainder of one
    /// frame copied out for a blocked client, or an MP3 lead-in (see
    /// `reservoir.rs`). Always ends at a frame end.
    tail: Vec<u8>,
    tail_pos: usize,
    /// Whole frames in `tail`.
    tail_frames: u64,
    /// MP3 layer III stream: joins and skips get a bit-reservoir lead-in.
    mp3: bool,
    /// A lead-in is due before frame `next` (set at join and at each skip).
    leadin_due: bool,
    /// End the response after the whole frame that reaches this many frame
    /// bytes; 0 = never.
    max_bytes: u64,
    /// Frame bytes of frames already sent whole or moved into `tail`.
    body_bytes: u64,
    /// Bytes written to the socket (header bytes and frames).
    pub bytes_sent: u64,
    /// Whole frames written.
    pub frames_sent: u64,
    /// Frames skipped because the client was lapped.
    pub frames_skipped: u64,
    /// The same figures, published for status pages after each send.
    live: Arc<ClientLive>,
}

impl Sender {
    /// A sender for a client of `stream` (configured as `config`) on socket
    /// `fd`, starting at frame `start`, publishing its figures to `live`.
    pub fn new(
        stream: &Stream,
        config: &StreamConfig,
        fd: RawFd,
        start: u64,
        live: Arc<ClientLive>,
    ) -> Sender {
        Sender {
            ring: stream.ring.clone(),
            fd,
            next: start,
            offset: 0,
            needs_header: true,
            header_from: 0,
            resend_headers: config.framer == FramerKind::Ogg,
            prefix: None,
            prefix_pos: 0,
            tail: Vec::new(),
            tail_pos: 0,
            tail_frames: 0,
            mp3: config.framer == FramerKind::Mp3,
            leadin_due: config.framer == FramerKind::Mp3,
            max_bytes: config.client_max_bytes,
            body_bytes: 0,
            bytes_sent: 0,
            frames_sent: 0,
            frames_skipped: 0,
            live,
        }
    }

    /// Copy the figures to the client's status record (Relaxed stores to a
    /// record only this shard writes).
    fn publish(&self) {
        self.live
            .bytes_sent
            .store(self.bytes_sent, Ordering::Relaxed);
        self.live
            .frames_sent
            .store(self.frames_sent, Ordering::Relaxed);
        self.live
            .frames_skipped
            .store(self.frames_skipped, Ordering::Relaxed);
        self.live.next_frame.store(self.next, Ordering::Relaxed);
    }

    /// True when owned bytes (header or copied frame) are waiting to go out.
    fn owned_pending(&self) -> bool {
        self.prefix.is_some() || self.tail_pos < self.tail.len()
    }

    /// True when the response has all the frames `client-max-bytes` allows.
    pub fn limit_reached(&self) -> bool {
        self.max_bytes > 0 && self.body_bytes >= self.max_bytes
    }

    /// True when nothing is half-sent.
    pub fn at_boundary(&self) -> bool {
        self.offset == 0 && !self.owned_pending()
    }

    /// If the client fell too far behind, jump to the newest frame (only at a
    /// frame boundary in the ring: a half-sent frame is completed or the client
    /// is torn).
    fn skip_if_lapped(&mut self, head: u64, stats: &ClientStats) {
        if self.offset == 0 && head > 0 && self.next < self.ring.oldest_safe(head) {
            let newest = head - 1;
            let skipped = newest - self.next;
            self.frames_skipped += skipped;
            stats.frames_skipped.add(skipped);
            stats.laps.inc();
            self.next = newest;
            self.leadin_due = self.mp3;
        }
    }

    /// Frames below `floor` ([`Stream::zero_copy_floor`]) are copied
    /// (validated) into `tail` and sent from there: the writer could reach
    /// their slots while the kernel copies them, and bytes on the wire cannot
    /// be taken back. Caught-up clients of a live stream never take this path;
    /// lagging ones copy at most [`MAX_COPY_BYTES`] per send.
    fn copy_lagging(&mut self, head: u64, floor: u64) {
        if self.next >= floor || self.next >= head {
            return;
        }
        if self.tail.capacity() == 0 {
            self.tail = take_buffer();
        }
        self.tail.clear();
        self.tail_pos = 0;
        self.tail_frames = 0;
        while self.next < floor && self.next < head && self.tail.len() < MAX_COPY_BYTES {
            if self.max_bytes > 0 && self.body_bytes >= self.max_bytes {
                break;
            }
            let before = self.tail.len();
            if !self.ring.append_frame(self.next, &mut self.tail) {
                // Overwritten already: the lap check moves the client on.
                break;
            }
            self.body_bytes += (self.tail.len() - before) as u64;
            self.tail_frames += 1;
            self.next += 1;
        }
        if self.tail.is_empty() {
            give_back(std::mem::take(&mut self.tail));
        }
    }

    /// Before the first frame after a join or a skip of an MP3 stream: put
    /// the lead-in that carries frame `next`'s bit reservoir into `tail`.
    fn build_leadin(&mut self, stream: &Stream, head: u64) {
        self.leadin_due = false;
        let floor = stream.session_start().max(self.ring.oldest_safe(head));
        if self.tail.capacity() == 0 {
            self.tail = take_buffer();
        }
        match reservoir::lead_in(&self.ring, self.next, floor, &mut self.tail) {
            Some(frames) if frames > 0 => {
                self.tail_pos = 0;
                self.tail_frames = frames;
                self.body_bytes += self.tail.len() as u64;
            }
            _ => give_back(std::mem::take(&mut self.tail)),
        }
    }

    /// Take the stream's header bytes before the first frame goes out.
    fn take_header(&mut self, stream: &Stream) {
        self.needs_header = false;
        let h = stream.header_for(self.next);
        self.header_from = h.first_frame;
        if !h.bytes.is_empty() {
            self.prefix = Some(h.bytes);
            self.prefix_pos = 0;
        }
    }

    /// Send everything pending in one `sendmsg`.
    pub fn try_send(
        &mut self,
        stream: &Stream,
        stats: &ClientStats,
        scratch: &mut SendScratch,
    ) -> Step {
        let head = self.ring.head();
        if self.needs_header && head > self.next {
            self.take_header(stream);
        }
        self.skip_if_lapped(head, stats);
        if self.leadin_due
            && !self.needs_header
            && self.offset == 0
            && !self.owned_pending()
            && head > self.next
        {
            self.build_leadin(stream, head);
        }
        // A new logical stream begins at `new_header`: its header goes out
        // before its first frame.
        let mut new_header = if self.resend_headers {
            let lh = stream.latest_header_frame();
            if lh != u64::MAX && lh > self.header_from {
                lh
            } else {
                u64::MAX
            }
        } else {
            u64::MAX
        };
        if new_header <= self.next
            && !self.needs_header
            && self.offset == 0
            && !self.owned_pending()
        {
            self.take_header(stream);
            new_header = u64::MAX;
        }
        let zero_copy_floor = stream.zero_copy_floor(head);
        if !self.needs_header && self.offset == 0 && !self.owned_pending() {
            self.copy_lagging(head, zero_copy_floor.min(new_header));
        }

        let SendScratch { iov, pieces } = scratch;
        iov.clear();
        pieces.clear();
        // For each frame piece: (frame number, full length, bytes in the piece).
        let mut count = 0;
        let mut owned = 0; // how many leading iovecs are owned bytes
        let mut total = 0usize;
        if let Some(p) = &self.prefix {
            let rest = &p[self.prefix_pos..];
            iov.push(io_slice(rest.as_ptr(), rest.len()));
            count += 1;
            owned += 1;
            total += rest.len();
        }
        if self.tail_pos < self.tail.len() {
            let rest = &self.tail[self.tail_pos..];
            iov.push(io_slice(rest.as_ptr(), rest.len()));
            count += 1;
            owned += 1;
            total += rest.len();
        }
        let mut planned = self.body_bytes;
        let mut n = self.next;
        let mut frames = 0;
        // Header bytes must go before the first frame; if they are not taken
        // yet (no frame was available a moment ago) add no frame now.
        while !self.needs_header && n < head && count < MAX_IOV && total < MAX_SEND_BYTES {
            if self.max_bytes > 0 && planned >= self.max_bytes {
                break;
            }
            if n < zero_copy_floor && !(n == self.next && self.offset > 0) {
                // Too close to the writer to send from the slot: copied on a
                // later call (after the owned bytes ahead of it are out).
                break;
            }
            if n >= new_header {
                // The new logical stream's header goes first (next call).
                break;
            }
            let Some(f) = self.ring.frame(n) else {
                if n == self.next && self.offset > 0 {
                    // The half-sent frame was overwritten: it cannot be
                    // completed, and the client must not get a truncated frame
                    // followed by more data.
                    return Step::Finished(End::Torn);
                }
                // Lapped since we read head: the next call skips forward.
                break;
            };
            let start = if n == self.next {
                self.offset.min(f.len)
            } else {
                0
            };
            // SAFETY: pointer arithmetic only: start <= f.len, so the result
            // stays inside the slot.
            let ptr = unsafe { f.ptr.add(start) };
            iov.push(io_slice(ptr, f.len - start));
            pieces.push((n, f.len, f.len - start));
            count += 1;
            frames += 1;
            total += f.len - start;
            planned += f.len as u64;
            n += 1;
        }
        if count == 0 {
            if head > self.next && self.offset == 0 && !self.limit_reached() && !self.needs_header {
                // A frame exists but its slot was overwritten under us: go
                // round again, the lap check will move us forward.
                return Step::Progress;
            }
            if self.limit_reached() && self.at_boundary() {
                return Step::Finished(End::MaxBytes);
            }
            return Step::CaughtUp;
        }

        // SAFETY: every iovec points either into `self.prefix` / `self.tail`
        // (owned by `self`, untouched until the call returns) or into ring
        // slots, which stay mapped while `self.ring` (an Arc) is alive. Slot
        // bytes may change during the call; that is detected below.
        let result = unsafe { sys::send_vectored(self.fd, &iov[..count]) };
        iov.clear();
        let sent = match result {
            SendResult::Sent(k) => k,
            SendResult::WouldBlock => {
                stats.would_block.inc();
                return Step::Blocked;
            }
            SendResult::Failed(e) => return Step::Finished(End::Failed(e)),
        };
        stats.sends.inc();
        stats.bytes_out.add(sent as u64);
        self.bytes_sent += sent as u64;
        let mut left = sent;

        // Owned pieces first.
        if let Some(p) = &self.prefix {
            let used = (p.len() - self.prefix_pos).min(left);
            self.prefix_pos += used;
            left -= used;
            if self.prefix_pos == p.len() {
                self.prefix = None;
                self.prefix_pos = 0;
            }
        }
        if owned > 0 && self.tail_pos < self.tail.len() {
            let used = (self.tail.len() - self.tail_pos).min(left);
            self.tail_pos += used;
            left -= used;
            if self.tail_pos == self.tail.len() {
                self.finish_tail(stats);
            }
        }
        // Then ring frames: validate each one any byte of which went out.
        for &(num, full, piece) in &pieces[..frames] {
            if left == 0 {
                break;
            }
            if !self.ring.still_valid(num) {
                return Step::Finished(End::Torn);
            }
            if left >= piece {
                left -= piece;
                self.next = num + 1;
                self.offset = 0;
                self.body_bytes += full as u64;
                self.frames_sent += 1;
                stats.frames_out.inc();
            } else {
                self.offset = full - piece + left;
                left = 0;
            }
        }
        if self.offset > 0 && !self.owned_pending() {
            // A frame went out in part: the socket is full. Copy its rest out
            // of the ring now, while the slot still holds it, so the writer
            // cannot overwrite it before the client has room again.
            let (n, offset) = (self.next, self.offset);
            if self.tail.capacity() == 0 {
                self.tail = take_buffer();
            }
            if !self.ring.copy_frame_from(n, offset, &mut self.tail) {
                return Step::Finished(End::Torn);
            }
            self.tail_pos = 0;
            self.tail_frames = 1;
            self.body_bytes += (offset + self.tail.len()) as u64;
            self.next += 1;
            self.offset = 0;
        }
        self.publish();
        Step::Progress
    }

    fn finish_tail(&mut self, stats: &ClientStats) {
        self.tail.clear();
        self.tail_pos = 0;
        self.frames_sent += self.tail_frames;
        stats.frames_out.add(self.tail_frames);
        self.tail_frames = 0;
        // Give the buffer back to the shard's pool: most clients never need
        // one again (a join's lead-in, a lagging moment, a blocked write), and
        // 10,000 idle kilobytes would be most of the server's memory.
        give_back(std::mem::take(&mut self.tail));
    }

    /// Before waiting for the socket: make sure the bytes to write next are
    /// owned (header, or the current frame's remainder copied out of the ring
    /// and validated), so being lapped while blocked cannot tear them.
    pub fn prepare_blocked(&mut self, stream: &Stream, stats: &ClientStats) -> Result<(), End> {
        if self.owned_pending() {
            return Ok(());
        }
        let head = self.ring.head();
        if self.needs_header && head > self.next {
            self.take_header(stream);
            if self.owned_pending() {
                return Ok(());
            }
        }
        self.skip_if_lapped(head, stats);
        if self.next >= head {
            return Ok(());
        }
        if self.leadin_due && self.offset == 0 {
            self.build_leadin(stream, head);
            if self.owned_pending() {
                return Ok(());
            }
        }
        let offset = self.offset;
        if self.tail.capacity() == 0 {
            self.tail = take_buffer();
        }
        if self.ring.copy_frame_from(self.next, offset, &mut self.tail) {
            // (copy_frame_from clears `tail` first; no owned bytes were pending.)
            self.tail_pos = 0;
            self.tail_frames = 1;
            self.body_bytes += (offset + self.tail.len()) as u64;
            self.next += 1;
            self.offset = 0;
            Ok(())
        } else if offset > 0 {
            Err(End::Torn)
        } else {
            // Overwritten between the lap check and the copy: the next
            // try_send skips forward.
            give_back(std::mem::take(&mut self.tail));
            Ok(())
        }
    }

    /// Owned bytes to write with an awaiting write while blocked (empty when
    /// there are none, e.g. the frame vanished; then just try again).
    pub fn blocked_bytes(&self) -> &[u8] {
        if let Some(p) = &self.prefix {
            return &p[self.prefix_pos..];
        }
        &self.tail[self.tail_pos..]
    }

    /// Account `n` bytes of [`Sender::blocked_bytes`] written.
    pub fn blocked_written(&mut self, n: usize, stats: &ClientStats) {
        self.bytes_sent += n as u64;
        stats.bytes_out.add(n as u64);
        if let Some(p) = &self.prefix {
            self.prefix_pos += n.min(p.len() - self.prefix_pos);
            if self.prefix_pos == p.len() {
                self.prefix = None;
                self.prefix_pos = 0;
            }
            self.publish();
            return;
        }
        self.tail_pos = (self.tail_pos + n).min(self.tail.len());
        if !self.tail.is_empty() && self.tail_pos == self.tail.len() {
            self.finish_tail(stats);
        }
        self.publish();
    }
}
