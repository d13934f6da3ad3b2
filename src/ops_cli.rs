//! The operator's commands: `intake jobs` (list, `show`,
//! `retry`, `--status`, `--json`), `intake account set` (the webhook),
//! `intake webhooks list` and `intake webhook test`.

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use intake::config::Config;
use intake::ingest::{self, Context};
use intake::mailbox::{archive_name, Layout, ReportNames};
use intake::store::{Delivery, Job, JobStatus, Store, WebhookSecret};
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct JobsArgs {
    #[command(subcommand)]
    command: Option<JobsCommand>,
    #[arg(long)]
    account: Option<String>,
    /// arriving, queued, running, retrying, completed, rejected or aborted.
    #[arg(long)]
    status: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// One JSON array on standard output, for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Every field of one job, its attempts, last error, files and webhook state.
    Show {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Process an aborted job's archived upload again, as a new job.
    Retry { job: String },
}

/// The webhook options of `intake account add` and `intake account set`.
#[derive(Args)]
pub struct WebhookArgs {
    /// Where a finished job's summary is POSTed (https:// in production).
    #[arg(long)]
    webhook_url: Option<String>,
    /// Read the webhook's signing secret from standard input (one line).
    #[arg(long)]
    webhook_secret_stdin: bool,
    /// Stop sending webhooks for this account.
    #[arg(long, conflicts_with_all = ["webhook_url", "webhook_secret_stdin"])]
    no_webhook: bool,
}

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Webhook events not delivered yet, and those given up.
    List {
        #[arg(long)]
        account: Option<String>,
        /// Delivered events too.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct NodesArgs {
    /// Stopped nodes too.
    #[arg(long)]
    pub all: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Send a signed test event to the account's webhook now and show the answer.
    Test { avid: String },
}

pub async fn jobs(config: &Config, store: Store, args: JobsArgs) -> Result<ExitCode> {
    match args.command {
        Some(JobsCommand::Show { job, json }) => show_job(config, &store, &job, json).await,
        Some(JobsCommand::Retry { job }) => retry_job(config, store, &job).await,
        None => {
            let status = args.status.as_deref().map(JobStatus::parse).transpose().map_err(|_| {
                anyhow::anyhow!("--status takes arriving, queued, running, retrying, completed, rejected or aborted")
            })?;
            let jobs = store.find_jobs(args.account.as_deref(), status, args.limit).await?;
            if args.json {
                let all: Vec<Value> = jobs.iter().map(job_json).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print_jobs(config, &jobs);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_jobs(config: &Config, jobs: &[Job]) {
    println!(
        "{:<36} {:<16} {:<26} {:>9} {:>8} {:>8} {:>9} {:>7}  {:<20} FILE",
        "JOB", "ACCOUNT", "STATUS", "ROWS", "CREATED", "UPDATED", "UNCHANGED", "FAILED", "RECEIVED"
    );
    for j in jobs {
        let p = j.progress;
        let status = match (&j.error_code, j.status) {
            (Some(code), _) => format!("{} ({code})", j.status.as_str()),
            (None, JobStatus::Retrying) => format!("retrying ({} of {})", j.retries, config.max_job_retries),
            (None, _) => j.status.as_str().to_owned(),
        };
        println!(
            "{:<36} {:<16} {:<26} {:>9} {:>8} {:>8} {:>9} {:>7}  {:<20} {}",
            j.job_id,
            j.account,
            status,
            p.records_done,
            p.created,
            p.updated,
            p.unchanged,
            p.failed,
            intake::clock::format_rfc3339(j.received_at),
            if j.kind.is_dry_run() { format!("/validate/{}", j.file_name) } else { j.file_name.clone() }
        );
        match j.status {
            JobStatus::Retrying => println!(
                "    next try at {}; last error: {}",
                j.retry_at.map(intake::clock::format_rfc3339).as_deref().unwrap_or("-"),
                j.last_error.as_deref().unwrap_or("-")
            ),
            JobStatus::Aborted => println!("    {}", j.error_message.as_deref().unwrap_or("-")),
            _ => {}
        }
    }
}

/// Every stored field of a job.
fn job_json(j: &Job) -> Value {
    let p = j.progress;
    json!({
        "job_id": j.job_id.as_str(),
        "account": j.account,
        "file": j.file_name,
        "kind": if j.kind.is_dry_run() { "validation" } else { "import" },
        "status": j.status.as_str(),
        "phase": j.phase.as_str(),
        "received_at": intake::clock::format_rfc3339(j.received_at),
        "started_at": j.started_at.map(intake::clock::format_rfc3339),
        "finished_at": j.finished_at.map(intake::clock::format_rfc3339),
        "sha256": j.sha256,
        "bytes": j.bytes,
        "rows_total": j.rows_total,
        "rows": p.records_done,
        "created": p.created,
        "updated": p.updated,
        "unchanged": p.unchanged,
        "failed": p.failed,
        "error_code": j.error_code,
        "error_message": j.error_message,
        "uploader": j.uploader,
        "may_update": j.scopes.update,
        "attempts": j.attempts,
        "retries": j.retries,
        "retry_at": j.retry_at.map(intake::clock::format_rfc3339),
        "last_error": j.last_error,
        "spool_path": j.spool_path,
        "visible_path": j.visible_path,
        // The decided summary (what is published), once decided.
        "outcome": j.outcome.as_ref().and_then(|o| serde_json::to_value(o).ok()),
    })
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "delivery_id": d.delivery_id,
        "account": d.account,
        "job_id": d.job_id,
        "event": d.event,
        "url": d.url,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "created_at": d.created_at,
        "next_attempt_at": d.next_attempt_at,
        "last_attempt_at": d.last_attempt_at,
        "last_error": d.last_error,
        "delivered_at": d.delivered_at,
    })
}

/// Where a finished job's upload is archived.
fn archived_upload(layout: &Layout, job: &Job) -> PathBuf {
    let name = archive_name(&intake::clock::compact(job.received_at), &job.job_id, &job.file_name);
    layout.archive(&job.account).join(name)
}

async fn show_job(config: &Config, store: &Store, job_id: &str, as_json: bool) -> Result<ExitCode> {
    let Some(job) = store.get_job(job_id).await? else { bail!("no job {job_id}") };
    let layout = Layout::new(&config.data_dir);
    let names = ReportNames::of(&job.file_name, job.kind.is_dry_run());
    let outbox = layout.outbox(&job.account);
    let file_state = |path: PathBuf| json!({ "path": path.display().to_string(), "present": path.is_file() });
    let files = json!({
        "archived_upload": file_state(archived_upload(&layout, &job)),
        "results": file_state(outbox.join(&names.results)),
        "summary": file_state(outbox.join(&names.summary)),
        "failed": file_state(outbox.join(&names.failed)),
    });
    let deliveries = store.list_deliveries(None, Some(&job.job_id), true, 100).await?;
    let webhook = match deliveries.first() {
        Some(d) => delivery_json(d),
        None if store.get_webhook(&job.account).await?.is_some() && !job.status.is_final() => {
            json!({ "status": "not yet (the job has not ended)" })
        }
        None => Value::Null,
    };
    let mut shown = job_json(&job);
    shown["files"] = files;
    shown["webhook"] = webhook;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(ExitCode::SUCCESS);
    }
    let Value::Object(fields) = shown else { unreachable!("a job is shown as an object") };
    for (key, value) in fields {
        match value {
            Value::Object(inner) => {
                println!("{key}:");
                for (k, v) in inner {
                    println!("  {k:<16} {}", plain(&v));
                }
            }
            other => println!("{key:<18} {}", plain(&other)),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn plain(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Object(m) => m.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

async fn retry_job(config: &Config, store: Store, job_id: &str) -> Result<ExitCode> {
    let Some(job) = store.get_job(job_id).await? else { bail!("no job {job_id}") };
    if job.status != JobStatus::Aborted {
        bail!(
            "job {job_id} is {}: only an aborted job can be retried (a completed or rejected job has its report; \
             upload the file again to process it again)",
            job.status.as_str()
        );
    }
    let layout = Layout::new(&config.data_dir);
    let archived = archived_upload(&layout, &job);
    let spooled = PathBuf::from(&job.spool_path);
    let source = [archived, spooled].into_iter().find(|p| p.is_file()).with_context(|| {
        format!(
            "the upload of job {job_id} is no longer kept (retention deletes archived uploads after \
             [retention] archive_days = {} days); ask the merchant to upload {} again",
            config.retention.archive_days, job.file_name
        )
    })?;
    let node = intake::cluster::CommandNode::start(config, &store).await?;
    let ctx = Context::new(config, store, node.owner().to_owned());
    let uploader = ingest::arrival::Uploader::Operator { scopes: job.scopes };
    let arrival = ingest::arrival::Arrival {
        account: &job.account,
        source: &source,
        file_name: &job.file_name,
        kind: job.kind,
        uploader,
        take: ingest::arrival::Take::Copy,
        job_id: None,
    };
    let new = ingest::arrival::arrive(&ctx, arrival).await;
    node.finish().await;
    let new = new?;
    println!("job {} queued: a retry of {job_id} ({} of account {})", new.job_id, job.file_name, job.account);
    Ok(ExitCode::SUCCESS)
}

/// Refuses a webhook URL that is not http(s), before anything is written.
pub fn check_webhook_args(args: &WebhookArgs) -> Result<()> {
    if let Some(url) = &args.webhook_url {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("--webhook-url {url} is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("--webhook-url must be an http:// or https:// URL");
        }
    }
    Ok(())
}

/// Sets, changes (URL and/or secret) or removes an account's webhook as
/// the options say; without webhook options, leaves it as it is.
pub async fn apply_webhook(store: &Store, avid: &str, args: &WebhookArgs) -> Result<()> {
    if args.no_webhook {
        let had = store.remove_webhook(avid).await?;
        println!("{}", if had { format!("removed the webhook of {avid}") } else { format!("{avid} had no webhook") });
        return Ok(());
    }
    if args.webhook_url.is_none() && !args.webhook_secret_stdin {
        return Ok(());
    }
    let existing = store.get_webhook(avid).await?;
    let url = match (&args.webhook_url, &existing) {
        (Some(url), _) => url.clone(),
        (None, Some(w)) => w.url.clone(),
        (None, None) => bail!("{avid} has no webhook yet: give --webhook-url URL too"),
    };
    let secret = if args.webhook_secret_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("while reading the webhook secret")?;
        let secret = line.trim_end_matches(['\n', '\r']);
        if secret.is_empty() {
            bail!("the webhook secret read from standard input is empty");
        }
        WebhookSecret::new(secret.to_owned())
    } else {
        match existing {
            Some(w) => w.secret,
            None => bail!("a new webhook needs a signing secret: pipe it into --webhook-secret-stdin"),
        }
    };
    store.set_webhook(avid, &url, &secret).await?;
    println!("the webhook of {avid} is {url}");
    Ok(())
}

pub async fn webhooks(store: &Store, cmd: WebhooksCommand) -> Result<ExitCode> {
    let WebhooksCommand::List { account, all, limit, json } = cmd;
    let deliveries = store.list_deliveries(account.as_deref(), None, all, limit).await?;
    if json {
        let all: Vec<Value> = deliveries.iter().map(delivery_json).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<46} {:<16} {:<14} {:<10} {:>8}  {:<20} LAST ERROR",
        "DELIVERY", "ACCOUNT", "EVENT", "STATUS", "ATTEMPTS", "NEXT TRY"
    );
    for d in deliveries {
        let next = if d.status == intake::store::DeliveryStatus::Pending { d.next_attempt_at.as_str() } else { "-" };
        println!(
            "{:<46} {:<16} {:<14} {:<10} {:>8}  {:<20} {}",
            d.delivery_id,
            d.account,
            d.event,
            d.status.as_str(),
            d.attempts,
            next,
            d.last_error.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn webhook(config: &Config, store: Store, cmd: WebhookCommand) -> Result<ExitCode> {
    let WebhookCommand::Test { avid } = cmd;
    let Some(webhook) = store.get_webhook(&avid).await? else {
        bail!(
            "{avid} has no webhook; set one with `intake account set {avid} --webhook-url URL --webhook-secret-stdin`"
        )
    };
    let delivery = intake::webhooks::test_delivery(&avid, &webhook.url);
    let sender = intake::webhooks::Sender::new(store, config.webhooks.clone())?;
    match sender.send(&delivery).await {
        Ok(status) => {
            println!("delivered {} to {}: HTTP {status}", delivery.delivery_id, webhook.url);
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            println!("not delivered {} to {}: {why}", delivery.delivery_id, webhook.url);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `intake nodes`: each node's state as the others see it — `live` while
/// its heartbeat is younger than `[cluster] takeover_after_secs` (on the
/// database's clock), `silent` after that (its jobs are taken over), or
/// `stopped`.
pub async fn nodes(config: &Config, store: &Store, args: NodesArgs) -> Result<ExitCode> {
    let takeover = config.cluster.takeover_after().as_secs_f64();
    let state = |n: &intake::store::NodeInfo| match () {
        _ if n.stopped => "stopped",
        _ if n.heartbeat_age_secs < takeover => "live",
        _ => "silent",
    };
    let nodes: Vec<_> = store.list_nodes().await?.into_iter().filter(|n| args.all || !n.stopped).collect();
    if args.json {
        let all: Vec<Value> = nodes
            .iter()
            .map(|n| {
                let mut v = serde_json::to_value(n).unwrap_or_default();
                v["state"] = state(n).into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32} {:<8} {:>10} {:>10} {:<24} {:<10} {:>8} {:>5}  JOBS",
        "NODE", "STATE", "HEARTBEAT", "UP", "HOST", "VERSION", "PID", "RUNS"
    );
    for n in &nodes {
        let jobs: Vec<String> = n.jobs.iter().map(|j| format!("{} ({}/{})", j.job_id, j.account, j.file)).collect();
        println!(
            "{:<32} {:<8} {:>9.1}s {:>9.0}s {:<24} {:<10} {:>8} {:>5}  {}",
            n.node_id,
            state(n),
            n.heartbeat_age_secs,
            n.up_secs,
            n.host,
            n.version,
            n.pid,
            n.jobs.len(),
            if jobs.is_empty() { "-".to_owned() } else { jobs.join(", ") }
        );
    }
    if nodes.is_empty() {
        println!("(no node has started on this database{})", if args.all { "" } else { " or none runs" });
    }
    Ok(ExitCode::SUCCESS)
}
