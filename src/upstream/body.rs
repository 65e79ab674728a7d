//! Body wrappers: an idle timeout and a size cap on what streams through tether, and the
//! one response body type the service returns.
//!
//! hyper has no body-read timeout (a slow POST would hold a connection and an upstream
//! slot forever), so every streamed body is wrapped here.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use tokio::time::{Instant, Sleep};

/// Why a streamed body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body idle for longer than the configured timeout")]
    Idle,
    #[error("body larger than the configured maximum")]
    TooLarge,
    #[error("body stream failed")]
    Stream(#[from] hyper::Error),
}

pin_project_lite::pin_project! {
    /// A body that fails when the peer goes quiet for `idle`, or sends more than `max` bytes.
    ///
    /// The idle clock runs only while tether is waiting on the inner body, so a slow
    /// *reader* on the other side does not count against the sender. The timer is made
    /// on the first wait, so a body that is always ready (or empty) never allocates one.
    /// `Unpin`, as hyper's client requires of request bodies.
    pub struct Guarded<B> {
        #[pin]
        inner: B,
        deadline: Option<Pin<Box<Sleep>>>,
        idle: Duration,
        waiting: bool,
        remaining: u64,
    }
}

impl<B> Guarded<B> {
    pub fn new(inner: B, idle: Duration, max: u64) -> Self {
        Guarded { inner, deadline: None, idle, waiting: false, remaining: max }
    }
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes, Error = hyper::Error>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        let started_waiting = !*this.waiting;
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.waiting = false;
                let frame = match frame {
                    None => return Poll::Ready(None),
                    Some(Err(e)) => return Poll::Ready(Some(Err(BodyError::Stream(e)))),
                    Some(Ok(frame)) => frame,
                };
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                *this.waiting = true;
                let deadline = Instant::now() + *this.idle;
                let sleep = match this.deadline {
                    Some(sleep) => {
                        if started_waiting {
                            sleep.as_mut().reset(deadline);
                        }
                        sleep
                    }
                    None => this.deadline.insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                ready!(sleep.as_mut().poll(cx));
                Poll::Ready(Some(Err(BodyError::Idle)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// What the service answers with: a streamed upstream body or a small local one.
    #[project = ProxyBodyProj]
    pub enum ProxyBody {
        Upstream { #[pin] body: Guarded<hyper::body::Incoming> },
        Local { #[pin] body: Full<Bytes> },
    }
}

impl ProxyBody {
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Local { body: Full::new(bytes.into()) }
    }

    pub fn empty() -> Self {
        ProxyBody::Local { body: Full::new(Bytes::new()) }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            ProxyBodyProj::Upstream { body } => body.poll_frame(cx),
            ProxyBodyProj::Local { body } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body } => body.is_end_stream(),
            ProxyBody::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body } => body.size_hint(),
            ProxyBody::Local { body } => body.size_hint(),
        }
    }
}
