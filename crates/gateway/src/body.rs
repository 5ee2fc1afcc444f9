//! Bodies that stream through untouched while counting their bytes; the
//! response's records the request's usage event when it ends (or is dropped,
//! when the client goes away first).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use keyward_core::event::UsageEvent;
use keyward_service::Service;

/// A body passed through frame by frame, its data bytes counted.
pub struct Counted<B> {
    inner: B,
    bytes: Arc<AtomicU64>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, bytes: Arc<AtomicU64>) -> Self {
        Counted { inner, bytes }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &polled
            && let Some(d) = f.data_ref()
        {
            self.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The usage event of a forwarded request, completed when its response ends.
pub struct PendingEvent {
    pub service: Arc<Service>,
    pub event: UsageEvent,
    pub bytes_in: Arc<AtomicU64>,
    pub upstream_latency: Duration,
}

impl PendingEvent {
    fn finish(mut self, bytes_out: u64) {
        self.event.bytes_in = Some(self.bytes_in.load(Ordering::Relaxed));
        self.event.bytes_out = Some(bytes_out);
        self.event.latency_us = Some(self.upstream_latency.as_micros() as u64);
        self.service.record_event(self.event);
    }
}

/// The upstream's response body, counted; its end records the event.
pub struct Recorded<B> {
    inner: B,
    bytes_out: u64,
    pending: Option<PendingEvent>,
}

impl<B> Recorded<B> {
    pub fn new(inner: B, pending: PendingEvent) -> Self {
        Recorded { inner, bytes_out: 0, pending: Some(pending) }
    }
}

impl<B> Drop for Recorded<B> {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            p.finish(self.bytes_out);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Recorded<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes_out += d.len() as u64;
                }
            }
            Poll::Ready(None) => {
                let n = self.bytes_out;
                if let Some(p) = self.pending.take() {
                    p.finish(n);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
