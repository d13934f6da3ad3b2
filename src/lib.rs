//! intake: bulk customer onboarding over SFTP.
//!
//! Two front-ends that never know each other — the SFTP server (`sftp`) and
//! the file pipeline (`ingest`) — meet in the file system; `store` keeps
//! customers, accounts, users and jobs; `domain` holds the validated command.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod api;
pub mod app;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod console;
pub mod domain;
pub mod ingest;
pub mod keyring;
pub mod mailbox;
pub mod manage;
pub mod openpgp;
pub mod penalties;
pub mod retention;
pub mod serve_http;
pub mod sftp;
pub mod store;
pub mod telemetry;
pub mod webhooks;
