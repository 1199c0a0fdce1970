//! Waiting on a shared signal (shutdown, a backend marked dead) from a loop that wakes on every
//! request or WebSocket frame.
//!
//! Polling a waiting tokio `Notified` takes its notifier's lock, and so does asking a
//! `CancellationToken` whether it is cancelled; those notifiers are shared by every connection on
//! every worker thread, so in the hot loop they became a lock bounced between cores once or twice
//! per request. A `Signal` polls the real future only until it has registered a waker of its own,
//! which raises a flag no other connection touches before waking the task; later polls read that
//! flag.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub struct Signal<F> {
    wait: Pin<Box<F>>,
    armed: Option<Arc<Flag>>,
}

/// The waker the notifier holds: raises the flag, then wakes the waiting task.
struct Flag {
    raised: AtomicBool,
    task: Waker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.raised.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// Ready once `token` is cancelled.
pub fn cancelled(token: &CancellationToken) -> Signal<WaitForCancellationFutureOwned> {
    Signal {
        wait: Box::pin(token.clone().cancelled_owned()),
        armed: None,
    }
}

/// Ready once `rx`'s value changes after now, or its sender is gone.
pub fn changed(
    mut rx: watch::Receiver<u64>,
) -> Signal<impl Future<Output = ()> + Send + Sync + 'static> {
    Signal {
        wait: Box::pin(async move {
            let _ = rx.changed().await;
        }),
        armed: None,
    }
}

impl<F: Future> Future for Signal<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(flag) = &self.armed {
            if !flag.raised.load(Ordering::Acquire) && flag.task.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        // First poll, a notification, or another task's waker: ask the real future, through a
        // fresh flag.
        let flag = Arc::new(Flag {
            raised: AtomicBool::new(false),
            task: cx.waker().clone(),
        });
        let waker = Waker::from(flag.clone());
        match self.wait.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(_) => Poll::Ready(()),
            Poll::Pending => {
                self.armed = Some(flag);
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_the_waiting_task_when_the_token_is_cancelled() {
        let token = CancellationToken::new();
        let waiting = tokio::spawn(cancelled(&token));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        token.cancel();
        waiting.await.unwrap();
    }

    #[tokio::test]
    async fn wakes_the_waiting_task_when_the_value_changes_or_the_sender_goes() {
        let (tx, rx) = watch::channel(0u64);
        let waiting = tokio::spawn(changed(rx.clone()));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        tx.send(1).unwrap();
        waiting.await.unwrap();

        let (tx, rx) = watch::channel(0u64);
        let waiting = tokio::spawn(changed(rx));
        tokio::task::yield_now().await;
        drop(tx);
        waiting.await.unwrap();
    }

    #[tokio::test]
    async fn polled_again_after_registering_it_stays_pending() {
        let token = CancellationToken::new();
        let mut signal = std::pin::pin!(cancelled(&token));
        for _ in 0..3 {
            assert!(futures_poll_once(signal.as_mut()).await.is_pending());
        }
        token.cancel();
        assert!(futures_poll_once(signal.as_mut()).await.is_ready());
    }

    async fn futures_poll_once<F: Future>(mut f: Pin<&mut F>) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await
    }
}
