//! The delivery engine of one shard: its listener table, grouped by stream,
//! and the passes that send to them.
//!
//! After its request, a listener is a compact record ([`Listener`]) in the
//! shard's table. When a stream moves (its source published frames, or its
//! state changed), one delivery pass walks that stream's records and makes
//! one vectored `sendmsg` each, straight from the ring slots. There is no
//! task, waker or pending read per listener: a listener whose socket is full
//! waits in the shard's readiness set ([`Readiness`], edge-triggered epoll)
//! and is sent to again when the kernel says it has room; a listener that
//! goes away is noticed by its next send, or — on a quiet stream — by a
//! hang-up event from the same set.
//!
//! # When a shard sends
//!
//! - **Ring first.** Whatever the gathering, a stream is delivered as soon
//!   as a quarter of its ring is pending since its last pass, so the writer
//!   can never lap a listener that keeps up.
//! - **Explicit `-flush-interval D`**: frames gather for up to `D` after the
//!   first one (0 = every frame at once).
//! - **Adaptive (the default)**: the window follows the shard's *busy
//!   fraction* — the CPU time its thread used over the last
//!   [`LOAD_INTERVAL`], divided by that interval. See [`next_window`]: an
//!   idle or lightly loaded shard sends every frame at once (sub-millisecond
//!   latency); a loaded one doubles its window until it is under
//!   [`BUSY_HIGH`] (more frames per send, far less CPU per byte), up to
//!   [`MAX_WINDOW`], and halves it again when the load goes.
//!
//! # The kernel's queue
//!
//! Each listener socket's unsent queue is bounded (`TCP_NOTSENT_LOWAT`, see
//! [`Stream::send_queue_bound`]): a listener that stops reading meets a full
//! queue within a fraction of the ring and is then skipped forward by whole
//! frames, never served audio older than the ring holds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::listener::{
    End, Listener, ListenerRow, SendCtx, SendScratch, Socket, Step, Wire, WsInput,
};
use crate::readiness::Readiness;
use crate::shared::ServerShared;
use crate::stream::{SourceState, Stream};
use crate::sys::{self, EpollEvent, EV_ERR, EV_HUP, EV_IN, EV_OUT, EV_RDHUP};

/// How often the busy fraction is measured and the window adapted.
pub const LOAD_INTERVAL: Duration = Duration::from_millis(250);
/// Above this busy fraction the adaptive window grows.
pub const BUSY_HIGH: f64 = 0.12;
/// Below this busy fraction the adaptive window shrinks.
pub const BUSY_LOW: f64 = 0.03;
/// The adaptive window's bound.
pub const MAX_WINDOW: Duration = Duration::from_millis(500);
/// The smallest non-zero adaptive window.
const MIN_WINDOW: Duration = Duration::from_millis(4);
/// A stream delivers at once when this share of its ring is pending.
const RING_FRACTION: u64 = 4;
/// ... or when it brought this many bytes since its last pass (a full-sized
/// send is ready; waiting longer buys nothing).
const ENOUGH_BYTES: u64 = 64 * 1024;
/// Sends per listener per pass before the next listener's turn.
const SENDS_PER_PASS: usize = 4;
/// How often a shard looks at its streams' fallbacks.
const FALLBACK_CHECK: Duration = Duration::from_millis(100);
/// Joins and ends after which a quiet shard gives freed memory back.
const TRIM_AFTER: u64 = 256;
/// How long it must have been quiet.
const TRIM_QUIET: Duration = Duration::from_secs(1);
/// Bytes a listener may send us after its request before it is dropped.
const MAX_EXTRA_INPUT: u32 = 64 * 1024;

/// How a shard decides when to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// The window follows the shard's load ([`next_window`]).
    Adaptive,
    /// Gather for this long after the first pending frame (0: never).
    Fixed(Duration),
}

/// The adaptive rule: the next gathering window, from the current one and
/// the shard's busy fraction over the last interval.
///
/// Busy above [`BUSY_HIGH`]: double the window (from [`MIN_WINDOW`]), up to
/// `bound`. Busy below [`BUSY_LOW`]: halve it (to zero below
/// [`MIN_WINDOW`]). In between: keep it. The band is wide (4×) so that a
/// doubling, which at most halves the work per byte, cannot push the load
/// from above the band to below it: the window settles instead of
/// oscillating.
pub fn next_window(current: Duration, busy: f64, bound: Duration) -> Duration {
    if busy > BUSY_HIGH {
        (current * 2).max(MIN_WINDOW).min(bound)
    } else if busy < BUSY_LOW {
        let half = current / 2;
        if half < MIN_WINDOW {
            Duration::ZERO
        } else {
            half
        }
    } else {
        current
    }
}

/// The busy fraction and the window it gives.
#[derive(Debug)]
struct Load {
    /// Thread CPU time and wall time at the start of the interval.
    cpu_at: Duration,
    wall_at: Instant,
    /// The shard's `status_cpu_us` at the start of the interval.
    status_us_at: u64,
    /// The window now (adaptive mode).
    window: Duration,
    /// Busy fraction of the last interval.
    busy: f64,
}

/// One stream's listeners on this shard.
struct Group {
    stream: Arc<Stream>,
    /// Table slots of its listeners.
    members: Vec<u32>,
    /// The ring's head at the last delivery pass.
    delivered_head: u64,
    /// The source's byte count at the last delivery pass.
    delivered_bytes: u64,
    /// The source's state at the last pass.
    last_state: SourceState,
    /// When the first frame not yet delivered was seen.
    pending_since: Option<Instant>,
    /// A listener had more to send than one turn: deliver again at once.
    behind: bool,
    /// Members whose home is another stream (they are on its fallback).
    away: usize,
}

/// A listener handed to the engine after its request.
#[derive(Debug)]
pub struct Joining {
    /// The stream it asked for (its id): the one it joins, or the mount
    /// whose fallback it joins.
    pub home: u64,
    /// Its socket.
    pub fd: OwnedFd,
    /// Its address.
    pub peer: SocketAddr,
    /// The first frame it gets.
    pub start: u64,
    /// The response head, sent first.
    pub head: Vec<u8>,
    /// How it speaks.
    pub wire: Wire,
}

/// The shard's listener table.
pub struct Engine {
    shard: usize,
    server: Arc<ServerShared>,
    /// Listener records; `None` is a free slot.
    slots: Vec<Option<Listener>>,
    /// Generation of each slot (bumped when freed), in event tokens, so an
    /// event for a listener that has gone cannot reach its successor.
    gens: Vec<u32>,
    free: Vec<u32>,
    groups: HashMap<u64, Group>,
    readiness: Readiness,
    scratch: SendScratch,
    events: Vec<EpollEvent>,
    flush: Flush,
    load: Load,
    /// Set when stopping: listeners end at their next frame boundary, all
    /// of them by this deadline.
    stop_by: Option<Instant>,
    /// Joins and ends since the allocator last gave freed memory back, and
    /// when the last one was.
    churn: u64,
    last_churn: Instant,
    /// When fallbacks are looked at next.
    next_fallback_check: Instant,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("shard", &self.shard)
            .field("listeners", &self.len())
            .finish_non_exhaustive()
    }
}

fn token(slot: u32, gen: u32) -> u64 {
    u64::from(slot) | (u64::from(gen) << 32)
}

impl Engine {
    /// The engine of shard `shard`.
    pub fn new(shard: usize, server: Arc<ServerShared>, flush: Flush) -> std::io::Result<Engine> {
        let readiness = Readiness::new(shard, server.bells.clone())?;
        Ok(Engine {
            shard,
            server,
            slots: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            groups: HashMap::new(),
            readiness,
            scratch: SendScratch::new(),
            events: Vec::new(),
            flush,
            load: Load {
                cpu_at: sys::thread_cpu_time(),
                wall_at: Instant::now(),
                status_us_at: 0,
                window: Duration::ZERO,
                busy: 0.0,
            },
            stop_by: None,
            churn: 0,
            last_churn: Instant::now(),
            next_fallback_check: Instant::now(),
        })
    }

    /// Listeners in the table.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// True when no listener is left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The gathering window in force now.
    pub fn window(&self) -> Duration {
        match self.flush {
            Flush::Adaptive => self.load.window,
            Flush::Fixed(d) => d,
        }
    }

    /// The longest window this engine may use (for socket queue bounds).
    fn max_window(&self) -> Duration {
        match self.flush {
            Flush::Adaptive => MAX_WINDOW,
            Flush::Fixed(d) => d,
        }
    }

    /// Take over a listener whose request was answered: bound its socket's
    /// queue, watch it, and send what is pending at once (the response head,
    /// the stream header, a burst). It listens to `stream`; it asked for
    /// `home` (the same, or the mount whose fallback `stream` is).
    pub fn join(&mut self, stream: &Arc<Stream>, j: Joining) {
        let Joining {
            home,
            fd,
            peer,
            start,
            head,
            wire,
        } = j;
        let bound = stream.send_queue_bound(self.max_window());
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        if let Err(e) = sys::set_notsent_lowat(raw, bound) {
            log::debug!("TCP_NOTSENT_LOWAT on a listener socket: {e}");
        }
        let mut listener = Listener::new(stream, fd, peer, start, head);
        listener.queue_bound = bound;
        listener.home_id = home;
        match wire {
            Wire::Http => {}
            Wire::Icy(metaint) => listener.enable_icy(metaint),
            Wire::WebSocket => listener.enable_websocket(),
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let gen = self.gens[slot as usize];
        listener.slot_gen = gen;
        if let Err(e) = self.readiness.watch(listener.fd(), token(slot, gen)) {
            log::warn!("cannot watch a listener socket: {e}");
        }
        self.slots[slot as usize] = Some(listener);
        self.add_to_group(slot, stream);
        self.note_churn();
        self.send(slot, stream.id);
    }

    /// Put the listener in `slot` into `stream`'s group (made if needed).
    fn add_to_group(&mut self, slot: u32, stream: &Arc<Stream>) {
        let group = self.groups.entry(stream.id).or_insert_with(|| Group {
            stream: stream.clone(),
            members: Vec::new(),
            delivered_head: stream.ring.head(),
            delivered_bytes: stream.source_stats.bytes_in.get(),
            last_state: stream.state(),
            pending_since: None,
            behind: false,
            away: 0,
        });
        if let Some(l) = self.slots[slot as usize].as_mut() {
            l.member_pos = group.members.len() as u32;
            if l.home_id != stream.id {
                group.away += 1;
            }
        }
        group.members.push(slot);
    }

    /// Take the listener in `slot` out of its group (dropped when empty);
    /// returns the group's stream.
    fn remove_from_group(&mut self, slot: u32) -> Option<Arc<Stream>> {
        let (stream_id, pos, away) = {
            let l = self.slots[slot as usize].as_ref()?;
            (l.stream_id, l.member_pos as usize, l.home_id != l.stream_id)
        };
        let g = self.groups.get_mut(&stream_id)?;
        if g.members.get(pos) == Some(&slot) {
            g.members.swap_remove(pos);
            if let Some(&moved) = g.members.get(pos) {
                if let Some(m) = self.slots[moved as usize].as_mut() {
                    m.member_pos = pos as u32;
                }
            }
        }
        if away {
            g.away = g.away.saturating_sub(1);
        }
        let stream = g.stream.clone();
        if g.members.is_empty() {
            self.groups.remove(&stream_id);
        }
        Some(stream)
    }

    /// Fallbacks: listeners of a stream that stopped delivering move to the
    /// first stream of its fallback chain that delivers, and (with
    /// `fallback_override`) back home when it delivers again — each at a
    /// frame boundary, none disconnected. Looked at every
    /// [`FALLBACK_CHECK`].
    fn fallbacks(&mut self, now: Instant) {
        if now < self.next_fallback_check {
            return;
        }
        self.next_fallback_check = now + FALLBACK_CHECK;
        let concerned: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| g.away > 0 || g.stream.config().fallback.is_some())
            .map(|(id, _)| *id)
            .collect();
        if concerned.is_empty() {
            return;
        }
        let set = self.server.streams();
        let mut targets: HashMap<u64, Option<Arc<Stream>>> = HashMap::new();
        let mut moves: Vec<(u32, Arc<Stream>)> = Vec::new();
        for id in concerned {
            let Some(g) = self.groups.get(&id) else {
                continue;
            };
            let serving = g.stream.serving();
            for &slot in &g.members {
                let Some(l) = self.slots[slot as usize].as_ref() else {
                    continue;
                };
                let Some(home) = set.by_id(l.home_id) else {
                    continue;
                };
                let desired = targets
                    .entry(home.id)
                    .or_insert_with(|| set.target_for(home))
                    .clone();
                let Some(desired) = desired else { continue };
                if desired.id == l.stream_id || !l.at_boundary() {
                    continue;
                }
                let back_home = desired.id == home.id && home.config().fallback_override;
                if !serving || back_home {
                    moves.push((slot, desired));
                }
            }
        }
        for (slot, to) in moves {
            self.move_listener(slot, &to);
        }
    }

    /// Move a listener to `to` (see [`Engine::fallbacks`]).
    fn move_listener(&mut self, slot: u32, to: &Arc<Stream>) {
        let Some(from) = self.remove_from_group(slot) else {
            return;
        };
        from.client_left();
        from.client_stats[self.shard].clients_ended.inc();
        to.join_moved();
        to.client_stats[self.shard].clients_total.inc();
        self.server.shard_stats[self.shard].fallback_moves.inc();
        if let Some(l) = self.slots[slot as usize].as_mut() {
            l.retarget(to);
            log::info!(
                "client {} moved stream={} to={}",
                l.peer,
                from.name,
                to.name
            );
        }
        self.add_to_group(slot, to);
        self.send(slot, to.id);
    }

    /// Do what is due: readiness events, deliveries, the load measure, a
    /// snapshot for `/status/clients`. Returns when to call again at the
    /// latest (`None`: only when woken).
    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        self.measure_load(now);
        if self.readiness.take_pending() {
            let mut events = std::mem::take(&mut self.events);
            self.readiness.drain(&mut events);
            for ev in events.drain(..) {
                self.event(ev);
            }
            self.events = events;
        }
        let mut next: Option<Instant> = None;
        let ids: Vec<u64> = self.groups.keys().copied().collect();
        for id in ids {
            if let Some(at) = self.consider(id, now) {
                next = Some(next.map_or(at, |n: Instant| n.min(at)));
            }
        }
        self.fallbacks(now);
        self.answer_snapshot();
        self.maybe_trim(now);
        if let Some(by) = self.stop_by {
            self.end_at_boundaries(now >= by);
        }
        next
    }

    /// Decide whether stream `id` is delivered now; if it waits, when.
    fn consider(&mut self, id: u64, now: Instant) -> Option<Instant> {
        let window = self.window();
        let group = self.groups.get_mut(&id)?;
        let stream = group.stream.clone();
        let head = stream.ring.head();
        let state = stream.state();
        if head == group.delivered_head && state == group.last_state && !group.behind {
            return None;
        }
        let pending = head.saturating_sub(group.delivered_head);
        let bytes = stream
            .source_stats
            .bytes_in
            .get()
            .saturating_sub(group.delivered_bytes);
        let due = state != group.last_state
            || group.behind
            || window.is_zero()
            || pending * RING_FRACTION >= stream.ring.capacity()
            || bytes >= ENOUGH_BYTES
            || self.stop_by.is_some();
        if !due {
            let since = *group.pending_since.get_or_insert(now);
            let at = since + window;
            if now < at {
                return Some(at);
            }
        }
        group.delivered_head = head;
        group.delivered_bytes = stream.source_stats.bytes_in.get();
        group.last_state = state;
        group.pending_since = None;
        group.behind = false;
        self.deliver(id);
        self.groups
            .get(&id)
            .is_some_and(|g| g.behind)
            .then_some(now)
    }

    /// One delivery pass over stream `id`'s listeners.
    fn deliver(&mut self, id: u64) {
        let mut i = 0;
        loop {
            let Some(group) = self.groups.get(&id) else {
                return;
            };
            let Some(&slot) = group.members.get(i) else {
                return;
            };
            let blocked = self.slots[slot as usize]
                .as_ref()
                .is_some_and(|l| l.blocked());
            let ended = if blocked { false } else { self.send(slot, id) };
            // An ended listener's place was taken by the group's last one.
            if !ended {
                i += 1;
            }
        }
    }

    /// Send to one listener until it is caught up, blocked or done. Returns
    /// true when its response ended (it has left the table).
    fn send(&mut self, slot: u32, stream_id: u64) -> bool {
        let Some(group) = self.groups.get(&stream_id) else {
            return false;
        };
        let stream = group.stream.clone();
        let (guard, copy_all) = stream.lap_guard();
        let stats = &stream.client_stats[self.shard];
        let Some(listener) = self.slots[slot as usize].as_mut() else {
            return false;
        };
        let mut out = Socket(listener.fd());
        let mut step = Step::Progress;
        for _ in 0..SENDS_PER_PASS {
            let mut ctx = SendCtx {
                stream: &stream,
                stats,
                guard,
                copy_all,
                scratch: &mut self.scratch,
            };
            step = listener.try_send(&mut ctx, &mut out);
            if step != Step::Progress {
                break;
            }
        }
        let end = match step {
            Step::Finished(end) => Some(end),
            Step::CaughtUp if stream.ended() && stream.ring.head() <= listener.next => {
                Some(End::StreamEnded)
            }
            Step::CaughtUp | Step::Blocked if self.stop_by.is_some() && listener.at_boundary() => {
                Some(End::Stopping)
            }
            // More is pending than one turn sends: the next tick goes on.
            Step::Progress => {
                if let Some(g) = self.groups.get_mut(&stream_id) {
                    g.behind = true;
                }
                None
            }
            _ => None,
        };
        match end {
            Some(e) => {
                self.end(slot, e);
                true
            }
            None => false,
        }
    }

    /// A readiness event for the listener with `token`.
    fn event(&mut self, ev: EpollEvent) {
        let slot = (ev.token() & 0xFFFF_FFFF) as u32;
        let gen = (ev.token() >> 32) as u32;
        let Some(listener) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if listener.slot_gen != gen {
            return;
        }
        let flags = ev.events();
        if flags & (EV_HUP | EV_ERR) != 0 {
            self.end(slot, End::Gone);
            return;
        }
        if flags & (EV_IN | EV_RDHUP) != 0 {
            // A listener has nothing to say (a WebSocket one pings and
            // closes); read it to notice the end.
            let mut junk = [0u8; 2048];
            let mut answer = false;
            loop {
                match sys::recv_nonblocking(listener.fd(), &mut junk) {
                    Ok(0) => {
                        self.end(slot, End::Gone);
                        return;
                    }
                    Ok(n) if listener.websocket() => match listener.ws_input(&junk[..n]) {
                        WsInput::Fine { data } => {
                            answer = true;
                            if listener.note_input(data) > MAX_EXTRA_INPUT {
                                self.server.shard_stats[self.shard].ws_protocol_errors.inc();
                                self.end(slot, End::UnexpectedInput);
                                return;
                            }
                        }
                        WsInput::Close(code) => {
                            if code != 1000 {
                                self.server.shard_stats[self.shard].ws_protocol_errors.inc();
                            }
                            if listener.at_boundary() {
                                // Best effort: the close goes out now or never.
                                let close = crate::websocket::close_frame(code);
                                let iov = [sys::io_slice(close.as_ptr(), close.len())];
                                // SAFETY: `close` lives through the call.
                                let _ = unsafe { sys::send_vectored(listener.fd(), &iov) };
                            }
                            self.end(slot, End::Gone);
                            return;
                        }
                    },
                    Ok(n) => {
                        if listener.note_input(n) > MAX_EXTRA_INPUT {
                            self.end(slot, End::UnexpectedInput);
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        self.end(slot, End::Gone);
                        return;
                    }
                }
            }
            if answer && !listener.blocked() {
                // A pong is queued: send it (and what else is due).
                let stream_id = listener.stream_id;
                self.send(slot, stream_id);
                return;
            }
        }
        let Some(listener) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if flags & EV_OUT != 0 && listener.blocked() {
            listener.unblock();
            let stream_id = listener.stream_id;
            self.send(slot, stream_id);
        }
    }

    /// The one way out of the table: count, log, end the response cleanly
    /// (FIN after whole frames where there are any), close.
    fn end(&mut self, slot: u32, end: End) {
        let stream = self.remove_from_group(slot);
        let Some(listener) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.gens[slot as usize] = self.gens[slot as usize].wrapping_add(1);
        self.free.push(slot);
        self.note_churn();
        let shard_stats = &self.server.shard_stats[self.shard];
        shard_stats.clients_ended.inc();
        if let Some(stream) = &stream {
            let stats = &stream.client_stats[self.shard];
            stats.clients_ended.inc();
            match end {
                End::MaxBytes => stats.max_bytes_reached.inc(),
                End::Torn => {
                    stats.torn_disconnects.inc();
                    log::warn!(
                        "client disconnected: its frame was overwritten while being sent (torn)"
                    );
                }
                End::Gone | End::UnexpectedInput => stats.client_gone.inc(),
                End::StreamEnded | End::Stopping => {}
            }
            stream.client_left();
        }
        if self.server.clients.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.server.main_wake.signal();
        }
        if !matches!(end, End::Gone) {
            let _ = sys::shutdown_write(listener.fd());
        }
        log::info!(
            "client {} -- {:.3}s elapsed {} bytes {} frames + {} skipped reason={}",
            listener.peer,
            listener.connected_for().as_secs_f64(),
            listener.bytes_sent,
            listener.frames_sent,
            listener.frames_skipped,
            end.name(),
        );
        drop(listener);
    }

    /// Stopping: every listener ends at its next frame boundary; at
    /// `deadline`, all that are left.
    pub fn stop(&mut self, deadline: Instant) {
        self.stop_by = Some(deadline);
        self.end_at_boundaries(false);
    }

    fn end_at_boundaries(&mut self, all: bool) {
        for slot in 0..self.slots.len() as u32 {
            let at_boundary = self.slots[slot as usize].as_ref().map(|l| l.at_boundary());
            match at_boundary {
                Some(true) => self.end(slot, End::Stopping),
                Some(false) if all => self.end(slot, End::Stopping),
                _ => {}
            }
        }
    }

    /// After a burst of joins or ends (a join storm, a mass disconnect), once
    /// it has been quiet for a second, give the memory the request phase
    /// used back to the kernel: freed request tasks and buffers would
    /// otherwise stay in the shard's malloc arena as resident memory.
    fn maybe_trim(&mut self, now: Instant) {
        if self.churn >= TRIM_AFTER && now.saturating_duration_since(self.last_churn) >= TRIM_QUIET
        {
            self.churn = 0;
            sys::release_free_memory();
        }
    }

    fn note_churn(&mut self) {
        self.churn += 1;
        self.last_churn = Instant::now();
    }

    /// Measure the busy fraction once per [`LOAD_INTERVAL`] and adapt.
    fn measure_load(&mut self, now: Instant) {
        let wall = now.saturating_duration_since(self.load.wall_at);
        if wall < LOAD_INTERVAL {
            return;
        }
        let cpu = sys::thread_cpu_time();
        // Status pages and listener rows are not delivery work: a poller
        // must not widen the window (and the latency) of every listener.
        let status_us = self.server.shard_stats[self.shard].status_cpu_us.get();
        let aside = Duration::from_micros(status_us.saturating_sub(self.load.status_us_at));
        let busy = cpu
            .saturating_sub(self.load.cpu_at)
            .saturating_sub(aside)
            .as_secs_f64()
            / wall.as_secs_f64();
        self.load.cpu_at = cpu;
        self.load.status_us_at = status_us;
        self.load.wall_at = now;
        self.load.busy = busy;
        self.load.window = next_window(self.load.window, busy, MAX_WINDOW);
        let st = &self.server.shard_stats[self.shard];
        st.busy_permille.set((busy * 1000.0).round() as u64);
        st.gather_window_us.set(self.window().as_micros() as u64);
    }

    /// Fill this shard's snapshot slot if a `/status/clients` request asked.
    fn answer_snapshot(&mut self) {
        let slot = &self.server.snapshots[self.shard];
        let wanted = slot.wanted.load(Ordering::Acquire);
        if wanted <= slot.done_generation() {
            slot.expire(Duration::from_secs(5));
            return;
        }
        let began = sys::thread_cpu_time();
        let rows = self.rows();
        slot.fill(wanted, rows);
        let st = &self.server.shard_stats[self.shard];
        st.status_cpu_us
            .add(sys::thread_cpu_time().saturating_sub(began).as_micros() as u64);
    }

    /// Every listener's row.
    pub fn rows(&self) -> Vec<ListenerRow> {
        let mut rows = Vec::with_capacity(self.len());
        for g in self.groups.values() {
            for &slot in &g.members {
                if let Some(l) = &self.slots[slot as usize] {
                    rows.push(l.row(&g.stream, self.shard));
                }
            }
        }
        rows
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for slot in 0..self.slots.len() as u32 {
            if self.slots[slot as usize].is_some() {
                self.end(slot, End::Stopping);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_idle_shard_sends_at_once() {
        assert_eq!(next_window(Duration::ZERO, 0.0, MAX_WINDOW), Duration::ZERO);
        assert_eq!(
            next_window(Duration::ZERO, 0.10, MAX_WINDOW),
            Duration::ZERO
        );
    }

    #[test]
    fn a_loaded_shard_doubles_its_window_up_to_the_bound() {
        let mut w = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..12 {
            w = next_window(w, 0.9, MAX_WINDOW);
            seen.push(w.as_millis());
        }
        assert_eq!(&seen[..4], &[4, 8, 16, 32]);
        assert_eq!(*seen.last().unwrap(), MAX_WINDOW.as_millis());
        assert!(seen.windows(2).all(|p| p[0] <= p[1]));
    }

    #[test]
    fn the_window_holds_inside_the_band_and_shrinks_to_zero_below_it() {
        let w = 64 * MS;
        assert_eq!(next_window(w, 0.05, MAX_WINDOW), w);
        assert_eq!(next_window(w, BUSY_HIGH, MAX_WINDOW), w);
        assert_eq!(next_window(w, 0.01, MAX_WINDOW), 32 * MS);
        let mut w = w;
        for _ in 0..6 {
            w = next_window(w, 0.0, MAX_WINDOW);
        }
        assert_eq!(w, Duration::ZERO);
    }

    #[test]
    fn a_shard_settles_instead_of_oscillating() {
        // A model load: sends per second fall as the window grows past the
        // frame interval (62.5 ms at 16 frames/s); busy is proportional.
        let busy_at = |w: Duration| {
            let frames_per_send = (w.as_secs_f64() * 16.0).max(1.0);
            0.9 / frames_per_send
        };
        let mut w = Duration::ZERO;
        let mut history = Vec::new();
        for _ in 0..40 {
            w = next_window(w, busy_at(w), MAX_WINDOW);
            history.push(w);
        }
        let tail = &history[30..];
        assert!(tail.iter().all(|x| *x == tail[0]), "{history:?}");
        assert!(busy_at(tail[0]) <= BUSY_HIGH, "{:?}", tail[0]);
    }

    // -----------------------------------------------------------------------
    // The table against real sockets (Unix socket pairs), no subprocess.
    // -----------------------------------------------------------------------

    use crate::config::Command;
    use crate::ring::RingWriter;
    use crate::sys::EventFd;
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;

    fn server() -> Arc<ServerShared> {
        Arc::new(ServerShared::new(
            1,
            Some(Duration::ZERO),
            0,
            false,
            Arc::new(EventFd::new().unwrap()),
        ))
    }

    fn stream(args: &[&str]) -> (Arc<Stream>, RingWriter) {
        let mut v: Vec<std::ffi::OsString> = vec!["-path".into(), "/dev/null".into()];
        v.extend(args.iter().map(|a| std::ffi::OsString::from(*a)));
        let Command::Run(mut c) = crate::config::parse_args(v, false).unwrap() else {
            panic!()
        };
        let s = Arc::new(Stream::new(c.streams.remove(0), 1).unwrap());
        let w = RingWriter::new(s.ring.clone());
        (s, w)
    }

    /// A connected pair: the engine's end (non-blocking) and the test's.
    fn pair() -> (OwnedFd, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // SAFETY: `a`'s descriptor is moved out of `a` (into_raw_fd) and
        // owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(a)) };
        (fd, b)
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    /// Tick until `cond` or 10 s.
    fn tick_until(e: &mut Engine, mut cond: impl FnMut(&Engine) -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            e.tick(Instant::now());
            if cond(e) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    fn join(e: &mut Engine, s: &Arc<Stream>, start: u64) -> UnixStream {
        let (fd, peer_end) = pair();
        s.try_join();
        e.server.clients.fetch_add(1, Ordering::AcqRel);
        e.join(
            s,
            Joining {
                home: s.id,
                fd,
                peer: peer(),
                start,
                head: b"HEAD\n".to_vec(),
                wire: Wire::Http,
            },
        );
        peer_end
    }

    #[test]
    fn a_listener_gets_the_head_then_frames_as_they_come() {
        let server = server();
        let mut e = Engine::new(0, server, Flush::Fixed(Duration::ZERO)).unwrap();
        let (s, mut w) = stream(&["-frame-bytes", "4"]);
        s.set_state(SourceState::Running);
        let mut c = join(&mut e, &s, 0);
        assert_eq!(e.len(), 1);
        let mut head = [0u8; 5];
        c.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HEAD\n");
        for n in 0..3u8 {
            w.publish(&[n; 4]);
        }
        e.tick(Instant::now());
        let mut body = [0u8; 12];
        c.read_exact(&mut body).unwrap();
        assert_eq!(body, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(s.client_stats[0].frames_out.get(), 3);
    }

    #[test]
    fn the_end_of_a_stream_ends_its_listeners_after_the_last_frame() {
        let server = server();
        let mut e = Engine::new(0, server.clone(), Flush::Fixed(Duration::ZERO)).unwrap();
        let (s, mut w) = stream(&["-frame-bytes", "4"]);
        s.set_state(SourceState::Running);
        let mut c = join(&mut e, &s, 0);
        w.publish(b"last");
        s.set_state(SourceState::Ended);
        assert!(tick_until(&mut e, |e| e.is_empty()));
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"HEAD\nlast", "whole frames, then the end");
        assert_eq!(server.shard_stats[0].clients_ended.get(), 1);
        assert_eq!(s.clients(), 0);
    }

    #[test]
    fn a_listener_that_hangs_up_on_a_quiet_stream_is_noticed() {
        let server = server();
        let mut e = Engine::new(0, server, Flush::Fixed(Duration::ZERO)).unwrap();
        let (s, _w) = stream(&["-frame-bytes", "4"]);
        s.set_state(SourceState::Running);
        let c = join(&mut e, &s, 0);
        drop(c);
        // No frame will come: only the readiness set can tell.
        assert!(tick_until(&mut e, |e| e.is_empty()), "hang-up not noticed");
        assert_eq!(s.client_stats[0].client_gone.get(), 1);
    }

    #[test]
    fn a_blocked_listener_resumes_when_its_socket_has_room() {
        let server = server();
        let mut e = Engine::new(0, server, Flush::Fixed(Duration::ZERO)).unwrap();
        let (s, mut w) = stream(&["-frame-bytes", "1000", "-source-buffer", "4096"]);
        s.set_state(SourceState::Running);
        let mut c = join(&mut e, &s, 0);
        // Publish far more than a socket pair buffers.
        let mut sent = 0u64;
        while s.client_stats[0].would_block.get() == 0 && sent < 4000 {
            w.publish(&(sent as u32).to_be_bytes().repeat(250));
            sent += 1;
            e.tick(Instant::now());
        }
        assert!(s.client_stats[0].would_block.get() > 0, "never blocked");
        // Drain the peer: the engine resumes on the readiness event and
        // delivers everything, in order, whole.
        c.set_nonblocking(true).unwrap();
        let mut bytes = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let until = Instant::now() + Duration::from_secs(20);
        let want = 5 + 1000 * sent as usize;
        while bytes.len() < want && Instant::now() < until {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
            e.tick(Instant::now());
        }
        let mut got = 0u64;
        for f in bytes[5..].chunks(1000) {
            let n = u32::from_be_bytes(f[..4].try_into().unwrap()) as u64;
            assert_eq!(
                f,
                &(n as u32).to_be_bytes().repeat(250)[..],
                "a whole frame"
            );
            assert!(n >= got, "in order");
            got = n + 1;
        }
        assert_eq!(got, sent);
    }

    #[test]
    fn stopping_ends_listeners_at_frame_boundaries() {
        let server = server();
        let mut e = Engine::new(0, server, Flush::Fixed(Duration::ZERO)).unwrap();
        let (s, mut w) = stream(&["-frame-bytes", "4"]);
        s.set_state(SourceState::Running);
        let mut c = join(&mut e, &s, 0);
        w.publish(b"abcd");
        e.tick(Instant::now());
        e.stop(Instant::now() + Duration::from_secs(1));
        assert!(tick_until(&mut e, |e| e.is_empty()));
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"HEAD\nabcd");
    }

    #[test]
    fn listener_rows_copy_every_listener() {
        let server = server();
        let mut e = Engine::new(0, server, Flush::Fixed(Duration::ZERO)).unwrap();
        let (s, _w) = stream(&["-frame-bytes", "4"]);
        let _a = join(&mut e, &s, 0);
        let _b = join(&mut e, &s, 0);
        let rows = e.rows();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.stream_id == s.id && r.shard == 0));
    }
}
