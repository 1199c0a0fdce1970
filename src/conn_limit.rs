//! `max_connections`: every open client connection of a frontend holds a slot, from accept
//! until it closes, WebSocket tunnels included. The limit is read from the config snapshot at
//! each accept, so a reload changes it; a reload wakes acceptors waiting on the old limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Default)]
pub struct ConnLimit {
    open: AtomicUsize,
    /// Acceptors waiting for a slot: a closing connection takes the notifier's lock only then.
    waiting: AtomicUsize,
    changed: Notify,
}

struct Waiting<'a>(&'a ConnLimit);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One open client connection; its drop frees the slot.
pub struct ConnSlot(Arc<ConnLimit>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        // SeqCst pairs with `acquire`: either it sees this slot freed, or this sees it waiting.
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        if self.0.waiting.load(Ordering::SeqCst) > 0 {
            self.0.changed.notify_waiters();
        }
    }
}

impl ConnLimit {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn try_take(self: &Arc<Self>, max: usize) -> Option<ConnSlot> {
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnSlot(self.clone()))
    }

    /// A slot under the limit `max()` gives at the time; waits while the frontend is full.
    pub async fn acquire(self: &Arc<Self>, max: impl Fn() -> usize) -> ConnSlot {
        if let Some(slot) = self.try_take(max()) {
            return slot;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // Counted down however the wait ends, a stopped listener's included.
        let _waiting = Waiting(self);
        loop {
            // Registered before the check, so a slot freed in between is not missed.
            let freed = self.changed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_take(max()) {
                return slot;
            }
            freed.await;
        }
    }

    /// The limit may have changed (a reload): acceptors look again.
    pub fn wake(&self) {
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn waits_for_a_free_slot_or_a_raised_limit() {
        let limit = Arc::new(ConnLimit::default());
        let max = Arc::new(AtomicUsize::new(1));
        let m = max.clone();
        let first = limit.acquire(|| m.load(Ordering::SeqCst)).await;
        let l2 = limit.clone();
        let m2 = max.clone();
        let waiting =
            tokio::spawn(async move { l2.acquire(move || m2.load(Ordering::SeqCst)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished(), "the limit is full");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("a freed slot is taken")
            .unwrap();
        assert_eq!(limit.open(), 1);
        let l3 = limit.clone();
        let m3 = max.clone();
        let third =
            tokio::spawn(async move { l3.acquire(move || m3.load(Ordering::SeqCst)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!third.is_finished());
        max.store(2, Ordering::SeqCst);
        limit.wake();
        let _third = tokio::time::timeout(Duration::from_secs(1), third)
            .await
            .expect("a raised limit lets it in")
            .unwrap();
        assert_eq!(limit.open(), 2);
        drop(second);
        assert_eq!(limit.open(), 1);
    }
}
