//! The reconcile slots: at most `--concurrency` reconciles (of both kinds) run at once, and the ones waiting are
//! served by [`Urgency`], then first come, first served.
//!
//! kube-runtime's own limit is not used (the controllers run unbounded and wait here): while its slots are full it
//! keeps the due work in a hash set and serves it in hash order, so under load some objects waited 75 s while most
//! waited none (realistic bench, 1000 caches: a cache's first look after its create, due 1 s later, ran 65 s later).

use std::collections::BinaryHeap;
use std::sync::Mutex;

use hpcc_azure::Urgency;
use tokio::sync::oneshot;

pub struct Slots {
    state: Mutex<State>,
}

struct State {
    free: usize,
    /// Shutting down: no more slots are handed out (see [`Slots::close`]).
    closed: bool,
    waiting: BinaryHeap<Waiter>,
    /// Arrival order, for first come, first served within an urgency.
    arrivals: u64,
}

struct Waiter {
    urgency: Urgency,
    arrival: u64,
    wake: oneshot::Sender<()>,
}

/// Most urgent first, then earliest.
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.urgency.cmp(&other.urgency).then(other.arrival.cmp(&self.arrival))
    }
}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.arrival == other.arrival
    }
}
impl Eq for Waiter {}

/// A running reconcile's slot, handed on to the next waiter when dropped.
pub struct Slot<'a> {
    slots: &'a Slots,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.release();
    }
}

impl Slots {
    pub fn new(concurrency: u16) -> Self {
        let free = usize::from(concurrency.max(1));
        let state = State { free, closed: false, waiting: BinaryHeap::new(), arrivals: 0 };
        Self { state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot (cancel-safe: a slot handed to a waiter that went away is handed on); None once the slots
    /// are closed.
    pub async fn acquire(&self, urgency: Urgency) -> Option<Slot<'_>> {
        let mut wait = {
            let mut s = self.lock();
            if s.closed {
                return None;
            }
            if s.free > 0 && s.waiting.is_empty() {
                s.free -= 1;
                return Some(Slot { slots: self });
            }
            let (wake, wait) = oneshot::channel();
            s.arrivals += 1;
            let arrival = s.arrivals;
            s.waiting.push(Waiter { urgency, arrival, wake });
            Waiting { slots: self, wait, received: false }
        };
        // The sender is dropped without a send only when the slots close.
        (&mut wait.wait).await.ok()?;
        wait.received = true;
        Some(Slot { slots: self })
    }

    /// Shutting down: the controllers wait for every reconcile under way, and since they run unbounded that
    /// includes each one waiting here. Those end at once (their objects are reconciled by whoever runs next);
    /// the running ones finish.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.waiting.clear();
    }

    /// A slot came free: to the first waiter still there, else back to the pool.
    fn release(&self) {
        let mut s = self.lock();
        while let Some(next) = s.waiting.pop() {
            if next.wake.send(()).is_ok() {
                return;
            }
        }
        s.free += 1;
    }
}

/// A waiter's side of the handover; gives a slot that reached it back if it stops waiting (the reconcile was
/// cancelled, e.g. at shutdown) after the slot was sent.
struct Waiting<'a> {
    slots: &'a Slots,
    wait: oneshot::Receiver<()>,
    /// The slot arrived and belongs to the caller's [`Slot`] now.
    received: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.received {
            return;
        }
        self.wait.close();
        if self.wait.try_recv().is_ok() {
            self.slots.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn waiting_reconciles_are_served_by_urgency_then_in_order() {
        let slots = Slots::new(1);
        let running = slots.acquire(Urgency::Normal).await;
        let order = std::sync::Mutex::new(Vec::new());
        let waiter = |name: &'static str, urgency| {
            let (slots, order) = (&slots, &order);
            async move {
                let _slot = slots.acquire(urgency).await.expect("open");
                order.lock().unwrap().push(name);
                tokio::task::yield_now().await;
            }
            .boxed_local()
        };
        let all = futures::future::join_all([
            waiter("routine", Urgency::Routine),
            waiter("normal-1", Urgency::Normal),
            waiter("urgent", Urgency::Urgent),
            waiter("normal-2", Urgency::Normal),
        ]);
        let release = async {
            tokio::task::yield_now().await; // let every waiter queue
            drop(running);
        };
        futures::join!(all, release);
        assert_eq!(*order.lock().unwrap(), ["urgent", "normal-1", "normal-2", "routine"]);
    }

    #[tokio::test]
    async fn a_slot_reaching_a_waiter_that_gave_up_is_handed_on() {
        let slots = Slots::new(1);
        let running = slots.acquire(Urgency::Normal).await;
        let mut gave_up = Box::pin(slots.acquire(Urgency::Urgent));
        assert!((&mut gave_up).now_or_never().is_none(), "waits while the slot is taken");
        let mut next = Box::pin(slots.acquire(Urgency::Normal));
        assert!((&mut next).now_or_never().is_none());
        drop(running); // the slot is sent to the urgent waiter...
        drop(gave_up); // ...which is cancelled before it runs
        assert!(next.now_or_never().flatten().is_some(), "the slot went on to the next waiter");
    }

    #[tokio::test]
    async fn closing_ends_the_waits_and_the_running_reconciles_finish() {
        let slots = Slots::new(1);
        let running = slots.acquire(Urgency::Normal).await;
        let mut waiting = Box::pin(slots.acquire(Urgency::Urgent));
        assert!((&mut waiting).now_or_never().is_none());
        slots.close();
        assert!(waiting.now_or_never().expect("ends at once").is_none(), "no slot after closing");
        assert!(slots.acquire(Urgency::Urgent).now_or_never().expect("at once").is_none());
        assert!(running.is_some(), "the running reconcile keeps its slot");
    }

    #[tokio::test]
    async fn concurrency_bounds_the_slots() {
        let slots = Slots::new(2);
        let (a, b) = (slots.acquire(Urgency::Routine).await, slots.acquire(Urgency::Routine).await);
        assert!(a.is_some() && b.is_some());
        assert!(Box::pin(slots.acquire(Urgency::Urgent)).now_or_never().is_none(), "both taken");
        drop((a, b));
        assert!(Box::pin(slots.acquire(Urgency::Routine)).now_or_never().flatten().is_some());
    }
}
