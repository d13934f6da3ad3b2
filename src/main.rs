//! The `intake` command line. Errors are `anyhow` here and in the daemon's wiring (`app`, `cluster`), typed below them.

// One audited call into the allocator (`tune_allocator`); nothing else.
#![deny(unsafe_code)]

mod cli;

use anyhow::Result;
use clap::{Parser, Subcommand};
use intake::config::{Config, LogFormat};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Frees memory back to the OS once a large batch is done with it.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (the -sys crate
/// exports no constant for it; `tests::purge_delay_option` checks it).
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long memory the process freed stays mapped before it goes back to the
/// OS (mimalloc's default: 1 s). A job frees and re-allocates its chunks
/// every few tens of milliseconds: with 1 s, about 20–40 MiB freed a moment
/// ago stays resident; with 10 ms, RSS follows what is in use (BENCHMARKS.md,
/// "Memory"). `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[cfg(feature = "mimalloc")]
const PURGE_DELAY_MS: std::ffi::c_long = 10;

#[cfg(feature = "mimalloc")]
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: `mi_option_set` takes plain integers and only stores the value;
    // mimalloc reads this option each time it schedules a purge. It is not
    // thread-safe, so it runs first thing in `main`, before any other thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

#[cfg(not(feature = "mimalloc"))]
fn tune_allocator() {}

#[derive(Parser)]
#[command(
    name = "intake",
    version,
    about = "Bulk customer onboarding: CSV files over SFTP into SQL, with per-row results"
)]
struct Cli {
    /// Configuration file; INTAKE_* environment variables override it.
    #[arg(long, global = true, default_value = "config.toml")]
    config: PathBuf,
    /// Log format (overrides `log_format`).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: SFTP server, watcher and workers.
    Serve,
    /// Validate a customer file offline (no database): exit 0 all rows valid, 1 some fail, 2 rejected.
    Check {
        file: PathBuf,
        /// Region for numbers written without + (e.g. US).
        #[arg(long)]
        region: Option<String>,
        /// utf-8 (default) or windows-1252.
        #[arg(long)]
        encoding: Option<String>,
        /// possible (default) or valid.
        #[arg(long)]
        phone_check: Option<String>,
        /// A mapping profile (TOML) to read the file with, as the daemon would.
        #[arg(long)]
        mapping: Option<PathBuf>,
    },
    /// Process a file without SFTP, writing the report into the account's outbox.
    Ingest {
        file: PathBuf,
        #[arg(long)]
        account: String,
        /// Fail rows whose ref exists instead of updating them (as a create-only login would).
        #[arg(long)]
        no_update: bool,
    },
    /// Manage accounts.
    #[command(subcommand)]
    Account(cli::accounts::AccountCommand),
    /// Manage SFTP users (and their web console password).
    #[command(subcommand)]
    User(cli::accounts::UserCommand),
    /// The web console's operators.
    #[command(subcommand)]
    Admin(cli::admin::AdminCommand),
    /// An account's mapping profiles: how its own export columns map onto ours.
    #[command(subcommand)]
    Mapping(cli::mappings::MappingCommand),
    /// List recent uploads with their status and counts; show or retry one.
    Jobs(cli::jobs::JobsArgs),
    /// Webhook events: pending, given up, delivered.
    #[command(subcommand)]
    Webhooks(cli::webhooks::WebhooksCommand),
    /// One account's webhook.
    #[command(subcommand)]
    Webhook(cli::webhooks::WebhookCommand),
    /// The nodes sharing this database: live or not, last heartbeat, the jobs they run.
    Nodes(cli::nodes::NodesArgs),
    /// API tokens: create (printed once), list, revoke.
    #[command(subcommand)]
    Token(cli::tokens::TokenCommand),
    /// OpenPGP keys of an account: init, show, add-key, remove-key, list.
    #[command(subcommand)]
    Pgp(cli::pgp::PgpCommand),
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let explicit = std::env::args_os().any(|a| a == "--config" || a.to_string_lossy().starts_with("--config="));
    let config = match Config::load(&cli.config, explicit) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: invalid configuration ({}): {e}", cli.config.display());
            return ExitCode::from(2);
        }
    };
    // The daemon logs what it does; the other commands only what goes wrong.
    let default_filter = if matches!(cli.command, Command::Serve) { "info,sqlx=warn,russh=warn" } else { "warn" };
    init_logging(cli.log_format.unwrap_or(config.log_format), default_filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config, cli.config)) {
        Ok(code) => code,
        Err(e) => {
            // An error may quote a merchant's file name or cell: escaped.
            eprintln!("error: {}", intake::domain::shown::printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INTAKE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter))
        // rPGP warns each time a stored (locked) key is written out again
        // ("packet header mismatch between reading and writing"): a note
        // about its own length encoding, nothing an operator can act on.
        .add_directive("pgp::packet::packet_sum=error".parse().expect("a valid directive"));
    // Colours only on a terminal: a log file or journal gets plain text.
    // User text in fields is escaped either way (`telemetry::logs`).
    intake::telemetry::logs::init(matches!(format, LogFormat::Json), filter, std::io::stderr().is_terminal());
}

async fn run(command: Command, config: Config, config_path: PathBuf) -> Result<ExitCode> {
    match command {
        Command::Check { file, region, encoding, phone_check, mapping } => {
            cli::check::check(&file, region, encoding, phone_check, mapping.as_deref(), &config)
        }
        Command::Serve => {
            intake::app::serve(config, &config_path).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest { file, account, no_update } => {
            cli::ingest::ingest_file(&config, &file, &account, !no_update).await
        }
        Command::Account(cmd) => cli::accounts::account(&config, cmd).await,
        Command::User(cmd) => cli::accounts::user(&config, cmd).await,
        Command::Admin(cmd) => cli::admin::admin(&config, cmd).await,
        Command::Mapping(cmd) => cli::mappings::mapping(&cli::open_store(&config).await?, cmd).await,
        Command::Jobs(args) => cli::jobs::jobs(&config, cli::open_store(&config).await?, args).await,
        Command::Webhooks(cmd) => cli::webhooks::webhooks(&cli::open_store(&config).await?, cmd).await,
        Command::Webhook(cmd) => cli::webhooks::webhook(&config, cli::open_store(&config).await?, cmd).await,
        Command::Nodes(args) => cli::nodes::nodes(&config, &cli::open_store(&config).await?, args).await,
        Command::Token(cmd) => cli::tokens::token(&cli::open_store(&config).await?, cmd).await,
        Command::Pgp(cmd) => cli::pgp::pgp(&config, cmd).await,
    }
}

#[cfg(all(test, feature = "mimalloc"))]
mod tests {
    /// `MI_OPTION_PURGE_DELAY` is the purge delay: the option with mimalloc
    /// 3's default of 1000 ms (no other option has it). Fails if an update of
    /// mimalloc renumbers its options.
    #[test]
    #[allow(unsafe_code)]
    fn purge_delay_option() {
        // SAFETY: reads an integer option; `main` (and so `tune_allocator`)
        // does not run in tests, so nothing sets it meanwhile.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000);
    }
}
