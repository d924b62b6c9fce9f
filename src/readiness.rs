//! Readiness for the listener table: one epoll set per shard, and a small
//! thread that wakes the shard when the set has events.
//!
//! glommio 0.9 offers readiness only through its own socket types (no poll
//! of a raw descriptor), and a glommio socket per listener would bring back
//! a task, a waker and a pending operation per listener. So each shard keeps
//! its listeners' sockets in one epoll set, registered once at join,
//! edge-triggered for "room in the send queue", "input" and "hang-up": a
//! healthy listener never produces an event (its sends never fill the queue,
//! it sends nothing), so the set costs nothing while delivery goes well.
//!
//! The shard never blocks in `epoll_wait`: it drains the set with a zero
//! timeout when told to. The telling is done by one thread per shard
//! (`shard-N-poll`) that sleeps in `epoll_wait` on an outer epoll holding the
//! listeners' set (one-shot) and a stop eventfd; when the set has events it
//! raises a flag and rings the shard's [`Bell`] (a glommio waker may be woken
//! from any thread). The shard re-arms the one-shot after draining, and the
//! kernel reports again at once if events came meanwhile, so none is lost.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::stream::Bell;
use crate::sys::{Epoll, EpollEvent, EventFd, EV_ET, EV_IN, EV_ONESHOT, EV_OUT, EV_RDHUP};

/// Token of the listeners' set in the outer epoll.
const TOKEN_SET: u64 = 1;
/// Token of the stop eventfd in the outer epoll.
const TOKEN_STOP: u64 = 2;
/// Events drained per `epoll_wait` call.
const BATCH: usize = 256;

/// What the poll thread and the shard share.
struct Shared {
    /// Holds the listeners' set (one-shot) and the stop eventfd.
    outer: Epoll,
    /// Wakes the poll thread to end it.
    stop: EventFd,
    /// Raised by the poll thread when the set has events; taken by the
    /// shard. Release/Acquire: the shard that takes it sees the events the
    /// kernel reported before (the kernel orders its own queue anyway; this
    /// only makes the flag itself reliable).
    pending: AtomicBool,
}

/// A shard's listener readiness set.
pub struct Readiness {
    /// The listeners' sockets.
    set: Epoll,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Drain buffer.
    batch: Vec<EpollEvent>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness").finish_non_exhaustive()
    }
}

impl Readiness {
    /// The set of shard `shard`, whose poll thread rings `bells[shard]`.
    pub fn new(shard: usize, bells: Arc<[Bell]>) -> io::Result<Readiness> {
        let set = Epoll::new()?;
        let outer = Epoll::new()?;
        let stop = EventFd::new()?;
        outer.add(set.raw(), EV_IN | EV_ONESHOT, TOKEN_SET)?;
        outer.add(stop.raw(), EV_IN, TOKEN_STOP)?;
        let shared = Arc::new(Shared {
            outer,
            stop,
            pending: AtomicBool::new(false),
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("shard-{shard}-poll"))
            .spawn(move || poll_thread(for_thread, bells, shard))?;
        Ok(Readiness {
            set,
            shared,
            thread: Some(thread),
            batch: vec![EpollEvent::EMPTY; BATCH],
        })
    }

    /// Watch a listener's socket (edge-triggered: room, input, hang-up).
    pub fn watch(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.set.add(fd, EV_OUT | EV_IN | EV_RDHUP | EV_ET, token)
    }

    /// True when the poll thread said the set has events (and clears that).
    pub fn take_pending(&self) -> bool {
        self.shared.pending.swap(false, Ordering::AcqRel)
    }

    /// Move every pending event into `out`, then re-arm the poll thread.
    pub fn drain(&mut self, out: &mut Vec<EpollEvent>) {
        loop {
            let n = match self.set.wait(&mut self.batch, 0) {
                Ok(n) => n,
                Err(e) => {
                    log::error!("epoll_wait on the listener set failed: {e}");
                    0
                }
            };
            out.extend_from_slice(&self.batch[..n]);
            if n < self.batch.len() {
                break;
            }
        }
        if let Err(e) = self
            .shared
            .outer
            .modify(self.set.raw(), EV_IN | EV_ONESHOT, TOKEN_SET)
        {
            log::error!("re-arming the listener set failed: {e}");
        }
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        self.shared.stop.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn poll_thread(shared: Arc<Shared>, bells: Arc<[Bell]>, shard: usize) {
    let mut events = [EpollEvent::EMPTY; 2];
    loop {
        let n = match shared.outer.wait(&mut events, -1) {
            Ok(n) => n,
            Err(e) => {
                log::error!("shard {shard}: readiness wait failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        for ev in &events[..n] {
            match ev.token() {
                TOKEN_STOP => return,
                _ => {
                    shared.pending.store(true, Ordering::Release);
                    if let Some(bell) = bells.get(shard) {
                        bell.ring();
                    }
                }
            }
        }
    }
}
