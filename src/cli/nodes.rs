//! `intake nodes`: the nodes sharing this database, live or not, their last
//! heartbeat and the jobs they run.

use anyhow::Result;
use clap::Args;
use intake::config::Config;
use intake::store::Store;
use serde_json::Value;
use std::process::ExitCode;

#[derive(Args)]
pub struct NodesArgs {
    /// Stopped nodes too.
    #[arg(long)]
    pub all: bool,
    #[arg(long)]
    pub json: bool,
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
