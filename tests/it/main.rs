//! One integration-test binary: real SFTP server and clients, real SQLite and
//! PostgreSQL (when TEST_DATABASE_URL is set), real files.

mod support;

mod api;
mod api_limits;
mod cluster;
mod console;
mod console_admin;
mod console_merchant;
mod containment;
mod containment2;
mod daemon;
mod fuzz_corpus;
mod hostile;
mod in_process;
mod interop_clients;
mod interop_sftp;
mod mailbox_props;
mod mapping;
mod merchant;
mod ops;
mod pgp;
mod raw_sftp;
mod resume;
mod samples;
mod sftp;
mod store;
mod takeover;
