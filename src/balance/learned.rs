//! `X-Qlik-Session*` cookie values seen in a backend's `Set-Cookie`, mapped to that backend, so a
//! client that lost our cookie (or never had it) still reaches the QPS node holding its session.
//! Bounded, and entries expire after the idle time of a Qlik session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
// tokio's clock, so tests can pause it and step through the idle time.
use tokio::time::Instant;

pub const DEFAULT_IDLE: Duration = Duration::from_secs(60 * 60);
pub const DEFAULT_CAPACITY: usize = 200_000;

/// Told of each entry learned here (session, backend) — in a cluster, to share it. It must not
/// block: it runs on the request path.
pub type OnLearned = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The same for every pool's table: (pool, session, backend).
pub type OnPoolLearned = Arc<dyn Fn(&str, &str, &str) + Send + Sync>;

pub struct LearnedSessions {
    idle: Duration,
    capacity: usize,
    map: Mutex<HashMap<String, (String, Instant)>>,
    on_learned: OnceLock<OnLearned>,
}

impl LearnedSessions {
    pub fn new(idle: Duration, capacity: usize) -> LearnedSessions {
        LearnedSessions {
            idle,
            capacity,
            map: Mutex::new(HashMap::new()),
            on_learned: OnceLock::new(),
        }
    }

    /// Sets who hears of entries learned here (once).
    pub fn on_learned(&self, hook: OnLearned) {
        let _ = self.on_learned.set(hook);
    }

    /// An entry seen in a backend's answer here: kept, and told to the hook when it is new.
    pub fn learn(&self, session: &str, backend_id: &str) {
        if self.insert(session, backend_id) {
            if let Some(hook) = self.on_learned.get() {
                hook(session, backend_id);
            }
        }
    }

    /// An entry another instance learned: kept, not told again.
    pub fn learn_elsewhere(&self, session: &str, backend_id: &str) {
        self.insert(session, backend_id);
    }

    /// True when the session was unknown or pointed at another backend.
    fn insert(&self, session: &str, backend_id: &str) -> bool {
        let now = Instant::now();
        let mut map = self.map.lock().expect("learned sessions lock");
        if map.len() >= self.capacity && !map.contains_key(session) {
            let idle = self.idle;
            map.retain(|_, (_, seen)| now.duration_since(*seen) < idle);
            if map.len() >= self.capacity {
                // Still full of live sessions: drop the stalest tenth rather than refuse to learn.
                let mut ages: Vec<(Instant, String)> =
                    map.iter().map(|(k, (_, t))| (*t, k.clone())).collect();
                ages.sort();
                for (_, k) in ages.into_iter().take(self.capacity / 10 + 1) {
                    map.remove(&k);
                }
            }
        }
        let old = map.insert(session.to_string(), (backend_id.to_string(), now));
        old.is_none_or(|(b, _)| b != backend_id)
    }

    /// The backend that issued this session, refreshing its idle timer.
    pub fn lookup(&self, session: &str) -> Option<String> {
        let now = Instant::now();
        let mut map = self.map.lock().expect("learned sessions lock");
        let entry = map.get_mut(session)?;
        if now.duration_since(entry.1) >= self.idle {
            map.remove(session);
            return None;
        }
        entry.1 = now;
        Some(entry.0.clone())
    }

    pub fn len(&self) -> usize {
        self.map.lock().expect("learned sessions lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_entry_expires_after_the_idle_time_without_lookups() {
        let t = LearnedSessions::new(Duration::from_secs(3600), 10);
        t.learn("abc", "node1");
        tokio::time::advance(Duration::from_secs(3599)).await;
        assert_eq!(t.lookup("abc").as_deref(), Some("node1"));
        // The lookup refreshed it: another idle time from here.
        tokio::time::advance(Duration::from_secs(3599)).await;
        assert_eq!(t.lookup("abc").as_deref(), Some("node1"));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(t.lookup("abc"), None, "idle for the whole idle time");
        assert!(t.is_empty(), "the expired entry is dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_drops_expired_entries_before_live_ones() {
        let t = LearnedSessions::new(Duration::from_secs(60), 3);
        t.learn("old1", "n1");
        t.learn("old2", "n1");
        tokio::time::advance(Duration::from_secs(30)).await;
        t.learn("live", "n2");
        tokio::time::advance(Duration::from_secs(40)).await;
        t.learn("new", "n3");
        assert_eq!(t.len(), 2, "the two expired entries made room");
        assert_eq!(t.lookup("live").as_deref(), Some("n2"));
        assert_eq!(t.lookup("new").as_deref(), Some("n3"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_hook_hears_new_entries_only_and_not_those_learned_elsewhere() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let t = LearnedSessions::new(DEFAULT_IDLE, 100);
        let h = heard.clone();
        t.on_learned(Arc::new(move |s: &str, b: &str| {
            h.lock().unwrap().push(format!("{s}={b}"))
        }));
        t.learn("s1", "n1");
        t.learn("s1", "n1");
        t.learn("s1", "n2");
        t.learn_elsewhere("s2", "n3");
        assert_eq!(*heard.lock().unwrap(), ["s1=n1", "s1=n2"]);
        assert_eq!(t.lookup("s2").as_deref(), Some("n3"));
    }

    #[tokio::test(start_paused = true)]
    async fn stays_bounded() {
        let t = LearnedSessions::new(DEFAULT_IDLE, 100);
        for i in 0..1000 {
            t.learn(&format!("s{i}"), "n");
        }
        assert!(t.len() <= 100);
        assert_eq!(
            t.lookup("s999").as_deref(),
            Some("n"),
            "the newest survives"
        );
    }
}
