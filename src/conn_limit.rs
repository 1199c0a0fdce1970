//! `max_connections`: every open client connection of a frontend holds a slot, from accept
//! until it closes, WebSocket tunnels included. The limit is read from the config snapshot at
//! each accept, so a reload changes it; a reload wakes acceptors waiting on the old limit.
//!
//! `max_connections_per_ip` rides on the same slot: once the client address is known (after
//! the PROXY header, when there is one) the slot also counts against that address, and gives
//! the count back when it drops, whatever ended the connection (a WebSocket tunnel included).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Default)]
pub struct ConnLimit {
    open: AtomicUsize,
    /// Acceptors waiting for a slot: a closing connection takes the notifier's lock only then.
    waiting: AtomicUsize,
    changed: Notify,
    /// Open connections per client address. Counted whatever the limit, so a reload that sets
    /// one (or lowers it) applies to the connections already open.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

struct Waiting<'a>(&'a ConnLimit);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One open client connection; its drop frees the slot (and its client address's count).
pub struct ConnSlot {
    limit: Arc<ConnLimit>,
    client: Option<IpAddr>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(ip) = self.client {
            self.limit.release_ip(ip);
        }
        // SeqCst pairs with `acquire`: either it sees this slot freed, or this sees it waiting.
        self.limit.open.fetch_sub(1, Ordering::SeqCst);
        if self.limit.waiting.load(Ordering::SeqCst) > 0 {
            self.limit.changed.notify_waiters();
        }
    }
}

/// The client address already has `max_connections_per_ip` connections open.
#[derive(Debug)]
pub struct PerIpFull;

impl ConnSlot {
    /// Counts this connection against its client address; refused (nothing counted) when that
    /// address already holds `max` (0 = no limit). Called once per connection.
    pub fn count_client(&mut self, ip: IpAddr, max: usize) -> Result<(), PerIpFull> {
        debug_assert!(self.client.is_none());
        let ip = ip.to_canonical();
        let mut counts = self.limit.per_ip.lock().expect("per-ip counts lock");
        let open = counts.entry(ip).or_default();
        if max > 0 && *open >= max {
            return Err(PerIpFull);
        }
        *open += 1;
        self.client = Some(ip);
        Ok(())
    }
}

impl ConnLimit {
    fn release_ip(&self, ip: IpAddr) {
        let mut counts = self.per_ip.lock().expect("per-ip counts lock");
        if let Some(open) = counts.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&ip);
            }
        }
    }

    /// Open connections from this client address.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let counts = self.per_ip.lock().expect("per-ip counts lock");
        counts.get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn try_take(self: &Arc<Self>, max: usize) -> Option<ConnSlot> {
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnSlot {
                limit: self.clone(),
                client: None,
            })
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

    #[tokio::test]
    async fn per_ip_counts_are_given_back_when_slots_drop() {
        let limit = Arc::new(ConnLimit::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut first = limit.acquire(|| 10).await;
        first.count_client(a, 2).unwrap();
        let mut second = limit.acquire(|| 10).await;
        second.count_client(a, 2).unwrap();
        let mut third = limit.acquire(|| 10).await;
        assert!(
            third.count_client(a, 2).is_err(),
            "a third from one address"
        );
        third.count_client(b, 2).unwrap();
        assert_eq!(limit.open_from(a), 2);
        drop(first);
        let mut again = limit.acquire(|| 10).await;
        again.count_client(a, 2).unwrap();
        drop((second, third, again));
        assert_eq!(limit.open_from(a), 0);
        assert!(
            limit.per_ip.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }
}
