//! Waiting on a shared signal (shutdown, a backend marked dead) from a loop that wakes on every
//! request or WebSocket frame.
//!
//! tokio's waiting `Notified` takes its notifier's lock on every poll, and that notifier is
//! shared by every connection on every worker thread: polled in the hot loop, it turned into a
//! lock bounced between cores once or twice per request. A `Signal` polls the real future only
//! until it holds the task's waker, then answers from an atomic flag.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub struct Signal<F> {
    wait: Pin<Box<F>>,
    probe: Probe,
    registered: Option<Waker>,
}

enum Probe {
    Token(CancellationToken),
    Watch(watch::Receiver<u64>),
}

impl Probe {
    fn fired(&self) -> bool {
        match self {
            Probe::Token(t) => t.is_cancelled(),
            Probe::Watch(rx) => rx.has_changed().unwrap_or(true),
        }
    }
}

/// Ready once `token` is cancelled.
pub fn cancelled(token: &CancellationToken) -> Signal<WaitForCancellationFutureOwned> {
    Signal {
        wait: Box::pin(token.clone().cancelled_owned()),
        probe: Probe::Token(token.clone()),
        registered: None,
    }
}

/// Ready once `rx`'s value changes after now, or its sender is gone.
pub fn changed(
    rx: watch::Receiver<u64>,
) -> Signal<impl Future<Output = ()> + Send + Sync + 'static> {
    let probe = Probe::Watch(rx.clone());
    let mut rx = rx;
    Signal {
        wait: Box::pin(async move {
            let _ = rx.changed().await;
        }),
        probe,
        registered: None,
    }
}

impl<F: Future> Future for Signal<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.probe.fired() {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        self.registered = Some(cx.waker().clone());
        self.wait.as_mut().poll(cx).map(|_| ())
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
