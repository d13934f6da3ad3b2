//! The `intake` command line. Errors are `anyhow` here and in the daemon's wiring (`app`, `cluster`), typed below them.

// One audited call into the allocator (`tune_allocator`); nothing else.
#![deny(unsafe_code)]

mod mapping_cli;
mod ops_cli;
mod token_cli;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use intake::config::{Config, LogFormat};
use intake::domain::shown::printable;
use intake::domain::user::{Scopes, SftpUser};
use intake::domain::{AccountId, AccountSettings, FileEncoding, PhoneCheck, PhoneRegion};
use intake::ingest::arrival::{self, Arrival, Take, Uploader};
use intake::ingest::{self, driver, Context};
use intake::mailbox::Layout;
use intake::store::Store;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
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
    Account(AccountCommand),
    /// Manage SFTP users.
    #[command(subcommand)]
    User(UserCommand),
    /// An account's mapping profiles: how its own export columns map onto ours.
    #[command(subcommand)]
    Mapping(mapping_cli::MappingCommand),
    /// List recent uploads with their status and counts; show or retry one.
    Jobs(ops_cli::JobsArgs),
    /// Webhook events: pending, given up, delivered.
    #[command(subcommand)]
    Webhooks(ops_cli::WebhooksCommand),
    /// One account's webhook.
    #[command(subcommand)]
    Webhook(ops_cli::WebhookCommand),
    /// The nodes sharing this database: live or not, last heartbeat, the jobs they run.
    Nodes(ops_cli::NodesArgs),
    /// API tokens: create (printed once), list, revoke.
    #[command(subcommand)]
    Token(token_cli::TokenCommand),
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Add an account (its folders are created under the data directory).
    Add(AccountArgs),
    /// Change an account's settings; those not given stay as they are.
    Set(AccountArgs),
    List,
    /// Remove an account and its SFTP users; its customers stay in the store.
    Remove {
        avid: String,
    },
}

#[derive(Args)]
struct AccountArgs {
    avid: String,
    #[arg(long)]
    default_region: Option<String>,
    #[arg(long)]
    encoding: Option<String>,
    #[arg(long)]
    phone_check: Option<String>,
    /// Start the CSV reports with a UTF-8 BOM, so that Excel on Windows shows
    /// non-ASCII text correctly.
    #[arg(long, overrides_with = "no_report_bom")]
    report_bom: bool,
    /// CSV reports without a BOM (the default).
    #[arg(long)]
    no_report_bom: bool,
    /// Built-in mapping presets to try for this account's files:
    /// shopify,stripe,square,woocommerce,hubspot,mailchimp, `all` or `none`.
    #[arg(long)]
    presets: Option<String>,
    #[command(flatten)]
    webhook: ops_cli::WebhookArgs,
}

impl AccountArgs {
    /// The settings these arguments give `base`.
    fn applied_to(&self, mut base: AccountSettings) -> Result<AccountSettings> {
        if let Some(region) = &self.default_region {
            base.default_region = Some(PhoneRegion::parse(region)?);
        }
        if let Some(encoding) = &self.encoding {
            base.encoding = FileEncoding::parse(encoding)?;
        }
        if let Some(check) = &self.phone_check {
            base.phone_check = PhoneCheck::parse(check)?;
        }
        if self.report_bom || self.no_report_bom {
            base.report_bom = self.report_bom;
        }
        Ok(base)
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add an SFTP user to an account.
    Add {
        username: String,
        #[arg(long)]
        account: String,
        /// A file of OpenSSH public keys (authorized_keys lines); repeatable.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// Read a password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        /// customers:create and/or customers:update (default: both).
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    List,
    Remove {
        username: String,
    },
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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INTAKE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only on a terminal: a log file or journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(command: Command, config: Config, config_path: PathBuf) -> Result<ExitCode> {
    match command {
        Command::Check { file, region, encoding, phone_check, mapping } => {
            check(&file, region, encoding, phone_check, mapping.as_deref(), &config)
        }
        Command::Serve => {
            intake::app::serve(config, &config_path).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest { file, account, no_update } => ingest_file(&config, &file, &account, !no_update).await,
        Command::Account(cmd) => account(&config, cmd).await,
        Command::User(cmd) => user(&config, cmd).await,
        Command::Mapping(cmd) => mapping_cli::mapping(&open_store(&config).await?, cmd).await,
        Command::Jobs(args) => ops_cli::jobs(&config, open_store(&config).await?, args).await,
        Command::Webhooks(cmd) => ops_cli::webhooks(&open_store(&config).await?, cmd).await,
        Command::Webhook(cmd) => ops_cli::webhook(&config, open_store(&config).await?, cmd).await,
        Command::Nodes(args) => ops_cli::nodes(&config, &open_store(&config).await?, args).await,
        Command::Token(cmd) => token_cli::token(&open_store(&config).await?, cmd).await,
    }
}

async fn open_store(config: &Config) -> Result<Store> {
    intake::app::open_store(config).await
}

fn check(
    file: &Path,
    region: Option<String>,
    encoding: Option<String>,
    phone_check: Option<String>,
    mapping: Option<&Path>,
    config: &Config,
) -> Result<ExitCode> {
    let mut account =
        AccountSettings::from_text("check", region.as_deref(), encoding.as_deref(), phone_check.as_deref())?;
    if let Some(path) = mapping {
        let bytes = std::fs::read(path).with_context(|| format!("while reading {}", path.display()))?;
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("mapping");
        let name: String =
            name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')).take(64).collect();
        let name = if name.is_empty() || name.starts_with('.') { "mapping".to_owned() } else { name };
        let profile = intake::domain::mapping::Profile::parse(&name, &bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let file_name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        account.mapping = intake::domain::mapping::MappingChoice::Select {
            file_name,
            profiles: std::sync::Arc::new(vec![std::sync::Arc::new(profile)]),
        };
    }
    let mut out = std::io::stdout().lock();
    let outcome = ingest::check::check_file(file, &account, config.file_limits(), |row| {
        if let Err(errors) = &row.outcome {
            for (i, e) in errors.iter().enumerate() {
                let lead =
                    if i == 0 { format!("line {}", row.line) } else { " ".repeat(format!("line {}", row.line).len()) };
                // The file's text never reaches the terminal as escape sequences.
                let field = if e.field.is_empty() { String::new() } else { format!(" [{}]", printable(&e.field)) };
                let _ = writeln!(out, "{lead}: {}{field}: {}", e.code, printable(&e.message));
            }
        }
    })
    .with_context(|| format!("while reading {}", file.display()))?;
    if let Some(applied) = &outcome.mapping {
        writeln!(
            out,
            "mapping {} (sha256 {}); ignored columns: {}",
            applied.profile.name,
            applied.profile.sha256(),
            if applied.ignored.is_empty() { "none".to_owned() } else { applied.ignored.join(", ") }
        )?;
    }
    if let Some(rejection) = outcome.rejection {
        writeln!(out, "rejected: {}: {}", rejection.code.code(), printable(&rejection.message))?;
        return Ok(ExitCode::from(2));
    }
    writeln!(out, "{} rows: {} valid, {} failing", outcome.rows, outcome.rows - outcome.failed, outcome.failed)?;
    Ok(if outcome.failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn ingest_file(config: &Config, file: &Path, avid: &str, may_update: bool) -> Result<ExitCode> {
    let store = open_store(config).await?;
    if store.get_account(avid).await?.is_none() {
        bail!("account `{avid}` does not exist; add it with `intake account add {avid}`");
    }
    let layout = Layout::new(&config.data_dir);
    layout.ensure_account(avid).context("while creating the account's folders")?;
    let file_name = file
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", file.display()))?;
    if !file.is_file() {
        bail!("{} is not a file", file.display());
    }
    let node = intake::cluster::CommandNode::start(config, &store).await?;
    let ctx = std::sync::Arc::new(Context::new(config, store, node.owner().to_owned()));
    let arrival = Arrival {
        account: avid,
        source: file,
        file_name,
        kind: intake::store::JobKind::Import,
        uploader: Uploader::Operator { scopes: if may_update { Scopes::ALL } else { Scopes::CREATE_ONLY } },
        take: Take::Copy,
        job_id: None,
    };
    let claimed = arrival::arrive_and_take(&ctx, arrival).await;
    let claimed = match claimed {
        Ok(claimed) => claimed,
        Err(e) => {
            node.finish().await;
            return Err(e.into());
        }
    };
    let job_id = claimed.job.job_id.clone();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(claimed.job.rows_total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows ({per_sec}, {eta} left)",
            )
            .expect("a valid template"),
        );
        bar
    });
    // The same driver as the daemon's workers: a failure gets the same
    // handling (an `aborted` report, or a retry a daemon resumes).
    let summary = driver::run_one(&ctx, claimed, |runner| {
        if let Some(bar) = &bar {
            bar.set_length(runner.job().rows_total);
            bar.set_position(runner.records_done());
        }
    })
    .await;
    node.finish().await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let Some(summary) = summary else {
        let job = ctx.store.get_job(&job_id).await?;
        let status = job.map(|j| j.status.as_str()).unwrap_or("unknown");
        bail!(
            "job {job_id} did not finish here ({status}): `intake jobs show {job_id}` says why; a retrying job is \
             resumed by a running daemon"
        );
    };
    let names = intake::mailbox::ReportNames::of(file_name, false);
    let outbox = layout.outbox(avid);
    match &summary.error {
        Some(e) => println!("{}: {}: {}: {}", summary.file, summary.status, e.code, e.message),
        None => println!(
            "{}: {} rows: {} created, {} updated, {} unchanged, {} failed",
            summary.file, summary.rows, summary.created, summary.updated, summary.unchanged, summary.failed
        ),
    }
    println!("report: {}", outbox.join(&names.results).display());
    if summary.failed > 0 {
        println!("failed records: {}", outbox.join(&names.failed).display());
    }
    println!("summary: {}", outbox.join(&names.summary).display());
    Ok(ExitCode::SUCCESS)
}

async fn account(config: &Config, cmd: AccountCommand) -> Result<ExitCode> {
    let store = open_store(config).await?;
    match cmd {
        AccountCommand::Add(a) => {
            let settings = a.applied_to(AccountSettings::new(AccountId::parse(&a.avid)?))?;
            ops_cli::check_webhook_args(&a.webhook)?;
            let presets = a.presets.as_deref().map(presets_of).transpose()?;
            store.add_account(&settings).await?;
            if let Some(presets) = presets {
                store.set_presets(&a.avid, &presets).await?;
            }
            Layout::new(&config.data_dir).ensure_account(&a.avid).context("while creating the account's folders")?;
            println!("added account {}", a.avid);
            ops_cli::apply_webhook(&store, &a.avid, &a.webhook).await?;
        }
        AccountCommand::Set(a) => {
            let current = store.get_account(&a.avid).await?.with_context(|| format!("no account `{}`", a.avid))?;
            let settings = a.applied_to(current)?;
            ops_cli::check_webhook_args(&a.webhook)?;
            let presets = a.presets.as_deref().map(presets_of).transpose()?;
            store.put_account(&settings).await?;
            if let Some(presets) = presets {
                store.set_presets(&a.avid, &presets).await?;
            }
            ops_cli::apply_webhook(&store, &a.avid, &a.webhook).await?;
            println!("updated account {}", a.avid);
        }
        AccountCommand::List => {
            println!("{:<24} {:<8} {:<14} {:<11} REPORT_BOM", "AVID", "REGION", "ENCODING", "PHONE_CHECK");
            for a in store.list_accounts().await? {
                let region = a.default_region.map(|r| r.code()).unwrap_or_else(|| "-".into());
                let bom = if a.report_bom { "yes" } else { "no" };
                println!(
                    "{:<24} {:<8} {:<14} {:<11} {bom}",
                    a.avid,
                    region,
                    a.encoding.as_str(),
                    a.phone_check.as_str()
                );
            }
        }
        AccountCommand::Remove { avid } => {
            store.remove_account(&avid).await?;
            println!("removed account {avid} and its SFTP users; its customers and files are kept");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A `--presets` value: names, `all` or `none`.
fn presets_of(raw: &str) -> Result<Vec<String>> {
    intake::domain::mapping::presets::parse_list(raw).map_err(anyhow::Error::msg)
}

async fn user(config: &Config, cmd: UserCommand) -> Result<ExitCode> {
    let store = open_store(config).await?;
    match cmd {
        UserCommand::Add { username, account, keys, password_stdin, scopes } => {
            let mut public_keys = Vec::new();
            for path in &keys {
                public_keys.extend(intake::sftp::read_authorized_keys(path)?);
            }
            let password_hash = if password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).context("while reading the password")?;
                let password = line.trim_end_matches(['\n', '\r']);
                if password.is_empty() {
                    bail!("the password read from standard input is empty");
                }
                Some(intake::sftp::hash_password(password)?)
            } else {
                None
            };
            if public_keys.is_empty() && password_hash.is_none() {
                bail!("give the user a way to log in: --key FILE and/or --password-stdin");
            }
            let scopes =
                if scopes.is_empty() { Scopes::ALL } else { Scopes::parse(scopes.iter().map(String::as_str))? };
            store
                .add_user(&SftpUser {
                    username: username.clone(),
                    account: AccountId::parse(&account)?,
                    public_keys,
                    password_hash,
                    scopes,
                })
                .await?;
            println!("added user {username}");
        }
        UserCommand::List => {
            println!("{:<24} {:<24} {:<5} {:<9} SCOPES", "USERNAME", "ACCOUNT", "KEYS", "PASSWORD");
            for u in store.list_users().await? {
                let password = if u.password_hash.is_some() { "yes" } else { "no" };
                println!(
                    "{:<24} {:<24} {:<5} {:<9} {}",
                    u.username,
                    u.account,
                    u.public_keys.len(),
                    password,
                    u.scopes.names().join(" ")
                );
            }
        }
        UserCommand::Remove { username } => {
            store.remove_user(&username).await?;
            println!("removed user {username}");
        }
    }
    Ok(ExitCode::SUCCESS)
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
