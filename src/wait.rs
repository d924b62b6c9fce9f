//! Wait sets: how a task on a shard waits for an event that another task on
//! the same shard announces (the shard stopping, a stream's next frame).
//!
//! The rule this module exists for: **a waiting task holds at most one clone
//! of its waker in a set, and none once its wait is over.** A task registers
//! when it is first polled and pending, re-registers only when it was woken
//! (the set gave its clone away) or its waker changed, and unregisters when
//! its wait future is dropped. So the number of waker clones a set holds is
//! bounded by the number of waits in progress, whatever the number of polls,
//! accepts, frames or blocked writes.
//!
//! Two bugs this replaces (issue 9): a `Vec<Waker>` that every poll pushed a
//! clone into and nothing removed until the shard stopped kept every finished
//! connection task's memory alive (~1 KB per connection, forever), and the
//! accept loop's clones, one per accept, overflowed glommio 0.9's 16-bit task
//! reference count after ~32K accepts (a panic in the shard thread).
//!
//! Single-threaded by design (`RefCell`, no atomics): both sides of a wait set
//! live on one shard's executor. Cross-thread wake-ups go through
//! [`crate::stream::Bell`].

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// One slot of a [`WaitSet`].
#[derive(Debug)]
enum Slot {
    /// Not in use; the index of the next free slot (or `usize::MAX`).
    Free(usize),
    /// Held by a registration: its waker, or `None` after a wake (the
    /// registration re-arms on its next poll).
    Held(Option<Waker>),
}

/// A set of tasks waiting for one kind of event on one shard.
#[derive(Debug)]
pub struct WaitSet {
    inner: RefCell<Inner>,
}

#[derive(Debug)]
struct Inner {
    slots: Vec<Slot>,
    /// Head of the free list (`usize::MAX`: none).
    free: usize,
    /// Registrations holding a slot.
    held: usize,
    /// Bumped by every [`WaitSet::wake_all`].
    generation: u64,
}

impl Default for WaitSet {
    fn default() -> Self {
        WaitSet::new()
    }
}

impl WaitSet {
    /// An empty set.
    pub fn new() -> WaitSet {
        WaitSet {
            inner: RefCell::new(Inner {
                slots: Vec::new(),
                free: usize::MAX,
                held: 0,
                generation: 0,
            }),
        }
    }

    /// Wake every registered task. Each gives up its waker clone (woken by
    /// value); a task that waits again re-registers when polled.
    pub fn wake_all(&self) {
        // Take the wakers out first: waking can run arbitrary code (glommio
        // only schedules, but keep the borrow short anyway).
        let mut woken = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            inner.generation += 1;
            for slot in inner.slots.iter_mut() {
                if let Slot::Held(w) = slot {
                    if let Some(w) = w.take() {
                        woken.push(w);
                    }
                }
            }
        }
        for w in woken {
            w.wake();
        }
    }

    /// Registrations in progress (tasks waiting now or about to re-arm).
    pub fn waiting(&self) -> usize {
        self.inner.borrow().held
    }

    /// Wakers the set holds right now (at most [`WaitSet::waiting`]).
    pub fn wakers_held(&self) -> usize {
        self.inner
            .borrow()
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Held(Some(_))))
            .count()
    }

    /// Times [`WaitSet::wake_all`] was called.
    pub fn generation(&self) -> u64 {
        self.inner.borrow().generation
    }

    fn register(&self, key: &mut Option<usize>, waker: &Waker) {
        let mut inner = self.inner.borrow_mut();
        match *key {
            Some(k) => {
                if let Some(Slot::Held(w)) = inner.slots.get_mut(k) {
                    match w {
                        Some(old) if old.will_wake(waker) => {}
                        // Replacing drops the old clone: still one held.
                        _ => *w = Some(waker.clone()),
                    }
                }
            }
            None => {
                let slot = Slot::Held(Some(waker.clone()));
                let k = if inner.free != usize::MAX {
                    let k = inner.free;
                    inner.free = match inner.slots[k] {
                        Slot::Free(next) => next,
                        Slot::Held(_) => usize::MAX,
                    };
                    inner.slots[k] = slot;
                    k
                } else {
                    inner.slots.push(slot);
                    inner.slots.len() - 1
                };
                inner.held += 1;
                *key = Some(k);
            }
        }
    }

    fn unregister(&self, key: usize) {
        // Drop the waker outside the borrow.
        let old = {
            let mut inner = self.inner.borrow_mut();
            let free = inner.free;
            let Some(slot) = inner.slots.get_mut(key) else {
                return;
            };
            let old = std::mem::replace(slot, Slot::Free(free));
            inner.free = key;
            inner.held -= 1;
            old
        };
        drop(old);
    }

    /// A future that resolves once `ready()` is true, re-checked each time
    /// the set is woken. It registers at most once and unregisters when it
    /// resolves or is dropped.
    pub fn wait_until<F: FnMut() -> bool>(&self, ready: F) -> Wait<'_, F> {
        Wait {
            set: self,
            ready,
            key: None,
        }
    }
}

/// See [`WaitSet::wait_until`].
#[must_use = "futures do nothing unless polled"]
pub struct Wait<'a, F: FnMut() -> bool> {
    set: &'a WaitSet,
    ready: F,
    key: Option<usize>,
}

// The future holds no self-references: moving it is fine.
impl<F: FnMut() -> bool> Unpin for Wait<'_, F> {}

impl<F: FnMut() -> bool> Future for Wait<'_, F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if (this.ready)() {
            if let Some(k) = this.key.take() {
                this.set.unregister(k);
            }
            return Poll::Ready(());
        }
        this.set.register(&mut this.key, cx.waker());
        // Checked again after registering: the event may have come between
        // the first check and the registration (not possible on one thread
        // today, but it keeps the future correct if that changes).
        if (this.ready)() {
            if let Some(k) = this.key.take() {
                this.set.unregister(k);
            }
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl<F: FnMut() -> bool> Drop for Wait<'_, F> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.set.unregister(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    /// A waker that counts its live clones and its wake-ups.
    struct Counting {
        wakes: AtomicUsize,
    }

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counting() -> (Arc<Counting>, Waker) {
        let c = Arc::new(Counting {
            wakes: AtomicUsize::new(0),
        });
        let w = Waker::from(c.clone());
        (c, w)
    }

    #[test]
    fn many_polls_hold_one_clone_and_drop_releases_it() {
        let set = WaitSet::new();
        let (c, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut wait = set.wait_until(|| false);
        for _ in 0..100_000 {
            assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
        }
        // The test's own Arc, its waker, and one clone in the set.
        assert_eq!(Arc::strong_count(&c), 3);
        assert_eq!(set.waiting(), 1);
        drop(wait);
        assert_eq!(Arc::strong_count(&c), 2);
        assert_eq!(set.waiting(), 0);
        assert_eq!(set.wakers_held(), 0);
    }

    #[test]
    fn a_wait_per_event_never_accumulates() {
        // The accept loop's pattern: a fresh wait for every accepted
        // connection, dropped when the accept wins the race.
        let set = WaitSet::new();
        let (c, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100_000 {
            let mut wait = set.wait_until(|| false);
            assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
        }
        assert_eq!(Arc::strong_count(&c), 2);
        assert_eq!(set.waiting(), 0);
    }

    #[test]
    fn wake_all_wakes_each_waiter_once_and_they_rearm() {
        let set = WaitSet::new();
        let flag = Cell::new(false);
        let (c1, w1) = counting();
        let (c2, w2) = counting();
        let mut a = set.wait_until(|| flag.get());
        let mut b = set.wait_until(|| flag.get());
        assert!(Pin::new(&mut a)
            .poll(&mut Context::from_waker(&w1))
            .is_pending());
        assert!(Pin::new(&mut b)
            .poll(&mut Context::from_waker(&w2))
            .is_pending());
        set.wake_all();
        assert_eq!(c1.wakes.load(Ordering::Relaxed), 1);
        assert_eq!(c2.wakes.load(Ordering::Relaxed), 1);
        assert_eq!(set.wakers_held(), 0);
        // Spurious wake: both re-arm with one clone each.
        assert!(Pin::new(&mut a)
            .poll(&mut Context::from_waker(&w1))
            .is_pending());
        assert!(Pin::new(&mut b)
            .poll(&mut Context::from_waker(&w2))
            .is_pending());
        assert_eq!(set.wakers_held(), 2);
        flag.set(true);
        set.wake_all();
        assert!(Pin::new(&mut a)
            .poll(&mut Context::from_waker(&w1))
            .is_ready());
        assert_eq!(set.waiting(), 1);
        drop(b);
        assert_eq!(set.waiting(), 0);
        assert_eq!(Arc::strong_count(&c1), 2);
        assert_eq!(Arc::strong_count(&c2), 2);
    }

    #[test]
    fn slots_are_reused() {
        let set = WaitSet::new();
        let (_c, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        for round in 0..10 {
            let mut waits: Vec<_> = (0..50).map(|_| set.wait_until(|| false)).collect();
            for w in waits.iter_mut() {
                assert!(Pin::new(w).poll(&mut cx).is_pending());
            }
            assert_eq!(set.waiting(), 50, "round {round}");
            // Drop every other one, then the rest.
            let mut i = 0;
            waits.retain(|_| {
                i += 1;
                i % 2 == 0
            });
            assert_eq!(set.waiting(), 25);
        }
        assert_eq!(set.waiting(), 0);
        assert!(set.inner.borrow().slots.len() <= 50);
    }

    #[test]
    fn ready_at_first_poll_never_registers() {
        let set = WaitSet::new();
        let (c, waker) = counting();
        let mut wait = set.wait_until(|| true);
        assert!(Pin::new(&mut wait)
            .poll(&mut Context::from_waker(&waker))
            .is_ready());
        assert_eq!(set.waiting(), 0);
        assert_eq!(Arc::strong_count(&c), 2);
    }
}
