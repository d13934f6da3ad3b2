//! From a file on disk to a report: CSV rows, jobs, the report, and the
//! watcher that turns complete uploads into jobs. Knows nothing about SFTP.

pub mod check;
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

pub use job::{Context, IngestError, JobRunner, Step};
