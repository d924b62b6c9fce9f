//! One listener: its compact record in the shard's table and the state
//! machine that writes frames to it.
//!
//! A [`Listener`] is the cursor of one HTTP response into its stream's ring
//! plus its counters. [`Listener::try_send`] gathers everything pending —
//! owned bytes first (the response head, the stream header, a copied frame
//! remainder or an MP3 lead-in), then frames straight from the ring slots —
//! into one vectored send, and validates every slot it sent from (the seqlock
//! check after the send). Nothing is copied per listener on this path.
//!
//! # Whole frames, always
//!
//! - A listener that fell behind the writer's reach ([`SendCtx::guard`]) is
//!   *lapped*: at a frame boundary it jumps to the newest frame, its skipped
//!   count grows (and an MP3 listener gets a lead-in first).
//! - When a send takes part of a frame, the rest of that frame is copied out
//!   of the ring at once (validated), so the writer can overwrite the slot
//!   while the listener waits for room; the frame is completed from the copy.
//! - A frame whose slot was overwritten while being sent ends the listener
//!   (torn): bytes on the wire cannot be taken back.
//! - A listener blocked at a frame boundary holds nothing: when its socket
//!   has room again it skips forward if it was lapped and sends from the ring.
//!
//! # Memory
//!
//! A caught-up listener owns no heap memory: [`Listener`] is a fixed-size
//! record ([`LISTENER_BYTES`], checked by a test) and the owned bytes above
//! live in a boxed [`Owned`] only while they are pending. The socket itself
//! is the only other per-listener resource (its send queue is bounded by
//! `TCP_NOTSENT_LOWAT`, see `engine.rs`).
//!
//! The state machine is generic over [`Transport`] (the real `sendmsg`, or a
//! scripted socket in the unit tests below), so it is tested without a
//! subprocess.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use crate::config::FramerKind;
use crate::metadata;
use crate::reservoir;
use crate::ring::Ring;
use crate::stats::ClientStats;
use crate::stream::Stream;
use crate::sys::{self, io_slice, IoSlice, SendResult};
use crate::websocket;

/// Most pieces in one vectored send (owned pieces + frames).
pub const MAX_IOV: usize = 64;
/// Most bytes asked of one vectored send.
pub const MAX_SEND_BYTES: usize = 256 * 1024;
/// Most bytes of frames copied out of the ring for one send when the writer
/// is too fast for any slot to be sent from in place.
pub const MAX_COPY_BYTES: usize = 64 * 1024;

/// Bytes of one listener record in the shard's table (checked by a test):
/// the whole per-listener memory of a caught-up listener.
pub const LISTENER_BYTES: usize = 176;

/// Where the bytes of one vectored send go: the listener's socket, or a
/// scripted socket in tests.
pub trait Transport {
    /// Send the slices (non-blocking, no SIGPIPE).
    ///
    /// # Safety
    ///
    /// Every slice must point to readable memory that stays mapped during the
    /// call (ring slots may change under it; the caller validates).
    unsafe fn send(&mut self, iov: &[IoSlice]) -> SendResult;
}

/// The real socket.
pub struct Socket(pub RawFd);

impl Transport for Socket {
    unsafe fn send(&mut self, iov: &[IoSlice]) -> SendResult {
        // SAFETY: forwarded from the caller's contract.
        unsafe { sys::send_vectored(self.0, iov) }
    }
}

/// Reusable buffers for building one vectored send, one per shard (a send
/// never awaits, so the shard's listeners take turns with them).
#[derive(Debug, Default)]
pub struct SendScratch {
    iov: Vec<IoSlice>,
    /// What each iovec is, and its length.
    segs: Vec<(Seg, usize)>,
    /// WebSocket message headers of this send (iovecs point into them).
    ws_heads: Vec<([u8; websocket::MAX_HEADER], u8)>,
}

impl SendScratch {
    /// Buffers with room for the largest send.
    pub fn new() -> SendScratch {
        SendScratch {
            iov: Vec::with_capacity(MAX_IOV),
            segs: Vec::with_capacity(MAX_IOV),
            ws_heads: Vec::with_capacity(MAX_IOV),
        }
    }
}

/// What one iovec of a send is.
#[derive(Debug, Clone, Copy)]
enum Seg {
    /// The response head.
    Head,
    /// The rest of a metadata block an earlier send took part of.
    Block,
    /// A metadata block placed in this send: the title (true) or "no
    /// change" (false).
    NewBlock(bool),
    /// The stream header.
    Prefix,
    /// Owned frame bytes (lead-in, copies, a frame's rest).
    Tail,
    /// The message header of frame `n` (WebSocket), at this index of the
    /// scratch headers.
    WsHead(u64, u8),
    /// Bytes of frame `n` from its slot; `end`: they end the frame.
    Frame { n: u64, full: usize, end: bool },
}

/// The iovecs of one send being built: audio bytes are cut every
/// `metaint` bytes for a metadata block (a listener that asked for ICY).
struct Plan<'a> {
    iov: &'a mut Vec<IoSlice>,
    segs: &'a mut Vec<(Seg, usize)>,
    total: usize,
    /// Audio bytes before the next block (only with `metaint` > 0).
    icy_left: usize,
    metaint: usize,
    /// The title block to place first, when the title changed.
    title: Option<Arc<[u8]>>,
    title_used: bool,
}

impl Plan<'_> {
    fn push(&mut self, seg: Seg, bytes: &[u8]) {
        self.iov.push(io_slice(bytes.as_ptr(), bytes.len()));
        self.segs.push((seg, bytes.len()));
        self.total += bytes.len();
    }

    /// A metadata block here: the new title once, then "no change" blocks.
    fn block(&mut self) {
        let (bytes, is_title): (&[u8], bool) = match &self.title {
            Some(t) if !self.title_used => (t, true),
            _ => (&metadata::EMPTY_BLOCK[..], false),
        };
        // The title block is held by the caller's `title` for the whole send,
        // the empty block is static: both outlive the iovec.
        let (ptr, len) = (bytes.as_ptr(), bytes.len());
        self.title_used |= is_title;
        self.iov.push(io_slice(ptr, len));
        self.segs.push((Seg::NewBlock(is_title), len));
        self.total += len;
        self.icy_left = self.metaint;
    }

    /// Audio bytes, cut for blocks.
    fn audio(&mut self, seg: Seg, bytes: &[u8]) {
        if self.metaint == 0 {
            self.push(seg, bytes);
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.icy_left == 0 {
                self.block();
            }
            let take = rest.len().min(self.icy_left);
            self.push(seg, &rest[..take]);
            self.icy_left -= take;
            rest = &rest[take..];
        }
    }

    /// A whole frame from its slot, cut for blocks.
    fn frame(&mut self, n: u64, bytes: &[u8]) {
        let full = bytes.len();
        if self.metaint == 0 {
            self.push(Seg::Frame { n, full, end: true }, bytes);
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.icy_left == 0 {
                self.block();
            }
            let take = rest.len().min(self.icy_left);
            let end = take == rest.len();
            self.push(Seg::Frame { n, full, end }, &rest[..take]);
            self.icy_left -= take;
            rest = &rest[take..];
        }
    }
}

/// What the state machine needs of the shard for one send.
pub struct SendCtx<'a> {
    /// The listener's stream.
    pub stream: &'a Stream,
    /// This shard's counters of that stream.
    pub stats: &'a ClientStats,
    /// Slots kept between a listener and the writer: a listener whose next
    /// frame is within this many slots of being overwritten is lapped (at
    /// least the ring's guard, and more than the writer can publish during
    /// one send — see `Stream::writer_reach`).
    pub guard: u64,
    /// The writer can lap the whole ring during one send: frames are copied
    /// (validated) before they are sent, never sent from their slots.
    pub copy_all: bool,
    /// The shard's buffers.
    pub scratch: &'a mut SendScratch,
}

/// What one call of [`Listener::try_send`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Bytes went out; more may be pending (call again).
    Progress,
    /// Nothing is pending: wait for a new frame.
    CaughtUp,
    /// The socket has no room: wait until it has.
    Blocked,
    /// The response is over.
    Finished(End),
}

/// Why a listener's response ended. One enum for every way out; the teardown
/// (`engine.rs`) counts and logs each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `client-max-bytes` reached after whole frames.
    MaxBytes,
    /// A frame being sent was overwritten (torn) or could not be completed.
    Torn,
    /// The peer went away or the socket failed.
    Gone,
    /// The stream ended for good and the listener got every frame.
    StreamEnded,
    /// The server is stopping.
    Stopping,
    /// The listener sent more than a listener may (it is not a player).
    UnexpectedInput,
}

impl End {
    /// The reason as the end-of-listener log line writes it.
    pub fn name(self) -> &'static str {
        match self {
            End::MaxBytes => "client-max-bytes",
            End::Torn => "torn",
            End::Gone => "gone",
            End::StreamEnded => "stream ended",
            End::Stopping => "server stopping",
            End::UnexpectedInput => "unexpected input",
        }
    }
}

/// What a WebSocket listener's input asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsInput {
    /// Nothing to do but count `data` bytes of data messages.
    Fine {
        /// Bytes of text or binary messages (a receiver sends none).
        data: usize,
    },
    /// Close with this status code (the client closed, or broke the
    /// protocol: an unmasked frame, a bad opcode, a frame too large).
    Close(u16),
}

/// How a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Plain HTTP: the stream as the body.
    Http,
    /// HTTP with an ICY metadata block every this many audio bytes.
    Icy(usize),
    /// WebSocket: one binary message per frame.
    WebSocket,
}

/// Owned bytes that go out before ring frames, present only while pending.
#[derive(Debug, Default)]
struct Owned {
    /// The response head (status line and headers) and how much went out.
    head: Vec<u8>,
    head_pos: usize,
    /// WebSocket: bytes of a client frame that came in part.
    input: Vec<u8>,
    /// The rest of a metadata block a send took part of (it goes whole
    /// before any more audio).
    block: Option<Arc<[u8]>>,
    block_pos: usize,
    /// The stream header (shared with the stream) and how much went out.
    prefix: Option<Arc<[u8]>>,
    prefix_pos: usize,
    /// Frame bytes copied out of the ring: the remainder of a frame a send
    /// took part of, an MP3 lead-in, or frames copied because the writer is
    /// too fast. Always ends at a frame end.
    tail: Vec<u8>,
    tail_pos: usize,
    /// Whole frames in `tail`.
    tail_frames: u64,
}

impl Owned {
    fn pending(&self) -> bool {
        self.head_pos < self.head.len()
            || self.block.is_some()
            || self.prefix.is_some()
            || self.tail_pos < self.tail.len()
    }
}

// Flag bits of `Listener::flags`.
/// The stream header has not been taken yet.
const NEEDS_HEADER: u8 = 1;
/// Ogg: a connected listener gets a new logical stream's header in-band.
const RESEND_HEADERS: u8 = 2;
/// MP3 layer III: joins and skips get a bit-reservoir lead-in.
const MP3: u8 = 4;
/// A lead-in is due before frame `next`.
const LEADIN_DUE: u8 = 8;
/// The socket had no room; waiting for it (the engine's readiness wait).
const BLOCKED: u8 = 16;
/// A WebSocket listener: each frame is one binary message.
const WEBSOCKET: u8 = 32;

/// One listener's record in its shard's table.
#[derive(Debug)]
pub struct Listener {
    /// The socket; closed when the record is dropped (which also removes it
    /// from the shard's epoll set).
    fd: OwnedFd,
    /// Unique listener number (per process).
    pub id: u64,
    /// Next frame (number) to send from the ring.
    pub next: u64,
    /// First frame of the header this listener got.
    header_from: u64,
    /// End the response after the whole frame that reaches this many frame
    /// bytes; 0 = never.
    max_bytes: u64,
    /// Frame bytes of frames sent whole or moved into the tail.
    body_bytes: u64,
    /// Body bytes written to the socket (header bytes and frames; the
    /// response head is not counted).
    pub bytes_sent: u64,
    /// Whole frames written.
    pub frames_sent: u64,
    /// Frames skipped because the listener was lapped.
    pub frames_skipped: u64,
    /// When it connected, in microseconds since [`epoch`] (8 bytes, not an
    /// `Instant`'s 16).
    connected_us: u64,
    /// Remote address.
    pub peer: SocketAddr,
    /// Pending owned bytes (none while caught up).
    owned: Option<Box<Owned>>,
    /// Bytes of frame `next` already sent from its slot (a partial send; its
    /// remainder is copied to the tail right after, so this is 0 between
    /// calls).
    offset: u32,
    /// `NEEDS_HEADER | RESEND_HEADERS | MP3 | LEADIN_DUE | BLOCKED`.
    flags: u8,
    /// The stream it listens to (its group in the shard's table).
    pub stream_id: u64,
    /// The stream it asked for: the same, or the one whose fallback it is on.
    pub home_id: u64,
    /// MP3: the first frame of the newest source session it has seen (a new
    /// session gets a lead-in).
    session_seen: u64,
    /// Bytes the listener sent after its request (it should send none).
    input: u32,
    /// ICY: audio bytes between metadata blocks (0: the listener did not ask).
    metaint: u32,
    /// ICY: audio bytes before its next block.
    icy_left: u32,
    /// ICY: the title version its last block carried (`u32::MAX` before the
    /// first block, which always carries the current title).
    title_version: u32,
    /// The bound on its socket's unsent bytes (`TCP_NOTSENT_LOWAT`).
    pub queue_bound: u32,
    /// Engine bookkeeping: the generation of the table slot (in event tokens).
    pub slot_gen: u32,
    /// Engine bookkeeping: position in its stream group's member list.
    pub member_pos: u32,
}

/// The process's time origin for listener timestamps.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Listener ids are handed out from here.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Listener {
    /// A listener of `stream` on socket `fd`, starting at frame `start`,
    /// with `head` (the response head) to send first.
    pub fn new(
        stream: &Stream,
        fd: OwnedFd,
        peer: SocketAddr,
        start: u64,
        head: Vec<u8>,
    ) -> Listener {
        let config = stream.config();
        let mut flags = NEEDS_HEADER;
        if config.framer == FramerKind::Ogg {
            flags |= RESEND_HEADERS;
        }
        if config.framer == FramerKind::Mp3 {
            flags |= MP3 | LEADIN_DUE;
        }
        let owned = (!head.is_empty()).then(|| {
            Box::new(Owned {
                head,
                ..Owned::default()
            })
        });
        Listener {
            fd,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            next: start,
            header_from: 0,
            max_bytes: config.client_max_bytes,
            body_bytes: 0,
            bytes_sent: 0,
            frames_sent: 0,
            frames_skipped: 0,
            connected_us: epoch().elapsed().as_micros() as u64,
            peer,
            owned,
            offset: 0,
            flags,
            stream_id: stream.id,
            home_id: stream.id,
            session_seen: stream.session_start(),
            input: 0,
            metaint: 0,
            icy_left: 0,
            title_version: u32::MAX,
            queue_bound: 0,
            slot_gen: 0,
            member_pos: 0,
        }
    }

    /// The listener asked for ICY metadata: a block after every `metaint`
    /// audio bytes, the first one carrying the current title.
    pub fn enable_icy(&mut self, metaint: usize) {
        let m = metaint.min(u32::MAX as usize) as u32;
        self.metaint = m;
        self.icy_left = m;
    }

    /// The listener speaks WebSocket: every frame goes as one binary
    /// message (headers and copied frames too).
    pub fn enable_websocket(&mut self) {
        self.flags |= WEBSOCKET;
        self.metaint = 0;
    }

    /// True for a WebSocket listener.
    pub fn websocket(&self) -> bool {
        self.flags & WEBSOCKET != 0
    }

    /// Queue a control message (WebSocket pong or close) to go out at the
    /// next frame boundary.
    pub fn queue_control(&mut self, message: Vec<u8>) {
        let o = self.owned();
        if o.tail_pos >= o.tail.len() {
            o.tail.clear();
            o.tail_pos = 0;
            o.tail_frames = 0;
        }
        o.tail.extend_from_slice(&message);
    }

    /// WebSocket: take what the client sent. Pings are answered (a pong
    /// queued for the next frame boundary); a close is answered and ends
    /// the response; data messages are counted (a receiver has nothing to
    /// send) and broken frames end it.
    pub fn ws_input(&mut self, bytes: &[u8]) -> WsInput {
        let o = self.owned();
        o.input.extend_from_slice(bytes);
        let mut input = std::mem::take(&mut o.input);
        let mut at = 0;
        let mut data = 0usize;
        let mut reply = WsInput::Fine { data: 0 };
        loop {
            match websocket::parse_client_frame(&input[at..], 4096) {
                Ok(None) => break,
                Ok(Some((f, used))) => {
                    at += used;
                    match f.opcode {
                        websocket::op::PING => {
                            let pong = websocket::frame(websocket::op::PONG, &f.payload);
                            self.queue_control(pong);
                        }
                        websocket::op::PONG => {}
                        websocket::op::CLOSE => {
                            reply = WsInput::Close(1000);
                            break;
                        }
                        _ => data += f.payload.len(),
                    }
                }
                Err(e) => {
                    reply = WsInput::Close(e.code());
                    break;
                }
            }
        }
        input.drain(..at);
        if let WsInput::Fine { .. } = reply {
            reply = WsInput::Fine { data };
        }
        let o = self.owned();
        o.input = input;
        self.release_owned();
        reply
    }

    /// How long it has been connected.
    pub fn connected_for(&self) -> std::time::Duration {
        epoch()
            .elapsed()
            .saturating_sub(std::time::Duration::from_micros(self.connected_us))
    }

    /// Move the listener to `to` (a fallback, or back home), at a frame
    /// boundary: it continues at `to`'s newest frame, after `to`'s header
    /// (Ogg: the new stream's header pages) and, for MP3, a lead-in, so its
    /// decoder goes on cleanly.
    pub fn retarget(&mut self, to: &Stream) {
        debug_assert!(self.at_boundary());
        self.release_owned();
        self.stream_id = to.id;
        // A stream that delivers now: from its newest frame (it came after
        // the listener last left it). A quiet one (a fallback that went
        // silent too sends its listeners back to a still-silent home): from
        // its next frame, since its newest may be one the listener already
        // got there.
        self.next = if to.live(to.config().fallback_after) {
            to.start_frame()
        } else {
            to.ring.head()
        };
        self.session_seen = to.session_start();
        self.offset = 0;
        self.header_from = 0;
        // Title versions count per stream: the next block carries `to`'s
        // current title.
        self.title_version = u32::MAX;
        let config = to.config();
        self.flags &= BLOCKED | WEBSOCKET;
        self.flags |= NEEDS_HEADER;
        if config.framer == FramerKind::Ogg {
            self.flags |= RESEND_HEADERS;
        }
        if config.framer == FramerKind::Mp3 {
            self.flags |= MP3 | LEADIN_DUE;
        }
    }

    /// Count `n` bytes of input from the listener; returns the total.
    pub fn note_input(&mut self, n: usize) -> u32 {
        self.input = self.input.saturating_add(n.min(u32::MAX as usize) as u32);
        self.input
    }

    /// The socket.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// True while waiting for room in the socket.
    pub fn blocked(&self) -> bool {
        self.flags & BLOCKED != 0
    }

    /// The socket has room again (a readiness event).
    pub fn unblock(&mut self) {
        self.flags &= !BLOCKED;
    }

    /// True when nothing is half-sent: the response could end here cleanly.
    pub fn at_boundary(&self) -> bool {
        self.offset == 0 && !self.owned_pending()
    }

    /// True when the response has all the frames `client-max-bytes` allows.
    fn limit_reached(&self) -> bool {
        self.max_bytes > 0 && self.body_bytes >= self.max_bytes
    }

    fn owned_pending(&self) -> bool {
        self.owned.as_ref().is_some_and(|o| o.pending())
    }

    fn owned(&mut self) -> &mut Owned {
        self.owned.get_or_insert_with(Box::default)
    }

    /// Free the owned bytes once all are out (the tail buffer goes back to
    /// the shard's pool): a caught-up listener holds no heap memory.
    fn release_owned(&mut self) {
        if let Some(o) = &self.owned {
            if !o.pending() && o.input.is_empty() {
                if let Some(o) = self.owned.take() {
                    give_back(o.tail);
                }
            }
        }
    }

    /// Heap bytes this listener owns now (0 while caught up).
    pub fn heap_bytes(&self) -> usize {
        self.owned.as_ref().map_or(0, |o| {
            std::mem::size_of::<Owned>() + o.head.capacity() + o.tail.capacity()
        })
    }

    /// If the listener fell within `guard` slots of the writer, jump to the
    /// newest frame (only at a frame boundary in the ring: a half-sent frame
    /// is completed from its copy first).
    fn skip_if_lapped(&mut self, ring: &Ring, head: u64, guard: u64, stats: &ClientStats) {
        let cap = ring.capacity();
        let oldest = head.saturating_sub(cap.saturating_sub(guard.min(cap - 1)));
        if self.offset == 0 && head > 0 && self.next < oldest {
            let newest = head - 1;
            let skipped = newest - self.next;
            self.frames_skipped += skipped;
            stats.frames_skipped.add(skipped);
            stats.laps.inc();
            self.next = newest;
            if self.flags & MP3 != 0 {
                self.flags |= LEADIN_DUE;
            }
        }
    }

    /// Take the stream's header bytes before the first frame goes out.
    fn take_header(&mut self, stream: &Stream) {
        self.flags &= !NEEDS_HEADER;
        let h = stream.header_for(self.next);
        self.header_from = h.first_frame;
        if !h.bytes.is_empty() {
            let ws = self.websocket();
            let o = self.owned();
            if ws {
                // One message of its own.
                o.tail = websocket::frame(websocket::op::BINARY, &h.bytes);
                o.tail_pos = 0;
                o.tail_frames = 0;
            } else {
                o.prefix = Some(h.bytes);
                o.prefix_pos = 0;
            }
        }
    }

    /// Before the first frame after a join or a skip of an MP3 stream: put
    /// the lead-in that carries frame `next`'s bit reservoir into the tail.
    ///
    /// At the start of a source session (an encoder that came back, a relay
    /// that switched upstream) the frames the reservoir needs may not exist
    /// yet: then the listener starts a few frames later, at the first frame
    /// whose lead-in the session's frames can carry, waiting for them if
    /// need be (returns false: send nothing yet), so its decoder never sees
    /// a frame that borrows from nowhere.
    fn build_leadin(&mut self, stream: &Stream, head: u64, stats: &ClientStats) -> bool {
        let ring = &stream.ring;
        let floor = stream.session_start().max(ring.oldest_safe(head));
        let mut tail = take_buffer();
        let mut target = self.next;
        let found = loop {
            match reservoir::lead_in(ring, target, floor, &mut tail) {
                Some(frames) => break Some(frames),
                None if target + 1 < head && target - self.next < reservoir::MAX_LEADIN_FRAMES => {
                    target += 1;
                }
                None => break None,
            }
        };
        match found {
            Some(frames) => {
                if target > self.next {
                    let skipped = target - self.next;
                    self.frames_skipped += skipped;
                    stats.frames_skipped.add(skipped);
                    self.next = target;
                }
                self.flags &= !LEADIN_DUE;
                if frames > 0 && self.websocket() {
                    tail = ws_frames(&tail);
                }
                if frames > 0 {
                    self.body_bytes += tail.len() as u64;
                    let o = self.owned();
                    o.tail = tail;
                    o.tail_pos = 0;
                    o.tail_frames = frames;
                } else {
                    give_back(tail);
                }
                true
            }
            None => {
                give_back(tail);
                if head - self.next <= reservoir::MAX_LEADIN_FRAMES {
                    // Too few frames of this session yet: wait for more.
                    false
                } else {
                    // Nothing carries it (not layer III after all, a broken
                    // stream): send the frame as it is.
                    self.flags &= !LEADIN_DUE;
                    true
                }
            }
        }
    }

    /// The writer is too fast to send from slots: copy frames from `next`
    /// (validated, whole frames, at most [`MAX_COPY_BYTES`]) into the tail.
    fn copy_frames(&mut self, ring: &Ring, head: u64, until: u64) {
        let mut tail = take_buffer();
        let mut frames = 0;
        while self.next < head.min(until) && tail.len() < MAX_COPY_BYTES && !self.limit_reached() {
            let before = tail.len();
            if !ring.append_frame(self.next, &mut tail) {
                // Overwritten already: the lap check moves the listener on.
                break;
            }
            self.body_bytes += (tail.len() - before) as u64;
            if self.flags & WEBSOCKET != 0 {
                let mut h = [0u8; websocket::MAX_HEADER];
                let n = websocket::header(websocket::op::BINARY, tail.len() - before, &mut h);
                tail.splice(before..before, h[..n].iter().copied());
            }
            frames += 1;
            self.next += 1;
        }
        if frames == 0 {
            give_back(tail);
            return;
        }
        let o = self.owned();
        o.tail = tail;
        o.tail_pos = 0;
        o.tail_frames = frames;
    }

    /// Send everything pending in one vectored send.
    pub fn try_send<T: Transport>(&mut self, ctx: &mut SendCtx<'_>, out: &mut T) -> Step {
        let stream = ctx.stream;
        let ring = &*stream.ring;
        let head = ring.head();
        if self.flags & NEEDS_HEADER != 0 && head > self.next {
            self.take_header(stream);
        }
        if !self.owned_pending() {
            self.skip_if_lapped(ring, head, ctx.guard, ctx.stats);
        }
        if self.flags & MP3 != 0 && self.at_boundary() {
            // Crossing into a new source session: its first frames may
            // borrow from the session before, which the decoder never got.
            let session = stream.session_start();
            if session > self.session_seen && self.next >= session {
                self.session_seen = session;
                if self.next > session.saturating_sub(1) && self.frames_sent > 0 {
                    self.flags |= LEADIN_DUE;
                }
            }
        }
        if self.flags & (LEADIN_DUE | NEEDS_HEADER) == LEADIN_DUE
            && self.at_boundary()
            && head > self.next
            && !self.build_leadin(stream, head, ctx.stats)
        {
            return Step::CaughtUp;
        }
        // A new logical stream begins at `new_header`: its header goes out
        // before its first frame.
        let mut new_header = u64::MAX;
        if self.flags & RESEND_HEADERS != 0 {
            let lh = stream.latest_header_frame();
            if lh != u64::MAX && lh > self.header_from {
                new_header = lh;
            }
        }
        if new_header <= self.next && self.flags & NEEDS_HEADER == 0 && self.at_boundary() {
            self.take_header(stream);
            new_header = u64::MAX;
        }
        if ctx.copy_all && self.flags & NEEDS_HEADER == 0 && self.at_boundary() {
            self.copy_frames(ring, head, new_header);
        }

        // The title block this send may carry (a listener that asked for
        // ICY metadata): the current title when it changed since the last
        // block it got, else a single zero byte.
        let title = if self.metaint > 0 {
            let v = stream.titles.version();
            if v != self.title_version {
                let (v, _, block) = stream.titles.current();
                Some((v, block))
            } else {
                None
            }
        } else {
            None
        };
        let ws = self.flags & WEBSOCKET != 0;
        let SendScratch {
            iov,
            segs,
            ws_heads,
        } = &mut *ctx.scratch;
        iov.clear();
        segs.clear();
        ws_heads.clear();
        let mut plan = Plan {
            iov,
            segs,
            total: 0,
            icy_left: self.icy_left as usize,
            metaint: self.metaint as usize,
            title: title.as_ref().map(|(_, b)| b.clone()),
            title_used: false,
        };
        if let Some(o) = &self.owned {
            if o.head_pos < o.head.len() {
                plan.push(Seg::Head, &o.head[o.head_pos..]);
            }
            if let Some(b) = &o.block {
                plan.push(Seg::Block, &b[o.block_pos..]);
                plan.icy_left = plan.metaint;
            }
            if let Some(p) = &o.prefix {
                plan.audio(Seg::Prefix, &p[o.prefix_pos..]);
            }
            if o.tail_pos < o.tail.len() {
                plan.audio(Seg::Tail, &o.tail[o.tail_pos..]);
            }
        }
        let cap = ring.capacity();
        // Frames older than this could be overwritten during the send.
        let floor = head.saturating_sub(cap.saturating_sub(ctx.guard.min(cap - 1)));
        let mut planned = self.body_bytes;
        let mut n = self.next;
        // Header bytes must go before the first frame; if they are not taken
        // yet (no frame was available a moment ago) add no frame now.
        while self.flags & NEEDS_HEADER == 0
            && !ctx.copy_all
            && n < head
            && plan.iov.len() + 3 < MAX_IOV
            && plan.total < MAX_SEND_BYTES
        {
            if self.max_bytes > 0 && planned >= self.max_bytes {
                break;
            }
            if n < floor || n >= new_header {
                // Too close to the writer (the lap check moves the listener
                // on next time), or a new logical stream's header goes first.
                break;
            }
            let Some(f) = ring.frame(n) else {
                // Lapped since we read head: the next call skips forward.
                break;
            };
            if ws {
                let mut h = [0u8; websocket::MAX_HEADER];
                let len = websocket::header(websocket::op::BINARY, f.len, &mut h);
                // `ws_heads` has room for MAX_IOV headers (never reallocates
                // while iovecs point into it).
                ws_heads.push((h, len as u8));
                let idx = ws_heads.len() - 1;
                let p = ws_heads[idx].0.as_ptr();
                plan.iov.push(io_slice(p, len));
                plan.segs.push((Seg::WsHead(n, idx as u8), len));
                plan.total += len;
            }
            // SAFETY: `f.ptr .. f.ptr + f.len` is the slot's frame, mapped
            // while the ring lives; read only by the kernel in the send.
            let bytes = unsafe { std::slice::from_raw_parts(f.ptr, f.len) };
            plan.frame(n, bytes);
            planned += f.len as u64;
            n += 1;
        }
        if plan.iov.is_empty() {
            if head > self.next
                && self.at_boundary()
                && !self.limit_reached()
                && self.flags & NEEDS_HEADER == 0
                && self.next < floor
            {
                // A frame exists but the writer reached it: go round again,
                // the lap check will move us forward.
                return Step::Progress;
            }
            if self.limit_reached() && self.at_boundary() {
                return Step::Finished(End::MaxBytes);
            }
            return Step::CaughtUp;
        }

        // SAFETY: every iovec points into `self.owned` (untouched until the
        // call returns), into `ws_heads` or a title block held here (neither
        // changes before the call returns: no push happens after the iovecs
        // were made, the vector has room for MAX_IOV), or into ring slots,
        // which stay mapped while the stream (and its ring) is alive — the
        // caller holds it. Slot bytes may change during the call; that is
        // detected below.
        let result = unsafe { out.send(iov) };
        iov.clear();
        let sent = match result {
            SendResult::Sent(k) => k,
            SendResult::WouldBlock => {
                ctx.stats.would_block.inc();
                self.flags |= BLOCKED;
                return Step::Blocked;
            }
            SendResult::Failed(_) => return Step::Finished(End::Gone),
        };
        ctx.stats.sends.inc();
        let mut left = sent;
        // The response head is not body: the byte counters (as streamserve's
        // log line) count the body only.
        let mut head_bytes = 0;
        // The frame being sent: its number, bytes of it already out, and the
        // rest of its message header still to send (WebSocket).
        let mut open_frame: Option<(u64, usize, Vec<u8>)> = None;
        for &(seg, len) in segs.iter() {
            if left == 0 {
                break;
            }
            let used = len.min(left);
            left -= used;
            match seg {
                Seg::Head => {
                    head_bytes += used;
                    if let Some(o) = &mut self.owned {
                        o.head_pos += used;
                    }
                }
                Seg::Block => {
                    // The rest of a block a send took part of.
                    if let Some(o) = &mut self.owned {
                        o.block_pos += used;
                        if o.block.as_ref().is_some_and(|b| o.block_pos >= b.len()) {
                            o.block = None;
                            o.block_pos = 0;
                            self.icy_left = self.metaint;
                        }
                    }
                }
                Seg::NewBlock(is_title) => {
                    if is_title {
                        if let Some((v, _)) = &title {
                            self.title_version = *v;
                        }
                    }
                    if used < len {
                        // A block goes out whole before any more audio.
                        let block = match (&title, is_title) {
                            (Some((_, b)), true) => b.clone(),
                            _ => Arc::from(&metadata::EMPTY_BLOCK[..]),
                        };
                        let o = self.owned();
                        o.block = Some(block);
                        o.block_pos = used;
                        self.icy_left = 0;
                    } else {
                        self.icy_left = self.metaint;
                    }
                }
                Seg::Prefix => {
                    self.icy_left = self.icy_left.saturating_sub(used as u32);
                    if let Some(o) = &mut self.owned {
                        o.prefix_pos += used;
                        if o.prefix.as_ref().is_some_and(|p| o.prefix_pos >= p.len()) {
                            o.prefix = None;
                            o.prefix_pos = 0;
                        }
                    }
                }
                Seg::Tail => {
                    self.icy_left = self.icy_left.saturating_sub(used as u32);
                    if let Some(o) = &mut self.owned {
                        o.tail_pos += used;
                        if o.tail_pos >= o.tail.len() {
                            self.frames_sent += o.tail_frames;
                            ctx.stats.frames_out.add(o.tail_frames);
                            o.tail_frames = 0;
                        }
                    }
                }
                Seg::WsHead(num, idx) => {
                    let rest = if used < len {
                        ws_heads
                            .get(idx as usize)
                            .map(|(h, l)| h[used..*l as usize].to_vec())
                            .unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    open_frame = Some((num, 0, rest));
                }
                Seg::Frame { n: num, full, end } => {
                    let done = match &open_frame {
                        Some((f, d, _)) if *f == num => *d,
                        _ => 0,
                    };
                    if done == 0 && !ring.still_valid(num) {
                        return Step::Finished(End::Torn);
                    }
                    self.icy_left = self.icy_left.saturating_sub(used as u32);
                    if end && used == len {
                        self.next = num + 1;
                        self.body_bytes += full as u64;
                        self.frames_sent += 1;
                        ctx.stats.frames_out.inc();
                        open_frame = None;
                    } else {
                        open_frame = Some((num, done + used, Vec::new()));
                    }
                }
            }
        }
        let body = (sent - head_bytes) as u64;
        ctx.stats.bytes_out.add(body);
        self.bytes_sent += body;
        if let Some((num, done, ws_rest)) = open_frame {
            // A frame (or its message header) went out in part: the socket is
            // full. Copy the rest out of the ring now, while the slot still
            // holds it, so the writer cannot overwrite it before the listener
            // has room again.
            let mut tail = match self.owned.as_mut() {
                Some(o) if o.tail.capacity() > 0 && o.tail_pos >= o.tail.len() => {
                    std::mem::take(&mut o.tail)
                }
                _ => take_buffer(),
            };
            tail.clear();
            tail.extend_from_slice(&ws_rest);
            let before = tail.len();
            if !ring.append_frame(num, &mut tail) {
                give_back(tail);
                return Step::Finished(End::Torn);
            }
            let full = tail.len() - before;
            tail.drain(before..before + done.min(full));
            self.body_bytes += full as u64;
            self.next = num + 1;
            self.offset = 0;
            let o = self.owned();
            if o.tail_pos < o.tail.len() {
                // (Cannot happen: a partial frame means the owned tail went
                // out whole first.) Keep what was pending in front.
                let mut rest = o.tail[o.tail_pos..].to_vec();
                rest.extend_from_slice(&tail);
                tail = rest;
            }
            give_back(std::mem::replace(&mut o.tail, tail));
            o.tail_pos = 0;
            o.tail_frames = 1;
        }
        self.release_owned();
        Step::Progress
    }

    /// Bytes of the response still owned and pending (for tests and status).
    pub fn owned_bytes_pending(&self) -> usize {
        self.owned.as_ref().map_or(0, |o| {
            (o.head.len() - o.head_pos)
                + o.prefix.as_ref().map_or(0, |p| p.len() - o.prefix_pos)
                + (o.tail.len() - o.tail_pos)
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(o) = self.owned.take() {
            give_back(o.tail);
        }
    }
}

// ---------------------------------------------------------------------------
// The shard's pool of tail buffers
// ---------------------------------------------------------------------------

/// Buffers for owned frame bytes, kept per shard thread so that a listener
/// that copies (a lead-in, a partial frame, a fast writer) does not allocate
/// and fault in fresh memory every time, while caught-up listeners hold none.
const POOL_BUFFERS: usize = 16;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// MP3 frames (a lead-in) as WebSocket messages, one per frame.
fn ws_frames(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16 * 4);
    let mut at = 0;
    while at < bytes.len() {
        let len = bytes[at..]
            .get(..4)
            .and_then(|h| crate::framing::mp3_frame_len([h[0], h[1], h[2], h[3]]))
            .unwrap_or(bytes.len() - at)
            .min(bytes.len() - at)
            .max(1);
        out.extend_from_slice(&websocket::frame(
            websocket::op::BINARY,
            &bytes[at..at + len],
        ));
        at += len;
    }
    out
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

/// One listener as `/status/clients` shows it: a copy of its figures, made
/// by its shard when asked (no per-listener `Arc` or lock).
#[derive(Debug, Clone)]
pub struct ListenerRow {
    /// Unique listener number.
    pub id: u64,
    /// Remote address.
    pub peer: SocketAddr,
    /// The stream it listens to.
    pub stream_id: u64,
    /// The shard serving it.
    pub shard: usize,
    /// Seconds since it connected.
    pub connected_s: f64,
    /// Bytes written to it.
    pub bytes_sent: u64,
    /// Whole frames written.
    pub frames_sent: u64,
    /// Frames skipped after being lapped.
    pub frames_skipped: u64,
    /// Frames between it and the newest frame.
    pub lag_frames: u64,
    /// Bytes queued in its socket that the kernel has not sent yet.
    pub unsent_bytes: u64,
    /// The bound on those (`TCP_NOTSENT_LOWAT`).
    pub queue_bound: u64,
    /// True while it waits for room in its socket.
    pub blocked: bool,
}

impl Listener {
    /// The listener's row for `/status/clients`.
    pub fn row(&self, stream: &Stream, shard: usize) -> ListenerRow {
        ListenerRow {
            id: self.id,
            peer: self.peer,
            stream_id: stream.id,
            shard,
            connected_s: self.connected_for().as_secs_f64(),
            bytes_sent: self.bytes_sent,
            frames_sent: self.frames_sent,
            frames_skipped: self.frames_skipped,
            lag_frames: stream.ring.head().saturating_sub(self.next),
            unsent_bytes: sys::unsent_bytes(self.fd()).unwrap_or(0),
            queue_bound: u64::from(self.queue_bound),
            blocked: self.blocked(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Command, StreamConfig};
    use crate::ring::RingWriter;
    use crate::stream::SourceState;
    use std::io;

    /// A scripted socket: accepts up to `room` bytes per call (then
    /// WouldBlock), records everything, or fails.
    #[derive(Default)]
    struct Script {
        got: Vec<u8>,
        room: Option<usize>,
        fail: bool,
        calls: usize,
        /// Called between copying bytes and returning, to overwrite slots
        /// "during" the send.
        during: Option<Box<dyn FnMut()>>,
    }

    impl Transport for Script {
        unsafe fn send(&mut self, iov: &[IoSlice]) -> SendResult {
            self.calls += 1;
            if self.fail {
                return SendResult::Failed(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            let mut room = self.room.unwrap_or(usize::MAX);
            if room == 0 {
                return SendResult::WouldBlock;
            }
            let mut n = 0;
            for v in iov {
                let take = v.iov_len.min(room);
                // SAFETY: the state machine hands valid slices (the contract
                // under test).
                let s = unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, take) };
                self.got.extend_from_slice(s);
                n += take;
                room -= take;
                if room == 0 {
                    break;
                }
            }
            if let Some(r) = &mut self.room {
                *r -= n;
            }
            if let Some(f) = &mut self.during {
                f();
            }
            SendResult::Sent(n)
        }
    }

    fn config(args: &[&str]) -> StreamConfig {
        let mut v: Vec<std::ffi::OsString> = vec!["-path".into(), "/dev/null".into()];
        v.extend(args.iter().map(|a| std::ffi::OsString::from(*a)));
        match crate::config::parse_args(v, false).unwrap() {
            Command::Run(mut c) => c.streams.remove(0),
            other => panic!("{other:?}"),
        }
    }

    fn stream(args: &[&str]) -> (Arc<Stream>, RingWriter) {
        let s = Arc::new(Stream::new(config(args), 1).unwrap());
        let w = RingWriter::new(s.ring.clone());
        (s, w)
    }

    fn frame(n: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (n as usize * 31 + i) as u8).collect()
    }

    fn listener(s: &Stream, start: u64, head: &[u8]) -> Listener {
        // A real descriptor the record can own and close (never written to:
        // the tests send through `Script`).
        let fd = sys::dup(0).unwrap_or_else(|_| sys::dup(1).unwrap());
        Listener::new(s, fd, "127.0.0.1:9".parse().unwrap(), start, head.to_vec())
    }

    /// Call try_send until it stops making progress.
    fn pump(l: &mut Listener, s: &Stream, guard: u64, copy_all: bool, out: &mut Script) -> Step {
        let mut scratch = SendScratch::new();
        for _ in 0..1000 {
            let mut ctx = SendCtx {
                stream: s,
                stats: &s.client_stats[0],
                guard,
                copy_all,
                scratch: &mut scratch,
            };
            match l.try_send(&mut ctx, out) {
                Step::Progress => continue,
                other => return other,
            }
        }
        panic!("no end to progress")
    }

    #[test]
    fn a_caught_up_listener_record_is_small_and_owns_nothing() {
        assert_eq!(std::mem::size_of::<Listener>(), LISTENER_BYTES);
        let (s, mut w) = stream(&["-frame-bytes", "10"]);
        s.set_state(SourceState::Running);
        let mut l = listener(&s, 0, b"HEAD");
        assert!(l.heap_bytes() > 0, "the response head is owned until sent");
        w.publish(&frame(0, 10));
        let mut out = Script::default();
        assert_eq!(pump(&mut l, &s, 1, false, &mut out), Step::CaughtUp);
        assert_eq!(l.heap_bytes(), 0, "caught up: no heap");
        let mut want = b"HEAD".to_vec();
        want.extend(frame(0, 10));
        assert_eq!(out.got, want);
    }

    #[test]
    fn header_goes_first_then_whole_frames_in_one_send() {
        let (s, mut w) = stream(&["-frame-bytes", "8", "-header-bytes", "3"]);
        s.begin_session(0, b"HDR".to_vec());
        for n in 0..5 {
            w.publish(&frame(n, 8));
        }
        let mut l = listener(&s, 0, b"");
        let mut out = Script::default();
        assert_eq!(pump(&mut l, &s, 1, false, &mut out), Step::CaughtUp);
        let mut want = b"HDR".to_vec();
        for n in 0..5 {
            want.extend(frame(n, 8));
        }
        assert_eq!(out.got, want);
        assert_eq!(out.calls, 1, "one vectored send");
        assert_eq!((l.frames_sent, l.next), (5, 5));
    }

    #[test]
    fn a_partial_send_completes_the_frame_from_its_copy_after_being_lapped() {
        let (s, mut w) = stream(&["-frame-bytes", "100", "-source-buffer", "8"]);
        s.set_state(SourceState::Running);
        for n in 0..3 {
            w.publish(&frame(n, 100));
        }
        let mut l = listener(&s, 0, b"");
        let mut out = Script {
            room: Some(150),
            ..Script::default()
        };
        assert_eq!(pump(&mut l, &s, 1, false, &mut out), Step::Blocked);
        assert!(l.blocked());
        assert_eq!(l.owned_bytes_pending(), 50, "the rest of frame 1 is copied");
        // The writer laps the listener while it waits.
        for n in 3..40 {
            w.publish(&frame(n, 100));
        }
        l.unblock();
        out.room = None;
        assert_eq!(pump(&mut l, &s, 1, false, &mut out), Step::CaughtUp);
        // Frames 0 and 1 whole, then a skip to the newest frame (39).
        let mut want = frame(0, 100);
        want.extend(frame(1, 100));
        want.extend(frame(39, 100));
        assert_eq!(out.got, want);
        assert_eq!(l.frames_skipped, 39 - 2);
        assert_eq!(s.client_stats[0].laps.get(), 1);
        assert_eq!(l.heap_bytes(), 0);
    }

    #[test]
    fn blocked_at_a_boundary_holds_nothing() {
        let (s, mut w) = stream(&["-frame-bytes", "10"]);
        s.set_state(SourceState::Running);
        w.publish(&frame(0, 10));
        let mut l = listener(&s, 0, b"");
        let mut out = Script {
            room: Some(0),
            ..Script::default()
        };
        assert_eq!(pump(&mut l, &s, 1, false, &mut out), Step::Blocked);
        assert_eq!(l.heap_bytes(), 0);
        assert_eq!(s.client_stats[0].would_block.get(), 1);
    }

    #[test]
    fn a_frame_overwritten_during_its_send_ends_the_listener_as_torn() {
        let (s, w) = stream(&["-frame-bytes", "10", "-source-buffer", "4"]);
        s.set_state(SourceState::Running);
        let w = std::rc::Rc::new(std::cell::RefCell::new(w));
        w.borrow_mut().publish(&frame(0, 10));
        let mut l = listener(&s, 0, b"");
        let writer = w.clone();
        let mut out = Script {
            // The writer laps the ring while the kernel copies.
            during: Some(Box::new(move || {
                for n in 1..6 {
                    writer.borrow_mut().publish(&frame(n, 10));
                }
            })),
            ..Script::default()
        };
        assert_eq!(
            pump(&mut l, &s, 1, false, &mut out),
            Step::Finished(End::Torn)
        );
    }

    #[test]
    fn client_max_bytes_ends_after_whole_frames() {
        let (s, mut w) = stream(&["-frame-bytes", "10", "-client-max-bytes", "25"]);
        s.set_state(SourceState::Running);
        for n in 0..10 {
            w.publish(&frame(n, 10));
        }
        let mut l = listener(&s, 0, b"");
        let mut out = Script::default();
        assert_eq!(
            pump(&mut l, &s, 1, false, &mut out),
            Step::Finished(End::MaxBytes)
        );
        // ceil(25 / 10) = 3 whole frames.
        assert_eq!(out.got.len(), 30);
    }

    #[test]
    fn a_failed_socket_is_gone() {
        let (s, mut w) = stream(&["-frame-bytes", "10"]);
        w.publish(&frame(0, 10));
        let mut l = listener(&s, 0, b"H");
        let mut out = Script {
            fail: true,
            ..Script::default()
        };
        assert_eq!(
            pump(&mut l, &s, 1, false, &mut out),
            Step::Finished(End::Gone)
        );
    }

    #[test]
    fn a_fast_writer_is_sent_from_validated_copies() {
        let (s, mut w) = stream(&["-frame-bytes", "10", "-source-buffer", "8"]);
        s.set_state(SourceState::Running);
        for n in 0..6 {
            w.publish(&frame(n, 10));
        }
        let mut l = listener(&s, 2, b"");
        let mut out = Script::default();
        assert_eq!(pump(&mut l, &s, 1, true, &mut out), Step::CaughtUp);
        let want: Vec<u8> = (2..6).flat_map(|n| frame(n, 10)).collect();
        assert_eq!(out.got, want);
        assert_eq!(l.frames_sent, 4);
        assert_eq!(l.heap_bytes(), 0);
    }

    #[test]
    fn the_guard_skips_a_listener_the_writer_could_reach_during_a_send() {
        let (s, mut w) = stream(&["-frame-bytes", "10", "-source-buffer", "16"]);
        s.set_state(SourceState::Running);
        for n in 0..16 {
            w.publish(&frame(n, 10));
        }
        // With a guard of 6, frames older than 16 - (16 - 6) = 6 are unsafe.
        let mut l = listener(&s, 3, b"");
        let mut out = Script::default();
        assert_eq!(pump(&mut l, &s, 6, false, &mut out), Step::CaughtUp);
        assert_eq!(out.got, frame(15, 10));
        assert_eq!(l.frames_skipped, 12);
    }

    /// An MPEG-1 layer III 128k/44.1k stereo frame (417 bytes) that borrows
    /// `mdb` bytes of bit reservoir, with recognisable main data.
    fn mp3_frame(mdb: u16, fill: u8) -> Vec<u8> {
        let mut f = vec![fill; 417];
        f[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x04]);
        f[4] = (mdb >> 1) as u8;
        f[5] = ((mdb & 1) << 7) as u8 | 0x55;
        for b in &mut f[6..36] {
            *b = 0xA5;
        }
        f
    }

    #[test]
    fn an_mp3_joiner_gets_a_lead_in_before_its_first_frame_and_again_after_a_skip() {
        let (s, mut w) = stream(&["-frame-filter", "mp3", "-source-buffer", "32"]);
        s.begin_session(0, Vec::new());
        for n in 0..10u8 {
            w.publish(&mp3_frame(300, n));
        }
        // A joiner at frame 8: frames 6 and 7 (whole) and silenced frames
        // before them carry frame 8's reservoir.
        let mut l = listener(&s, 8, b"");
        let mut out = Script::default();
        assert_eq!(pump(&mut l, &s, 1, false, &mut out), Step::CaughtUp);
        assert!(
            out.got.len() > 4 * 417,
            "no lead-in: {} bytes",
            out.got.len()
        );
        assert_eq!(out.got.len() % 417, 0, "whole frames");
        // ... silenced frames, 6, 7 (whole), then 8 and 9.
        let at = |k: usize| &out.got[out.got.len() - k * 417..out.got.len() - (k - 1) * 417];
        assert_eq!(at(4), &mp3_frame(300, 6)[..], "frame 6 whole");
        assert_eq!(at(3), &mp3_frame(300, 7)[..], "frame 7 whole");
        assert_ne!(
            &out.got[..417],
            &mp3_frame(300, 5)[..],
            "the first is silenced"
        );
        assert_eq!(&out.got[out.got.len() - 417..], &mp3_frame(300, 9)[..]);
        // Lapped: the skip is followed by a new lead-in.
        for n in 10..60u8 {
            w.publish(&mp3_frame(300, n));
        }
        let before = out.got.len();
        assert_eq!(pump(&mut l, &s, 1, false, &mut out), Step::CaughtUp);
        assert!(l.frames_skipped > 0);
        let after = &out.got[before..];
        assert!(after.len() > 417, "a lead-in after the skip");
        assert_eq!(&after[after.len() - 417..], &mp3_frame(300, 59)[..]);
    }

    #[test]
    fn a_burst_start_sends_the_recent_frames_at_once() {
        let (s, mut w) = stream(&["-frame-bytes", "100", "-source-buffer", "64"]);
        s.begin_session(0, Vec::new());
        for n in 0..40 {
            w.publish(&frame(n, 100));
        }
        let start = s.start_frame_with_burst(1000);
        assert_eq!(start, 30, "the newest 10 frames of 100 bytes");
        let mut l = listener(&s, start, b"HTTP/1.0 200 OK\r\n\r\n");
        let mut out = Script::default();
        assert_eq!(pump(&mut l, &s, 1, false, &mut out), Step::CaughtUp);
        assert_eq!(out.calls, 1, "head and burst in one send");
        assert_eq!(out.got.len(), 19 + 1000);
    }

    #[test]
    fn ogg_listeners_get_a_new_logical_streams_header_before_its_first_page() {
        let (s, mut w) = stream(&["-frame-filter", "ogg", "-frame-bytes", "10"]);
        s.begin_session(0, Vec::new());
        s.set_header(0, b"H1".to_vec());
        w.publish(&frame(0, 10));
        let mut l = listener(&s, 0, b"");
        let mut out = Script::default();
        assert_eq!(pump(&mut l, &s, 1, false, &mut out), Step::CaughtUp);
        s.set_header(1, b"H2".to_vec());
        w.publish(&frame(1, 10));
        assert_eq!(pump(&mut l, &s, 1, false, &mut out), Step::CaughtUp);
        let mut want = b"H1".to_vec();
        want.extend(frame(0, 10));
        want.extend(b"H2");
        want.extend(frame(1, 10));
        assert_eq!(out.got, want);
    }
}

#[cfg(test)]
mod stress {
    //! The listener against a writer that laps it, sockets that take any
    //! number of bytes, and skips: the bytes that come out are whole frames.
    use super::*;
    use crate::config::Command;
    use crate::ring::RingWriter;
    use crate::stream::SourceState;
    use proptest::prelude::*;

    struct Room {
        got: Vec<u8>,
        plan: Vec<usize>,
        at: usize,
    }

    impl Transport for Room {
        unsafe fn send(&mut self, iov: &[IoSlice]) -> SendResult {
            let room = self.plan[self.at % self.plan.len()];
            self.at += 1;
            if room == 0 {
                return SendResult::WouldBlock;
            }
            let mut left = room;
            let mut n = 0;
            for v in iov {
                let take = v.iov_len.min(left);
                // SAFETY: valid slices (the contract under test).
                let s = unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, take) };
                self.got.extend_from_slice(s);
                n += take;
                left -= take;
                if left == 0 {
                    break;
                }
            }
            SendResult::Sent(n)
        }
    }

    const F: usize = 16;

    fn frame(n: u64) -> Vec<u8> {
        let mut f = n.to_be_bytes().to_vec();
        f.extend_from_slice(&(!n).to_be_bytes());
        f
    }

    /// Split a server's WebSocket output into message payloads.
    fn ws_messages(mut b: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while b.len() >= 2 {
            assert_eq!(b[0], 0x82, "a final binary message");
            let (len, at) = match b[1] {
                126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            if b.len() < at + len {
                break;
            }
            out.push(b[at..at + len].to_vec());
            b = &b[at + len..];
        }
        out
    }

    fn running_stream() -> (Arc<Stream>, RingWriter) {
        let args: Vec<std::ffi::OsString> = ["-path", "/dev/null", "-frame-bytes", "16"]
            .iter()
            .map(|s| s.into())
            .collect();
        let Command::Run(mut c) = crate::config::parse_args(args, false).unwrap() else {
            panic!()
        };
        let s = Arc::new(Stream::new(c.streams.remove(0), 1).unwrap());
        s.set_state(SourceState::Running);
        let w = RingWriter::new(s.ring.clone());
        (s, w)
    }

    /// Send until caught up (a socket with room for everything).
    fn drain(l: &mut Listener, s: &Stream, out: &mut Room, scratch: &mut SendScratch) {
        for _ in 0..16 {
            let mut ctx = SendCtx {
                stream: s,
                stats: &s.client_stats[0],
                guard: 1,
                copy_all: false,
                scratch: &mut *scratch,
            };
            match l.try_send(&mut ctx, out) {
                Step::Progress => continue,
                Step::CaughtUp => return,
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_listener_moved_to_another_stream_gets_its_title_next() {
        let (home, mut hw) = running_stream();
        let (other, mut ow) = running_stream();
        home.titles.set(crate::metadata::Title::new("Home", None));
        other
            .titles
            .set(crate::metadata::Title::new("Fallback", None));
        let fd = sys::dup(0).unwrap_or_else(|_| sys::dup(1).unwrap());
        let mut l = Listener::new(&home, fd, "127.0.0.1:9".parse().unwrap(), 0, Vec::new());
        l.enable_icy(F);
        let mut out = Room {
            got: Vec::new(),
            plan: vec![1 << 20],
            at: 0,
        };
        let mut scratch = SendScratch::new();
        for n in 0..3 {
            hw.publish(&frame(n));
        }
        drain(&mut l, &home, &mut out, &mut scratch);
        l.retarget(&other);
        for n in 100..103 {
            ow.publish(&frame(n));
        }
        drain(&mut l, &other, &mut out, &mut scratch);
        let mut strip = crate::metadata::IcyStripper::new(F);
        let mut audio = Vec::new();
        let titles: Vec<String> = strip
            .push(&out.got, &mut audio)
            .into_iter()
            .map(|t| t.title)
            .collect();
        assert_eq!(titles, ["Home", "Fallback"]);
    }

    #[test]
    fn a_websocket_listener_moved_to_another_stream_stays_websocket() {
        let (home, mut hw) = running_stream();
        let (other, mut ow) = running_stream();
        let fd = sys::dup(0).unwrap_or_else(|_| sys::dup(1).unwrap());
        let mut l = Listener::new(&home, fd, "127.0.0.1:9".parse().unwrap(), 0, Vec::new());
        l.enable_websocket();
        let mut out = Room {
            got: Vec::new(),
            plan: vec![1 << 20],
            at: 0,
        };
        let mut scratch = SendScratch::new();
        for n in 0..2 {
            hw.publish(&frame(n));
        }
        drain(&mut l, &home, &mut out, &mut scratch);
        l.retarget(&other);
        assert!(l.websocket());
        for n in 100..102 {
            ow.publish(&frame(n));
        }
        drain(&mut l, &other, &mut out, &mut scratch);
        let messages = ws_messages(&out.got);
        assert!(messages.iter().all(|m| m.len() == F), "{messages:?}");
        let numbers: Vec<u64> = messages
            .iter()
            .map(|m| u64::from_be_bytes(m[..8].try_into().unwrap()))
            .collect();
        assert_eq!(numbers, [0, 1, 100, 101]);
        assert_eq!(
            messages.iter().map(|m| m.len() + 2).sum::<usize>(),
            out.got.len(),
            "nothing but whole messages"
        );
    }

    proptest! {
        #[test]
        fn icy_blocks_sit_every_metaint_audio_bytes_and_audio_is_whole_frames(
            plan in proptest::collection::vec(0usize..40, 1..20),
            bursts in proptest::collection::vec(0u64..12, 1..40),
            metaint in 1usize..50,
            titles in proptest::collection::vec(proptest::option::of("[a-z]{1,20}"), 1..40),
        ) {
            let args: Vec<std::ffi::OsString> = ["-path", "/dev/null", "-frame-bytes", "16", "-source-buffer", "64"]
                .iter().map(|s| s.into()).collect();
            let Command::Run(mut c) = crate::config::parse_args(args, false).unwrap() else { panic!() };
            let s = Arc::new(Stream::new(c.streams.remove(0), 1).unwrap());
            s.set_state(SourceState::Running);
            let mut w = RingWriter::new(s.ring.clone());
            let fd = sys::dup(0).unwrap_or_else(|_| sys::dup(1).unwrap());
            let mut l = Listener::new(&s, fd, "127.0.0.1:9".parse().unwrap(), 0, b"H".to_vec());
            l.enable_icy(metaint);
            let mut out = Room { got: Vec::new(), plan, at: 0 };
            let mut scratch = SendScratch::new();
            let mut published = 0u64;
            let mut posted = vec![String::new()];
            for (i, b) in bursts.iter().enumerate() {
                if let Some(Some(t)) = titles.get(i) {
                    s.titles.set(crate::metadata::Title::new(t, None));
                    posted.push(t.clone());
                }
                for _ in 0..*b {
                    w.publish(&frame(published));
                    published += 1;
                }
                for _ in 0..4 {
                    let mut ctx = SendCtx { stream: &s, stats: &s.client_stats[0], guard: 1, copy_all: false, scratch: &mut scratch };
                    match l.try_send(&mut ctx, &mut out) {
                        Step::Progress => continue,
                        Step::Blocked => { l.unblock(); break }
                        Step::Finished(e) => prop_assert!(false, "ended {e:?}"),
                        Step::CaughtUp => break,
                    }
                }
            }
            if out.got.is_empty() {
                // A socket that never had room.
                return Ok(());
            }
            prop_assert_eq!(out.got.first(), Some(&b'H'));
            let mut strip = crate::metadata::IcyStripper::new(metaint);
            let mut audio = Vec::new();
            let seen = strip.push(&out.got[1..], &mut audio);
            let mut last = None;
            for chunk in audio.chunks_exact(F) {
                let n = u64::from_be_bytes(chunk[..8].try_into().unwrap());
                prop_assert_eq!(chunk.to_vec(), frame(n), "a torn or misaligned frame");
                if let Some(p) = last { prop_assert!(n > p); }
                last = Some(n);
            }
            // Every title seen was posted, in order.
            let mut at = 0;
            for t in seen {
                let pos = posted[at..].iter().position(|p| *p == t.title);
                prop_assert!(pos.is_some(), "title {:?} was never posted", t.title);
                at += pos.unwrap();
            }
        }

        #[test]
        fn websocket_listeners_get_one_whole_frame_per_message(
            plan in proptest::collection::vec(0usize..40, 1..20),
            bursts in proptest::collection::vec(0u64..12, 1..40),
        ) {
            let args: Vec<std::ffi::OsString> = ["-path", "/dev/null", "-frame-bytes", "16", "-source-buffer", "64"]
                .iter().map(|s| s.into()).collect();
            let Command::Run(mut c) = crate::config::parse_args(args, false).unwrap() else { panic!() };
            let s = Arc::new(Stream::new(c.streams.remove(0), 1).unwrap());
            s.set_state(SourceState::Running);
            let mut w = RingWriter::new(s.ring.clone());
            let fd = sys::dup(0).unwrap_or_else(|_| sys::dup(1).unwrap());
            let mut l = Listener::new(&s, fd, "127.0.0.1:9".parse().unwrap(), 0, Vec::new());
            l.enable_websocket();
            let mut out = Room { got: Vec::new(), plan, at: 0 };
            let mut scratch = SendScratch::new();
            let mut published = 0u64;
            for b in bursts {
                for _ in 0..b {
                    w.publish(&frame(published));
                    published += 1;
                }
                for _ in 0..4 {
                    let mut ctx = SendCtx { stream: &s, stats: &s.client_stats[0], guard: 1, copy_all: false, scratch: &mut scratch };
                    match l.try_send(&mut ctx, &mut out) {
                        Step::Progress => continue,
                        Step::Blocked => { l.unblock(); break }
                        Step::Finished(e) => prop_assert!(false, "ended {e:?}"),
                        Step::CaughtUp => break,
                    }
                }
            }
            let mut last = None;
            for m in ws_messages(&out.got) {
                prop_assert_eq!(m.len(), F);
                let n = u64::from_be_bytes(m[..8].try_into().unwrap());
                prop_assert_eq!(m, frame(n));
                if let Some(p) = last { prop_assert!(n > p); }
                last = Some(n);
            }
        }

        #[test]
        fn output_is_whole_frames(
            plan in proptest::collection::vec(0usize..40, 1..20),
            bursts in proptest::collection::vec(0u64..12, 1..60),
            guard in 1u64..4,
        ) {
            let args: Vec<std::ffi::OsString> = ["-path", "/dev/null", "-frame-bytes", "16", "-source-buffer", "8"]
                .iter().map(|s| s.into()).collect();
            let Command::Run(mut c) = crate::config::parse_args(args, false).unwrap() else { panic!() };
            let s = Arc::new(Stream::new(c.streams.remove(0), 1).unwrap());
            s.set_state(SourceState::Running);
            let mut w = RingWriter::new(s.ring.clone());
            let fd = sys::dup(0).unwrap_or_else(|_| sys::dup(1).unwrap());
            let mut l = Listener::new(&s, fd, "127.0.0.1:9".parse().unwrap(), 0, Vec::new());
            let mut out = Room { got: Vec::new(), plan, at: 0 };
            let mut scratch = SendScratch::new();
            let mut published = 0u64;
            for b in bursts {
                for _ in 0..b {
                    w.publish(&frame(published));
                    published += 1;
                }
                for _ in 0..4 {
                    let mut ctx = SendCtx { stream: &s, stats: &s.client_stats[0], guard, copy_all: false, scratch: &mut scratch };
                    match l.try_send(&mut ctx, &mut out) {
                        Step::Progress => continue,
                        Step::Blocked => { l.unblock(); break }
                        Step::Finished(e) => prop_assert!(false, "ended {e:?}"),
                        Step::CaughtUp => break,
                    }
                }
            }
            // Every complete 16 bytes is a whole frame, in increasing order.
            let mut last = None;
            for chunk in out.got.chunks_exact(F) {
                let n = u64::from_be_bytes(chunk[..8].try_into().unwrap());
                prop_assert_eq!(chunk.to_vec(), frame(n), "a torn or misaligned frame");
                if let Some(p) = last { prop_assert!(n > p, "frames out of order: {} after {}", n, p); }
                last = Some(n);
            }
        }
    }
}
