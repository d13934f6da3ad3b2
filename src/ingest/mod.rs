//! From a file on disk to a report. Knows nothing about SFTP.
//!
//! An upload's way through: `watcher` sees a complete file (or a front end
//! hands one over) → `arrival` records a job and brings the file into its
//! spool → `worker` claims it (a lease) and steps it through `driver`
//! (containment, retries, aborts) → `job` runs batches: `rows` parses
//! records, `upsert` decides and writes them, results are appended →
//! `publish` decides the summary, then publishes results, failed records
//! (`failed`) and the summary (`report`) into the outbox and archives the
//! upload; `progress` keeps `NAME.progress.json` current meanwhile.

pub mod arrival;
pub mod check;
pub mod context;
pub mod driver;
pub mod failed;
pub mod job;
pub mod mappings;
pub mod progress;
pub mod publish;
pub mod report;
pub mod rows;
mod thread;
pub mod upload;
pub mod upsert;
pub mod watcher;
pub mod worker;

pub use context::{Context, IngestError};
pub use job::{JobRunner, Step};
