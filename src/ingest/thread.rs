//! A thread of a job's own for its blocking work: reading and parsing its
//! upload, writing its results.
//!
//! Not tokio's blocking pool: there each chunk went to whichever pool thread
//! was idle, so a job's records were allocated on one thread and freed on
//! another, and the allocator kept pages of every thread that had ever held
//! a chunk (each thread's heap is its own). The daemon's peak memory grew
//! with the length of the run (BENCHMARKS.md, "Memory"). One thread
//! per role and job allocates every chunk of that role: what one chunk freed,
//! the next reuses.

use super::context::IngestError;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};

type Work = Box<dyn FnOnce() + Send>;

/// A named thread running the work handed to it, one piece at a time, in
/// order. It ends when the `JobThread` is dropped, once the piece it is
/// running (if any) is done.
pub(crate) struct JobThread {
    work: mpsc::Sender<Work>,
}

impl JobThread {
    pub(crate) fn spawn(name: &str) -> std::io::Result<JobThread> {
        let (work, pieces) = mpsc::channel::<Work>();
        std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            while let Ok(piece) = pieces.recv() {
                piece();
            }
        })?;
        Ok(JobThread { work })
    }

    /// Runs `work` on the thread, in the current tracing span; a panic in it
    /// is an error of the returned future (the thread goes on).
    pub(crate) fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Pending<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        let piece: Work = Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| span.in_scope(work)));
            let _ = done.send(outcome.map_err(|panic| super::context::panic_message(&*panic)));
        });
        // The receiving end lives as long as the thread; a thread that is
        // gone drops the piece, and `Pending` reports it.
        let _ = self.work.send(piece);
        Pending(result)
    }
}

/// The outcome of work handed to a [`JobThread`].
pub(crate) struct Pending<T>(tokio::sync::oneshot::Receiver<Result<T, String>>);

impl<T> Future for Pending<T> {
    type Output = Result<T, IngestError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|received| match received {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => Err(IngestError::Panic(panic)),
            Err(_) => Err(IngestError::Panic("a job's thread ended before its work was done".into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_in_order_on_one_thread_and_a_panic_is_an_error_of_its_piece() {
        let thread = JobThread::spawn("intake-test").unwrap();
        let first = thread.run(|| std::thread::current().id());
        let panicked = thread.run(|| -> u32 { panic!("a bad row") });
        let second = thread.run(|| std::thread::current().id());
        let (first, second) = (first.await.unwrap(), second.await.unwrap());
        assert_eq!(first, second, "every piece runs on the job's thread");
        assert_ne!(first, std::thread::current().id());
        match panicked.await {
            Err(IngestError::Panic(message)) => assert_eq!(message, "a bad row"),
            other => panic!("expected the panic as an error, got {other:?}"),
        }
    }
}
