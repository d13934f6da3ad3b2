#!/usr/bin/env python3
"""The web console's cost on big data (issue 24): time to first byte and the
daemon's memory for page 1 and the last page of the failed rows of a
10-million-row report, and for the jobs list of an account with 100,000 jobs.

The report is made here, not processed (processing 10 M rows is measured by
the ingest benchmarks): a small upload through the console becomes a real
job, then its outbox files are replaced by a results file of ROWS rows, all
failed, and a failed.csv of ROWS records (the job id kept, so the console
takes them as the job's). The 100,000 jobs are copies of that job's row in
SQLite. Each figure is the median of 5 requests after the first (the first
view of a job indexes its failed rows in one pass: timed on its own).

usage: bench/console.py [ROWS] [JOBS]      (default 10000000 100000)
env:   BIN (default target/release/intake),
       BACKEND (sqlite, the default, or postgres: a fresh database at PG_URL's server)
"""
import http.client, json, os, re, shutil, sqlite3, statistics, subprocess, sys, tempfile, time, uuid

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
JOBS = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
BIN = os.path.abspath(os.environ.get("BIN", "target/release/intake"))
BACKEND = os.environ.get("BACKEND", "sqlite")
PG_URL = os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PG_DB = f"intake_console_bench_{os.getpid()}"
PG_BASE = PG_URL.rsplit("/", 1)[0]


def psql(url, *sql):
    args = ["psql", "-qAt", url]
    for statement in sql:
        args += ["-c", statement]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def rss_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])


class Browser:
    def __init__(self, port):
        self.port, self.cookies = port, {}

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        t0 = time.perf_counter()
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        ttfb = time.perf_counter() - t0
        data = resp.read()
        total = time.perf_counter() - t0
        for k, v in resp.getheaders():
            if k.lower() == "set-cookie":
                name, value = v.split(";")[0].split("=", 1)
                self.cookies[name] = value
        conn.close()
        return resp.status, dict(resp.getheaders()), data.decode("utf-8", "replace"), ttfb, total


def csrf(page):
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


def main():
    work = tempfile.mkdtemp(prefix="intake-console-bench.")
    try:
        data = os.path.join(work, "data")
        config = os.path.join(work, "config.toml")
        with open(config, "w") as f:
            f.write('[sftp]\nenabled = false\n[http]\nenabled = false\n[api]\nlisten = "127.0.0.1:0"\n'
                    '[[accounts]]\navid = "bench"\n[[users]]\nusername = "bench"\naccount = "bench"\npassword = "bench"\n')
        env = dict(os.environ, INTAKE_DATA_DIR=data, INTAKE_LOG="warn")
        if BACKEND == "postgres":
            psql(PG_URL, f"DROP DATABASE IF EXISTS {PG_DB}", f"CREATE DATABASE {PG_DB}")
            env["INTAKE_DATABASE_URL"] = f"{PG_BASE}/{PG_DB}"
        print(f"backend: {BACKEND}")
        daemon = subprocess.Popen([BIN, "serve", "--config", config], env=env, cwd=work)
        try:
            run(daemon, data, work)
        finally:
            daemon.terminate()
            daemon.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if BACKEND == "postgres":
            psql(PG_URL, f"DROP DATABASE IF EXISTS {PG_DB}")


def copy_jobs(data, job):
    """JOBS copies of the job's row, each with a new id, for the same account."""
    if BACKEND == "postgres":
        url = f"{PG_BASE}/{PG_DB}"
        columns = psql(url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs' "
                            "ORDER BY ordinal_position").split()
        fresh = {"job_id": "gen_random_uuid()::text", "source_key": "NULL"}
        picks = ", ".join(fresh.get(c, c) for c in columns)
        psql(url, f"INSERT INTO jobs ({', '.join(columns)}) SELECT {picks} FROM jobs, generate_series(1, {JOBS}) "
                  f"WHERE job_id = '{job}'", "ANALYZE jobs")
        return
    db = sqlite3.connect(f"{data}/intake.db")
    columns = [r[1] for r in db.execute("PRAGMA table_info(jobs)")]
    picks = ", ".join("?" if c == "job_id" else c for c in columns)
    for _ in range(JOBS // 1000):
        db.executemany(f"INSERT INTO jobs ({', '.join(columns)}) SELECT {picks} FROM jobs WHERE job_id = ?",
                       [(str(uuid.uuid4()), job) for _ in range(1000)])
    db.commit()
    db.close()


def wait_for(what, check, limit=120):
    deadline = time.time() + limit
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {what}")


def run(daemon, data, work):
    port = int(wait_for("api.addr", lambda: os.path.exists(f"{data}/api.addr") and open(f"{data}/api.addr").read()).rsplit(":", 1)[1])
    b = Browser(port)
    _, _, page, _, _ = b.request("GET", "/login")
    status, headers, _, _, _ = b.request("POST", "/login", body=f"csrf={csrf(page)}&username=bench&password=bench",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303, status
    _, _, page, _, _ = b.request("GET", "/upload")
    boundary = "benchboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf(page)}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\ncustomers\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.csv\"\r\n\r\n"
            "ref,phone\nr0,bad\n" f"\r\n--{boundary}--\r\n")
    status, headers, _, _, _ = b.request("POST", "/upload", body=body.encode(),
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 303, status
    job = headers["location"].split("/jobs/")[1].split("?")[0]
    outbox = f"{data}/accounts/bench/outbox"
    wait_for("the job", lambda: os.path.exists(f"{outbox}/big.summary.json"))

    t0 = time.time()
    with open(f"{outbox}/big.results.csv.tmp", "w") as r, open(f"{outbox}/big.failed.csv.tmp", "w") as f:
        r.write("line,ref,status,customer_id,error_code,error_field,error_message\n")
        f.write("ref,phone\n")
        chunk_r, chunk_f = [], []
        for i in range(ROWS):
            chunk_r.append(f"{i + 2},r{i},failed,,invalid_phone,phone,`bad{i}` is not a phone number\n")
            chunk_f.append(f"r{i},bad{i}\n")
            if len(chunk_r) == 100_000:
                r.write("".join(chunk_r)); f.write("".join(chunk_f)); chunk_r, chunk_f = [], []
        r.write("".join(chunk_r)); f.write("".join(chunk_f))
    os.rename(f"{outbox}/big.results.csv.tmp", f"{outbox}/big.results.csv")
    os.rename(f"{outbox}/big.failed.csv.tmp", f"{outbox}/big.failed.csv")
    size = os.path.getsize(f"{outbox}/big.results.csv") + os.path.getsize(f"{outbox}/big.failed.csv")
    print(f"report: {ROWS} failed rows, {size / 2**20:.0f} MiB (results + failed.csv), made in {time.time() - t0:.0f} s")

    pages = (ROWS + 49) // 50
    base = rss_kib(daemon.pid, "VmRSS")
    print(f"daemon RSS before: {base / 1024:.1f} MiB (peak so far {rss_kib(daemon.pid, 'VmHWM') / 1024:.1f} MiB)")
    status, _, page, ttfb, total = b.request("GET", f"/jobs/{job}")
    assert status == 200 and f"of {pages}" in page, page[:2000]
    print(f"first view (indexing {ROWS} rows): TTFB {ttfb * 1000:.0f} ms; RSS after {rss_kib(daemon.pid, 'VmRSS') / 1024:.1f} MiB, "
          f"peak {rss_kib(daemon.pid, 'VmHWM') / 1024:.1f} MiB")
    for name, path in [("page 1", f"/jobs/{job}"), (f"last page ({pages})", f"/jobs/{job}?page={pages - 1}")]:
        ttfbs = []
        for _ in range(5):
            status, _, page, ttfb, total = b.request("GET", path)
            assert status == 200 and 'data-line="' in page
            ttfbs.append(ttfb)
        print(f"{name}: TTFB median {statistics.median(ttfbs) * 1000:.1f} ms; RSS {rss_kib(daemon.pid, 'VmRSS') / 1024:.1f} MiB, "
              f"peak {rss_kib(daemon.pid, 'VmHWM') / 1024:.1f} MiB")
    assert f'data-line="{ROWS + 1}"' in page, "the last page has the last row"

    ttfbs = []
    for _ in range(6):
        status, _, page, ttfb, total = b.request("GET", "/jobs")
        assert status == 200
        ttfbs.append(ttfb)
    print(f"/jobs (1 job, the baseline): TTFB median {statistics.median(ttfbs[1:]) * 1000:.1f} ms")

    t0 = time.time()
    copy_jobs(data, job)
    print(f"jobs: {JOBS} more rows for the account, made in {time.time() - t0:.0f} s")
    ttfbs = []
    for _ in range(6):
        status, _, page, ttfb, total = b.request("GET", "/jobs")
        assert status == 200 and page.count("<tr data-job-id=") == 200, page.count("<tr data-job-id=")
        ttfbs.append(ttfb)
    print(f"/jobs ({JOBS + 1} jobs, the newest 200 listed): TTFB median {statistics.median(ttfbs[1:]) * 1000:.1f} ms; "
          f"RSS {rss_kib(daemon.pid, 'VmRSS') / 1024:.1f} MiB, peak {rss_kib(daemon.pid, 'VmHWM') / 1024:.1f} MiB")
    ttfbs = []
    for _ in range(6):
        status, _, page, ttfb, total = b.request("GET", "/jobs?name=nomatch")
        ttfbs.append(ttfb)
    print(f"/jobs?name=... (a filter matching none: the newest 5000 looked through): TTFB median "
          f"{statistics.median(ttfbs[1:]) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
