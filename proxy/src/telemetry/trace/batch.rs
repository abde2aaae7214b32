//! The spans waiting for the exporter: calls add theirs to the batch being filled under a short
//! lock, and wake the exporter task only when a batch opens or fills. (A message per call woke the
//! task every time; that, with the batch grown by reallocation and then copied into the request,
//! cost a sampled call about 4,300 instructions.) For OTLP/HTTP a batch is the encoded `spans`
//! fields after room kept for the request's envelope, so that it is sent without being copied
//! again. Bounded: beyond `queue_calls` waiting calls, spans are dropped and counted.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opentelemetry_sdk::trace::SpanData;
use tokio::sync::{Notify, oneshot};

/// Spans gathered for one export.
#[derive(Default)]
pub struct Batch {
    /// `head_room` bytes kept for the envelope, then the encoded spans (OTLP/HTTP).
    pub encoded: Vec<u8>,
    /// The bytes at the front of `encoded` kept for the envelope.
    pub head_room: usize,
    /// The spans for the gRPC exporter.
    pub data: Vec<SpanData>,
    /// How many spans.
    pub spans: usize,
    /// How many calls' spans.
    calls: usize,
}

impl Batch {
    /// The encoded spans alone.
    pub fn spans_bytes(&self) -> &[u8] {
        &self.encoded[self.head_room..]
    }
}

/// What the exporter task should do next.
pub enum Next {
    /// Export this batch.
    Export(Batch),
    /// Nothing is waiting: answer these flushes.
    Flushed(Vec<oneshot::Sender<()>>),
    /// Wait for a call's spans, a full batch or a flush, but no later than the instant given.
    WaitUntil(Instant),
    /// Wait for anything.
    Wait,
    /// The tracer is gone and nothing is left.
    Closed,
}

#[derive(Default)]
struct Pile {
    /// The batch being filled, and when its first spans came.
    open: Batch,
    opened: Option<Instant>,
    /// Batches that filled, oldest first.
    full: VecDeque<Batch>,
    /// Calls whose spans wait, in `open` and `full`.
    calls: usize,
    flushes: Vec<oneshot::Sender<()>>,
    closed: bool,
    /// Bytes a new batch is given ahead (the largest batch so far), so that it seldom grows.
    capacity: usize,
}

/// The batches between the calls and the exporter task.
pub struct Batches {
    pile: Mutex<Pile>,
    wake: Notify,
    /// Most calls whose spans may wait.
    queue_calls: usize,
    /// Spans that fill a batch.
    batch_spans: usize,
    /// Longest the first spans of a batch wait for it to fill.
    delay: Duration,
    /// The bytes kept at the front of every encoded batch for the envelope.
    head_room: usize,
}

/// The smallest capacity of a new encoded batch.
const MIN_CAPACITY: usize = 64 << 10;

impl Batches {
    /// Batches of `batch_spans` spans, at most `queue_calls` calls waiting, sent `delay` after their
    /// first spans at the latest; encoded batches keep `head_room` bytes at the front.
    pub fn new(queue_calls: usize, batch_spans: usize, delay: Duration, head_room: usize) -> Self {
        Self {
            pile: Mutex::new(Pile::default()),
            wake: Notify::new(),
            queue_calls: queue_calls.max(1),
            batch_spans: batch_spans.max(1),
            delay,
            head_room,
        }
    }

    fn pile(&self) -> MutexGuard<'_, Pile> {
        self.pile.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one call's spans, which `encode` writes onto the open batch and counts; `false` (nothing
    /// encoded) when `queue_calls` calls already wait. Encoded in place, under the lock: no copy of
    /// each call's spans, and no encoding of spans that are dropped.
    pub fn add_encoding(&self, encode: impl FnOnce(&mut Vec<u8>) -> usize) -> bool {
        self.add(|batch, head_room, capacity| {
            if batch.encoded.is_empty() {
                batch.encoded.reserve(capacity.max(head_room));
                batch.encoded.resize(head_room, 0);
                batch.head_room = head_room;
            }
            // Should encoding ever panic, the batch is cut back to its last whole call rather than
            // sent with part of one.
            let mut rollback = Rollback {
                len: batch.encoded.len(),
                bytes: &mut batch.encoded,
                done: false,
            };
            let spans = encode(rollback.bytes);
            rollback.done = true;
            spans
        })
    }

    /// Adds one call's spans for the gRPC exporter; `false` (nothing added) when `queue_calls` calls
    /// already wait.
    pub fn add_data(&self, data: Vec<SpanData>) -> bool {
        self.add(|batch, _, _| {
            let spans = data.len();
            batch.data.extend(data);
            spans
        })
    }

    /// Adds one call's spans with `put` (given the head room and the capacity a new encoded batch
    /// should have), which says how many it added.
    fn add(&self, put: impl FnOnce(&mut Batch, usize, usize) -> usize) -> bool {
        let mut pile = self.pile();
        if pile.calls >= self.queue_calls {
            return false;
        }
        let first = pile.opened.is_none();
        if first {
            pile.opened = Some(Instant::now());
        }
        // A little over the largest batch: the call that fills one may take it past its size.
        let capacity = (pile.capacity + pile.capacity / 8).max(MIN_CAPACITY);
        let spans = put(&mut pile.open, self.head_room, capacity);
        pile.open.spans += spans;
        pile.open.calls += 1;
        pile.calls += 1;
        let full = pile.open.spans >= self.batch_spans;
        if full {
            let batch = take_open(&mut pile);
            pile.full.push_back(batch);
        }
        drop(pile);
        if first || full {
            self.wake.notify_one();
        }
        true
    }

    /// Asks for everything waiting to be exported now; `done` is answered once nothing waits.
    pub fn flush(&self, done: oneshot::Sender<()>) {
        self.pile().flushes.push(done);
        self.wake.notify_one();
    }

    /// Tells the exporter task to send what waits and stop.
    pub fn close(&self) {
        self.pile().closed = true;
        self.wake.notify_one();
    }

    /// What the exporter task does next.
    pub fn next(&self) -> Next {
        let mut pile = self.pile();
        if let Some(batch) = pile.full.pop_front() {
            pile.calls -= batch.calls;
            return Next::Export(batch);
        }
        let Some(opened) = pile.opened else {
            if !pile.flushes.is_empty() {
                return Next::Flushed(std::mem::take(&mut pile.flushes));
            }
            return if pile.closed {
                Next::Closed
            } else {
                Next::Wait
            };
        };
        let due = opened + self.delay;
        if pile.closed || !pile.flushes.is_empty() || Instant::now() >= due {
            let batch = take_open(&mut pile);
            pile.calls -= batch.calls;
            return Next::Export(batch);
        }
        Next::WaitUntil(due)
    }

    /// Waits until there may be something to do, or until `until`.
    pub async fn wait(&self, until: Option<Instant>) {
        match until {
            Some(at) => {
                let _ = tokio::time::timeout_at(at.into(), self.wake.notified()).await;
            }
            None => self.wake.notified().await,
        }
    }
}

/// Takes the open batch, leaving an empty one.
fn take_open(pile: &mut Pile) -> Batch {
    pile.opened = None;
    let batch = std::mem::take(&mut pile.open);
    pile.capacity = pile.capacity.max(batch.encoded.len());
    batch
}

/// Cuts `bytes` back to `len` when dropped before `done`: while a panic unwinds.
struct Rollback<'b> {
    bytes: &'b mut Vec<u8>,
    len: usize,
    done: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.bytes.truncate(self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One call's spans, `spans` of them encoded as `bytes`.
    fn add(batches: &Batches, bytes: &[u8], spans: usize) -> bool {
        batches.add_encoding(|out| {
            out.extend_from_slice(bytes);
            spans
        })
    }

    #[test]
    fn a_call_whose_encoding_panics_leaves_the_batch_as_it_was() {
        let batches = Batches::new(100, 2, Duration::from_secs(60), 3);
        assert!(add(&batches, b"whole", 1));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batches.add_encoding(|out| {
                out.extend_from_slice(b"half");
                panic!("an encoding that fails");
            })
        }));
        assert!(caught.is_err());
        // The second whole call fills the batch.
        assert!(add(&batches, b"!", 1));
        let batch = exported(&batches).unwrap();
        assert_eq!(&batch.encoded[batch.head_room..], b"whole!");
        assert_eq!((batch.spans, batch.calls), (2, 2));
    }

    fn exported(batches: &Batches) -> Option<Batch> {
        match batches.next() {
            Next::Export(b) => Some(b),
            _ => None,
        }
    }

    #[test]
    fn a_batch_fills_at_its_span_count_and_keeps_room_for_the_envelope() {
        let batches = Batches::new(100, 4, Duration::from_secs(60), 3);
        assert!(add(&batches, b"ab", 2));
        // Not full, not due: the task waits.
        assert!(matches!(batches.next(), Next::WaitUntil(_)));
        assert!(add(&batches, b"cd", 2));
        let batch = exported(&batches).expect("a full batch");
        assert_eq!(batch.spans, 4);
        assert_eq!(batch.encoded, b"\0\0\0abcd");
        assert_eq!(batch.spans_bytes(), b"abcd");
        assert!(matches!(batches.next(), Next::Wait));
    }

    #[test]
    fn beyond_the_queue_calls_are_refused_until_the_task_takes_a_batch() {
        let batches = Batches::new(2, 100, Duration::from_secs(60), 0);
        assert!(add(&batches, b"a", 1));
        assert!(add(&batches, b"b", 1));
        assert!(!add(&batches, b"c", 1));
        let (done, _answer) = oneshot::channel();
        batches.flush(done);
        let batch = exported(&batches).expect("a flush sends the open batch");
        assert_eq!((batch.spans, batch.spans_bytes()), (2, &b"ab"[..]));
        assert!(matches!(batches.next(), Next::Flushed(f) if f.len() == 1));
        assert!(add(&batches, b"c", 1));
    }

    #[test]
    fn a_batch_is_due_after_the_delay_and_closing_sends_what_is_left() {
        let batches = Batches::new(10, 100, Duration::ZERO, 0);
        batches.add_data(Vec::new());
        assert!(exported(&batches).is_some());
        let batches = Batches::new(10, 100, Duration::from_secs(60), 0);
        add(&batches, b"x", 1);
        batches.close();
        assert!(exported(&batches).is_some());
        assert!(matches!(batches.next(), Next::Closed));
    }
}
