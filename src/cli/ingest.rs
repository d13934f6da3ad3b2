//! `intake ingest`: a file processed without SFTP, through the same arrival
//! and driver as the daemon's, with a progress bar on a terminal.

use anyhow::{bail, Context as _, Result};
use intake::config::Config;
use intake::domain::shown::printable;
use intake::domain::user::Scopes;
use intake::ingest::arrival::{self, Arrival, Take, Uploader};
use intake::ingest::{driver, Context};
use intake::mailbox::Layout;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

pub async fn ingest_file(config: &Config, file: &Path, avid: &str, may_update: bool) -> Result<ExitCode> {
    let store = super::open_store(config).await?;
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
        mapping: None,
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
        Some(e) => println!("{}: {}: {}: {}", printable(&summary.file), summary.status, e.code, printable(&e.message)),
        None => println!(
            "{}: {} rows: {} created, {} updated, {} unchanged, {} failed",
            printable(&summary.file),
            summary.rows,
            summary.created,
            summary.updated,
            summary.unchanged,
            summary.failed
        ),
    }
    let path = |name: &str| printable(&outbox.join(name).display().to_string()).into_owned();
    println!("report: {}", path(&names.results));
    if summary.failed > 0 {
        println!("failed records: {}", path(&names.failed));
    }
    println!("summary: {}", path(&names.summary));
    Ok(ExitCode::SUCCESS)
}
