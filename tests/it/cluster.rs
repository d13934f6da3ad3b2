//! Two `intake serve` nodes behind haproxy (TCP mode, one loopback address),
//! one PostgreSQL database, one data directory: a node killed mid-job, a
//! node frozen past the takeover time, a node starting while the other has
//! uploads in flight, a rolling restart under load, login failures counted
//! by both nodes. Real processes, real clients (OpenSSH sftp, paramiko),
//! the real haproxy from Debian.

use crate::support::{describe, eventually, read_results, TestAccount, TestDaemon, TestDb};
use intake::store::JobStatus;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const ACCOUNTS: usize = 10;
/// haproxy's own source address toward the nodes; the nodes trust its PROXY headers.
const BALANCER: &str = "127.0.0.2";
const REPORT: Duration = Duration::from_secs(300);

/// A free loopback port (bound, then released for the node to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Haproxy {
    child: Child,
    port: u16,
}

impl Haproxy {
    async fn start(dir: &Path, backends: &[u16]) -> Haproxy {
        let port = free_port();
        let mut cfg = format!(
            "global\n  maxconn 2000\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10m\n  timeout server 10m\n  \
             retries 3\n  option redispatch\n\
             frontend sftp\n  bind 127.0.0.1:{port}\n  default_backend nodes\n\
             backend nodes\n  balance roundrobin\n  option tcp-check\n  tcp-check expect string SSH-2.0\n"
        );
        for (i, b) in backends.iter().enumerate() {
            // From a loopback address of its own, announcing each client
            // with a PROXY v2 header (its health checks too).
            cfg += &format!(
                "  server n{i} 127.0.0.1:{b} source {BALANCER} send-proxy-v2 check check-send-proxy \
                 inter 300ms fall 1 rise 1\n"
            );
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let haproxy = ["/usr/sbin/haproxy", "haproxy"]
            .into_iter()
            .find(|h| which(h))
            .expect("haproxy is not installed: .ci/run installs Debian's haproxy package (apt-get install haproxy)");
        let child = Command::new(haproxy)
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("haproxy starts");
        eventually(Duration::from_secs(20), "haproxy to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .await;
        Haproxy { child, port }
    }
}

fn which(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).exists()))
}

/// Two nodes on one database and one data directory, each with its own
/// node id, its own fixed SFTP port (so haproxy finds it after a restart)
/// and its own log.
struct Cluster {
    db: TestDb,
    nodes: Vec<TestDaemon>,
    proxy: Haproxy,
    _temp: tempfile::TempDir,
    root: PathBuf,
}

fn accounts() -> Vec<TestAccount> {
    (0..ACCOUNTS).map(|i| TestAccount::new(&format!("m{i:02}"))).collect()
}

impl Cluster {
    async fn start(db: TestDb) -> Cluster {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().to_path_buf();
        let shared_data = root.join("shared-data");
        let mut nodes = Vec::new();
        let ports = [free_port(), free_port()];
        let trusted = format!("[\"{BALANCER}\"]");
        for (i, port) in ports.iter().enumerate() {
            let dir = root.join(format!("node-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            if i > 0 {
                // One key for every user, whichever node applies the config.
                for f in ["id_ed25519", "id_ed25519.pub"] {
                    std::fs::copy(root.join("node-0").join(f), dir.join(f)).unwrap();
                }
            }
            let node_id = format!("node-{}", ["a", "b"][i]);
            let listen = format!("127.0.0.1:{port}");
            let env = [
                ("INTAKE_CLUSTER__NODE_ID", node_id.as_str()),
                ("INTAKE_SFTP__LISTEN", listen.as_str()),
                ("INTAKE_BATCH_SIZE", "250"),
                ("INTAKE_SFTP__MAX_CONNECTIONS_PER_SOURCE", "200"),
                ("INTAKE_SFTP__MAX_STARTUPS", "100:30:200"),
                ("INTAKE_SFTP__MAX_LOGIN_FAILURES_PER_SOURCE", "3"),
                ("INTAKE_SFTP__PROXY_PROTOCOL_FROM", &trusted),
            ];
            let mut node = TestDaemon::prepare(&dir, &db, &accounts(), &env);
            node.data_dir = shared_data.clone();
            for (k, v) in &mut node.env {
                if k == "INTAKE_DATA_DIR" {
                    *v = shared_data.display().to_string();
                }
            }
            node.start().await;
            nodes.push(node);
        }
        let proxy = Haproxy::start(&root, &ports).await;
        Cluster { db, nodes, proxy, _temp: temp, root }
    }

    fn key(&self) -> &Path {
        &self.nodes[0].key
    }

    fn outbox(&self, avid: &str) -> PathBuf {
        self.nodes[0].outbox(avid)
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            all += &format!("--- node {i} ---\n{}\n", n.log());
        }
        all + &std::fs::read_to_string(self.root.join("haproxy.log")).unwrap_or_default()
    }

    /// The node table as `intake nodes --json` shows it.
    async fn nodes_json(&self) -> Vec<serde_json::Value> {
        let out = self.nodes[0].cli(&["nodes", "--json"], "").await;
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The running jobs each node id owns, from the database.
    async fn owned(&self) -> HashMap<String, Vec<String>> {
        let store = self.db.store().await;
        store
            .list_nodes()
            .await
            .unwrap()
            .into_iter()
            .map(|n| (n.node_id, n.jobs.into_iter().map(|j| j.job_id).collect()))
            .collect()
    }
}

/// `rows` customers with refs `PREFIX0…`, one per line.
fn write_file(path: &Path, prefix: &str, rows: usize) {
    crate::support::write_customers(path, prefix, rows);
}

/// Uploads through `port` with OpenSSH sftp, retrying a failed attempt
/// (a node going away under it) as a cron script would; returns the
/// attempts made.
async fn upload_with_retry(dir: &Path, key: &Path, port: u16, user: &str, local: &Path, remote: &str) -> u32 {
    for attempt in 1..=6 {
        let out = crate::support::openssh_sftp(
            dir,
            key,
            &port.to_string(),
            user,
            &format!("put {} /customers/{remote}\n", local.display()),
        )
        .await;
        if out.status.success() {
            return attempt;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{remote} could not be uploaded through haproxy in 6 attempts");
}

/// Every file's summary is complete and right, and the customers table
/// holds exactly the refs of all files.
async fn check_reports(c: &Cluster, files: &BTreeMap<(String, String), usize>) {
    let store = c.db.store().await;
    let deadline = Instant::now() + REPORT;
    loop {
        let open: Vec<_> = store
            .find_jobs(None, None, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|j| !j.status.is_final())
            .map(|j| format!("{}/{} {:?} {:?}", j.account, j.file_name, j.status, j.phase))
            .collect();
        if open.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let logs: String = c.logs().lines().filter(|l| !l.contains(" INFO ")).collect::<Vec<_>>().join("\n");
            panic!("jobs left unfinished: {open:?}\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut per_account: BTreeMap<&str, u64> = BTreeMap::new();
    for ((avid, stem), rows) in files {
        let summary = c.nodes[0].summary(avid, stem, REPORT).await;
        assert_eq!(summary["status"], "completed", "{avid}/{stem}: {summary}\n{}", c.logs());
        assert_eq!(summary["rows"], *rows as u64, "{avid}/{stem}: {summary}");
        assert_eq!(summary["created"], *rows as u64, "{avid}/{stem}: each row once, created: {summary}");
        let results = read_results(&c.outbox(avid).join(format!("{stem}.results.csv")));
        assert_eq!(results.len(), rows + 1, "{avid}/{stem}: the report has every row");
        assert!(results[1..].iter().all(|r| r[2] == "created"), "{avid}/{stem}: every row created once");
        *per_account.entry(avid).or_default() += *rows as u64;
    }
    for (avid, rows) in per_account {
        assert_eq!(store.count_customers(avid).await.unwrap(), rows, "{avid}: the table holds what the reports say");
    }
}

/// Polls an async condition until it holds.
async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Jobs per (account, file name), from the database.
async fn jobs_per_file(db: &TestDb) -> HashMap<(String, String), usize> {
    let store = db.store().await;
    let mut count = HashMap::new();
    for j in store.find_jobs(None, None, 10_000).await.unwrap() {
        *count.entry((j.account.clone(), j.file_name.clone())).or_default() += 1;
    }
    count
}

/// 20 clients upload 100 files through haproxy; node A is killed with
/// SIGKILL while it runs jobs; node B finishes them, every report is
/// complete, the table holds exactly what the reports say, and each upload
/// was processed once.
async fn a_node_killed_mid_job_loses_nothing(c: &mut Cluster) {
    const CLIENTS: usize = 20;
    const FILES_PER_CLIENT: usize = 5;
    const ROWS: usize = 1_500;
    let files_dir = c.root.join("files");
    std::fs::create_dir_all(&files_dir).unwrap();
    let mut files = BTreeMap::new();
    let mut plan = Vec::new();
    for client in 0..CLIENTS {
        let avid = format!("m{:02}", client % ACCOUNTS);
        for f in 0..FILES_PER_CLIENT {
            let stem = format!("c{client:02}-f{f}");
            let local = files_dir.join(format!("{stem}.csv"));
            write_file(&local, &format!("{stem}-"), ROWS);
            files.insert((avid.clone(), stem.clone()), ROWS);
            plan.push((client, avid.clone(), stem, local));
        }
    }
    let (key, port, dir) = (c.key().to_path_buf(), c.proxy.port, c.root.clone());
    let attempts = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let mine: Vec<_> = plan.iter().filter(|p| p.0 == client).cloned().collect();
        let (key, dir, attempts) = (key.clone(), dir.clone(), attempts.clone());
        clients.push(tokio::spawn(async move {
            for (_, avid, stem, local) in mine {
                let n = upload_with_retry(&dir, &key, port, &avid, &local, &format!("{stem}.csv")).await;
                attempts.lock().unwrap().insert((avid, format!("{stem}.csv")), n);
            }
        }));
    }
    // Node A owns running jobs: kill it. The jobs are the ones seen in the
    // same look that found them (a second look may find them done).
    let deadline = Instant::now() + REPORT;
    let lost = loop {
        let running = c.owned().await.remove("node-a").unwrap_or_default();
        if !running.is_empty() {
            break running;
        }
        assert!(Instant::now() < deadline, "timed out waiting for node A to run jobs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed = Instant::now();
    c.nodes[0].kill9().await;
    // Every job A owned is taken over by B (or done) within the takeover time.
    loop {
        let store = c.db.store().await;
        let mut pending = 0;
        for id in &lost {
            let job = store.get_job(id).await.unwrap().unwrap();
            let taken = c.owned().await.get("node-b").is_some_and(|j| j.contains(id));
            if !taken && !job.status.is_final() {
                pending += 1;
            }
        }
        if pending == 0 {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "B took A's jobs over too late\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let takeover = killed.elapsed();
    wait_until(Duration::from_secs(10), "the dead node marked stopped", || async {
        c.nodes_json().await.iter().all(|n| n["node_id"] != "node-a")
    })
    .await;
    eprintln!("takeover after kill -9: {:.1} s for {} jobs", takeover.as_secs_f64(), lost.len());
    for client in clients {
        client.await.unwrap();
    }
    check_reports(c, &files).await;
    let jobs = jobs_per_file(&c.db).await;
    for ((avid, file), tries) in attempts.lock().unwrap().iter() {
        let n = jobs.get(&(avid.clone(), file.clone())).copied().unwrap_or(0);
        assert!(n >= 1, "{avid}/{file} was processed");
        // A retried upload may have been published before its connection
        // broke; one that went through at once is processed exactly once.
        if *tries == 1 {
            assert_eq!(n, 1, "{avid}/{file}: uploaded once, processed once");
        }
    }
    c.nodes[0].start().await;
}

/// The index of the node that runs `job_id` now, if any.
async fn runner_of(c: &Cluster, job_id: &str) -> Option<usize> {
    let owned = c.owned().await;
    ["node-a", "node-b"].iter().position(|n| owned.get(*n).is_some_and(|j| j.iter().any(|id| id == job_id)))
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

/// The node running a job is frozen (SIGSTOP) past the takeover time: the
/// other takes the job over and publishes the report; the frozen one,
/// woken (SIGCONT), publishes nothing for the job it lost.
async fn a_frozen_node_that_wakes_up_publishes_nothing(c: &mut Cluster) {
    const ROWS: usize = 40_000;
    let local = c.root.join("frozen.csv");
    write_file(&local, "z-", ROWS);
    let attempts = upload_with_retry(&c.root, c.key(), c.proxy.port, "m00", &local, "frozen.csv").await;
    assert_eq!(attempts, 1);
    let store = c.db.store().await;
    let deadline = Instant::now() + REPORT;
    let (job_id, owner) = loop {
        let jobs = store.find_jobs(Some("m00"), Some(JobStatus::Running), 10).await.unwrap();
        if let Some(j) = jobs.into_iter().find(|j| j.file_name == "frozen.csv" && j.progress.records_done > 0) {
            let job_id = j.job_id.to_string();
            if let Some(owner) = runner_of(c, &job_id).await {
                break (job_id, owner);
            }
        }
        assert!(Instant::now() < deadline, "the frozen.csv job did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let other = 1 - owner;
    signal(c.nodes[owner].pid(), libc::SIGSTOP);
    let frozen = Instant::now();
    wait_until(Duration::from_secs(60), "the other node to take the job over", || async {
        runner_of(c, &job_id).await == Some(other)
            || store.get_job(&job_id).await.unwrap().is_some_and(|j| j.status.is_final())
    })
    .await;
    eprintln!("takeover of a frozen node's job: {:.1} s", frozen.elapsed().as_secs_f64());
    let summary = c.nodes[other].summary("m00", "frozen", REPORT).await;
    assert_eq!(summary["created"], ROWS as u64, "{summary}");
    let outbox = c.outbox("m00");
    let published: Vec<_> =
        ["frozen.results.csv", "frozen.summary.json"].iter().map(|f| std::fs::read(outbox.join(f)).unwrap()).collect();
    signal(c.nodes[owner].pid(), libc::SIGCONT);
    // The woken node finishes its batch, finds the job is not its own any
    // more, and goes on with other work.
    tokio::time::sleep(Duration::from_secs(8)).await;
    for (f, before) in ["frozen.results.csv", "frozen.summary.json"].iter().zip(&published) {
        assert_eq!(&std::fs::read(outbox.join(f)).unwrap(), before, "{f} untouched by the woken node\n{}", c.logs());
    }
    assert!(!outbox.join("frozen.progress.json").exists(), "no progress file brought back");
    let rows = read_results(&outbox.join("frozen.results.csv"));
    assert_eq!(rows.len(), ROWS + 1);
    assert!(rows[1..].iter().all(|r| r[2] == "created"));
    assert!(c.nodes[owner].is_running(), "the woken node runs on");
}

/// A node starting while the other has an upload in flight (a client
/// holding the file open half written) deletes none of it.
async fn a_node_starting_deletes_no_upload_in_flight(c: &mut Cluster) {
    let local = c.root.join("inflight.csv");
    write_file(&local, "i-", 2_000);
    let go = c.root.join("go");
    let script = format!(
        "import os, sys, time, paramiko\n\
         t = paramiko.Transport(('127.0.0.1', {port}))\n\
         t.connect(username='m01', pkey=paramiko.Ed25519Key.from_private_key_file({key:?}))\n\
         s = paramiko.SFTPClient.from_transport(t)\n\
         data = open({local:?}, 'rb').read()\n\
         f = s.open('/customers/inflight.csv', 'wb')\n\
         f.write(data[:len(data) // 2]); f.flush()\n\
         while not os.path.exists({go:?}): time.sleep(0.05)\n\
         f.write(data[len(data) // 2:]); f.close(); s.close(); t.close()\n",
        port = c.nodes[1].port(),
        key = c.key().display().to_string(),
        local = local.display().to_string(),
        go = go.display().to_string(),
    );
    let mut client = Command::new("python3").arg("-c").arg(script).kill_on_drop(true).spawn().unwrap();
    let customers = c.nodes[1].customers("m01");
    let temp_of_b = || {
        std::fs::read_dir(&customers).ok()?.flatten().find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            intake::mailbox::is_upload_temp_of(&name, "node-b").then_some(e.path())
        })
    };
    let temp = eventually(Duration::from_secs(30), "node B's upload temp", temp_of_b).await;
    // Node A restarts: its start-up cleanup runs.
    c.nodes[0].terminate().await;
    c.nodes[0].start().await;
    assert!(temp.exists(), "node A's start deleted node B's upload in flight\n{}", c.logs());
    std::fs::write(&go, "").unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), client.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the client's upload succeeded");
    let summary = c.nodes[0].summary("m01", "inflight", REPORT).await;
    assert_eq!(summary["created"], 2_000, "{summary}");
}

/// SIGTERM A, start A, SIGTERM B, start B under a steady upload load
/// through haproxy: no upload is lost, no client needs more than one retry.
async fn a_rolling_restart_loses_no_upload(c: &mut Cluster) {
    const CLIENTS: usize = 6;
    const ROWS: usize = 500;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (key, dir, port, stop) = (c.key().to_path_buf(), c.root.clone(), c.proxy.port, stop.clone());
        clients.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let avid = format!("m{:02}", client % ACCOUNTS);
            let mut n = 0;
            while !stop.is_cancelled() {
                let stem = format!("roll-{client}-{n}");
                let local = dir.join(format!("{stem}.csv"));
                write_file(&local, &format!("{stem}-"), ROWS);
                let tries = upload_with_retry(&dir, &key, port, &avid, &local, &format!("{stem}.csv")).await;
                done.push((avid.clone(), stem, tries));
                n += 1;
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in [0, 1] {
        let status = c.nodes[i].terminate().await;
        assert!(status.success(), "node {i} stopped cleanly: {status:?}\n{}", c.logs());
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.nodes[i].start().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    stop.cancel();
    let mut files = BTreeMap::new();
    let mut retried = 0;
    for client in clients {
        for (avid, stem, tries) in client.await.unwrap() {
            assert!(tries <= 2, "{avid}/{stem} needed {tries} attempts: more than a reconnect\n{}", c.logs());
            retried += (tries > 1) as usize;
            files.insert((avid, stem), ROWS);
        }
    }
    eprintln!("rolling restart: {} uploads, {retried} needed a reconnect", files.len());
    assert!(files.len() >= 2 * CLIENTS, "uploads went on during the restart");
    for ((avid, stem), rows) in &files {
        let summary = c.nodes[0].summary(avid, stem, REPORT).await;
        assert_eq!(summary["created"], *rows as u64, "{avid}/{stem}: {summary}");
    }
}

/// OpenSSH sftp from loopback address `from` to `port`, logging in as `user`
/// with the test key, running no command.
async fn login_from(c: &Cluster, from: &str, port: u16, user: &str) -> std::process::Output {
    Command::new("sftp")
        .args(["-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o"])
        .arg(format!("BindAddress={from}"))
        .args(["-F", "/dev/null", "-i"])
        .arg(c.key())
        .args(["-P", &port.to_string(), "-b", "/dev/null"])
        .arg(format!("{user}@127.0.0.1"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

/// A source that fails logins on node A is refused on node B too; behind
/// haproxy the nodes see each client's own address (PROXY protocol), so a
/// guessing client is refused and the others are not.
async fn login_failures_count_on_every_node(c: &mut Cluster) {
    let port = |n: usize| c.nodes[n].port().parse::<u16>().unwrap();
    // Its own loopback source address, so no other client is refused.
    for n in [0, 1] {
        let out = login_from(c, "127.0.0.7", port(n), "m02").await;
        assert!(out.status.success(), "node {n}: {}", describe(&out));
    }
    // Three failed logins (an unknown user, whose key is refused) on node A.
    for _ in 0..3 {
        assert!(!login_from(c, "127.0.0.7", port(0), "nobody").await.status.success());
    }
    let out = login_from(c, "127.0.0.7", port(1), "m02").await;
    assert!(!out.status.success(), "node B refused the source node A penalised\n{}", c.logs());
    assert!(c.nodes[1].log().contains("127.0.0.7"), "node B logged the refused source");
    let out = login_from(c, "127.0.0.1", port(1), "m02").await;
    assert!(out.status.success(), "another source still gets in on node B: {}", describe(&out));

    // Through haproxy: the guesser is refused on whichever node it reaches,
    // the next client through the same balancer is not.
    for _ in 0..3 {
        assert!(!login_from(c, "127.0.0.8", c.proxy.port, "nobody").await.status.success());
    }
    // A refused key counts when its session ends, and for the other nodes
    // once a task has written it: the client can be back first (CI saw the
    // guesser get in on the node that had counted two of the three).
    let counted = Instant::now() + Duration::from_secs(5);
    while login_from(c, "127.0.0.8", c.proxy.port, "m02").await.status.success() {
        assert!(Instant::now() < counted, "the guessing client is refused through haproxy\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..2 {
        let out = login_from(c, "127.0.0.8", c.proxy.port, "m02").await;
        assert!(!out.status.success(), "the guessing client is refused through haproxy\n{}", c.logs());
        let out = login_from(c, "127.0.0.9", c.proxy.port, "m02").await;
        assert!(out.status.success(), "another client through haproxy gets in: {}\n{}", describe(&out), c.logs());
    }
    let logs = c.logs();
    assert!(logs.contains("127.0.0.8") && logs.contains("127.0.0.9"), "the nodes logged the clients' own addresses");
}

/// `intake nodes` lists both nodes live with their last heartbeats.
async fn intake_nodes_lists_both(c: &mut Cluster) {
    let nodes = c.nodes_json().await;
    let ids: Vec<_> = nodes.iter().map(|n| n["node_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["node-a", "node-b"], "{nodes:?}");
    for n in &nodes {
        assert_eq!(n["state"], "live", "{n}");
        assert!(n["heartbeat_age_secs"].as_f64().unwrap() < 12.0, "{n}");
        assert!(n["sftp_addr"].as_str().is_some(), "{n}");
    }
    let out = c.nodes[0].cli(&["nodes"], "").await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("node-a") && text.contains("live"), "{text}");
}

/// One cluster through every scenario, in order (each leaves both nodes running).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_behind_haproxy() {
    let Some(db) = TestDb::postgres().await else { return };
    let mut c = Cluster::start(db).await;
    intake_nodes_lists_both(&mut c).await;
    login_failures_count_on_every_node(&mut c).await;
    a_node_killed_mid_job_loses_nothing(&mut c).await;
    a_frozen_node_that_wakes_up_publishes_nothing(&mut c).await;
    a_node_starting_deletes_no_upload_in_flight(&mut c).await;
    a_rolling_restart_loses_no_upload(&mut c).await;
    drop(c.proxy.child.start_kill());
}

/// A second process given a node id a live one holds refuses to start,
/// saying why; once the first has stopped, the id is free again, and the
/// nodes table says who ran.
async fn a_node_id_is_held_by_one_live_process(db: TestDb) {
    let settings = [("INTAKE_CLUSTER__NODE_ID", "solo")];
    let mut first = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &settings).await;
    let mut env: Vec<(&str, &str)> = first.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("INTAKE_SFTP__LISTEN", "127.0.0.1:0"));
    let config = first.config.display().to_string();
    let second = crate::support::intake(&["serve", "--config", &config], &env, &first.dir).await;
    assert!(!second.status.success(), "{}", describe(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("node id `solo` is held by another running intake process"), "{stderr}");
    assert!(first.is_running(), "the first goes on");
    let out = first.cli(&["nodes", "--json"], "").await;
    let nodes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["node_id"], "solo");
    assert_eq!(nodes[0]["state"], "live");
    assert_eq!(nodes[0]["pid"], first.pid());
    assert!(first.terminate().await.success());
    let out = first.cli(&["nodes", "--all", "--json"], "").await;
    let nodes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes[0]["state"], "stopped", "{nodes:?}");
    first.start().await;
    assert!(first.is_running(), "the id is free once its process stopped");
}

crate::on_both_backends!(a_node_id_is_held_by_one_live_process);
