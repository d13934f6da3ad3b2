//! `intake jobs`: recent uploads with status and counts (`--status`,
//! `--json`), `show` one, `retry` an aborted one.

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use intake::config::Config;
use intake::domain::shown::printable;
use intake::ingest::{self, Context};
use intake::mailbox::{archive_name, Layout, ReportNames};
use intake::store::{Job, JobStatus, Store};
use serde_json::{json, Value};
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
            printable(&if j.kind.is_dry_run() { format!("/validate/{}", j.file_name) } else { j.file_name.clone() })
        );
        match j.status {
            JobStatus::Retrying => println!(
                "    next try at {}; last error: {}",
                j.retry_at.map(intake::clock::format_rfc3339).as_deref().unwrap_or("-"),
                printable(j.last_error.as_deref().unwrap_or("-"))
            ),
            JobStatus::Aborted => println!("    {}", printable(j.error_message.as_deref().unwrap_or("-"))),
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
        Some(d) => super::webhooks::delivery_json(d),
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
                    println!("  {:<16} {}", printable(&k), plain(&v));
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
        Value::String(s) => printable(s).into_owned(),
        Value::Object(m) => {
            m.iter().map(|(k, v)| format!("{}={}", printable(k), plain(v))).collect::<Vec<_>>().join(" ")
        }
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
        mapping: None,
    };
    let new = ingest::arrival::arrive(&ctx, arrival).await;
    node.finish().await;
    let new = new?;
    println!(
        "job {} queued: a retry of {job_id} ({} of account {})",
        new.job_id,
        printable(&job.file_name),
        job.account
    );
    Ok(ExitCode::SUCCESS)
}
