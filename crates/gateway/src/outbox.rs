//! Queues towards one client (or the event router), bounded by their backlog.
//!
//! What an upstream emits — list changes, progress, resource updates — is copied into the queue
//! of every client it concerns. A client that keeps its stream open but never reads it, or a
//! service that emits in a tight loop faster than the router forwards, would let those queues
//! grow without bound: a hostile service could grow gateway memory through them. An [`Outbox`]
//! holds at most [`MAX_BACKLOG`] undelivered messages; beyond that [`Outbox::send`] fails, and the
//! sender drops the message (progress, an event) or ends the stream (a client that far behind
//! reconnects and lists again). The one message that must not be dropped, a request's own
//! response, goes with [`Outbox::send_always`]: one per request, so still bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::sync::mpsc;

/// Undelivered messages one queue may hold.
pub const MAX_BACKLOG: usize = 1024;

/// The sending side; cheap to clone.
#[derive(Debug)]
pub struct Outbox<T> {
    tx: mpsc::UnboundedSender<T>,
    backlog: Arc<AtomicUsize>,
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            backlog: self.backlog.clone(),
        }
    }
}

/// The receiving side: a stream of messages.
#[derive(Debug)]
pub struct Inbox<T> {
    rx: mpsc::UnboundedReceiver<T>,
    backlog: Arc<AtomicUsize>,
}

pub fn outbox<T>() -> (Outbox<T>, Inbox<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            tx,
            backlog: backlog.clone(),
        },
        Inbox { rx, backlog },
    )
}

impl<T> Outbox<T> {
    /// Queues `item`, unless [`MAX_BACKLOG`] messages are waiting or the receiver is gone.
    pub fn send(&self, item: T) -> Result<(), T> {
        if self.backlog.fetch_add(1, Ordering::AcqRel) >= MAX_BACKLOG {
            self.backlog.fetch_sub(1, Ordering::AcqRel);
            return Err(item);
        }
        self.tx.send(item).map_err(|e| {
            self.backlog.fetch_sub(1, Ordering::AcqRel);
            e.0
        })
    }

    /// Queues `item` whatever the backlog (a response: one per request); false if the receiver
    /// is gone.
    pub fn send_always(&self, item: T) -> bool {
        self.backlog.fetch_add(1, Ordering::AcqRel);
        self.tx.send(item).is_ok()
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl<T> Inbox<T> {
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(_)) = polled {
            self.backlog.fetch_sub(1, Ordering::AcqRel);
        }
        polled
    }
}

impl<T> futures::Stream for Inbox<T> {
    type Item = T;
    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.get_mut().poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn the_backlog_is_bounded_and_reading_makes_room() {
        let (tx, mut rx) = outbox();
        for i in 0..MAX_BACKLOG {
            tx.send(i).expect("room");
        }
        assert_eq!(tx.send(MAX_BACKLOG), Err(MAX_BACKLOG), "full");
        assert!(tx.send_always(usize::MAX), "a response always goes");
        assert_eq!(rx.next().await, Some(0));
        assert_eq!(tx.send(7), Err(7), "still full: the response counts too");
        assert_eq!(rx.recv().await, Some(1));
        tx.send(7).expect("room again");
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.send(8), Err(8), "nobody reads");
    }
}
