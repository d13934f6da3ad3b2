#!/usr/bin/env python3
"""Benchmarks the HTTP API (issue 22) against baselines measured in the same run.

(a) Single-customer creates: N = 1, 8, 32 concurrent clients (one process
    and one keep-alive connection each, stdlib http.client), each POSTing
    new customers to /api/v1/accounts/bench/customers for SECONDS seconds:
    creates/s in all, latency p50/p99. Baseline: a plain INSERT of the same
    row shape into the same `customers` table, one statement and commit at
    a time over one connection (Python's sqlite3 on SQLite; psql on
    PostgreSQL), on a database intake migrated.
(b) A ROWS-row bulk job (bench/gen_customers.py): create, PUT the file,
    complete, poll until its summary; rows/s from the start of the PUT to the
    summary. Against the same file uploaded with OpenSSH sftp to another
    account of the same daemon, from the start of the upload to its summary.
    Interleaved over ROUNDS rounds (HTTP first in odd rounds), medians.

usage: bench/api.py [--backend sqlite|postgres] [--rows 1000000] [--seconds 10] [--rounds 1]
Needs a release build (cargo build --release; BIN to pick another), PG_URL for postgres.
The per-token rate limit is off for the run ([api] rate_per_token = 0).
"""
import argparse, datetime, http.client, json, multiprocessing, os, shutil, sqlite3, statistics, subprocess, sys, tempfile
import time, urllib.request, uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN") or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                                            "release", "intake")
ACCOUNTS = ["bench", "bulk", "viasftp"]
# The accounts of the bulk comparison (HTTP, SFTP); SWAP_ACCOUNTS=1 swaps them,
# to tell an account's effect from a channel's.
HTTP_ACCOUNT, SFTP_ACCOUNT = ("viasftp", "bulk") if os.environ.get("SWAP_ACCOUNTS") == "1" else ("bulk", "viasftp")


class Daemon:
    def __init__(self, work, db_url):
        self.work, self.data = work, os.path.join(work, "data")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(work, "key")], check=True)
        public = open(os.path.join(work, "key.pub")).read().strip()
        cfg = ('[sftp]\nlisten = "127.0.0.1:0"\n[http]\nlisten = "127.0.0.1:0"\n'
               '[api]\nlisten = "127.0.0.1:0"\nrate_per_token = 0\nmax_connections_per_source = 256\n')
        for a in ACCOUNTS:
            cfg += f'\n[[accounts]]\navid = "{a}"\n'
        for a in ACCOUNTS:
            cfg += f'\n[[users]]\nusername = "{a}"\naccount = "{a}"\nkeys = ["{public}"]\n'
        self.config = os.path.join(work, "config.toml")
        open(self.config, "w").write(cfg)
        self.env = dict(os.environ, INTAKE_DATA_DIR=self.data, INTAKE_DATABASE_URL=db_url,
                        INTAKE_LOG=os.environ.get("BENCH_INTAKE_LOG", "warn"))
        self.proc = subprocess.Popen([BIN, "serve", "--config", self.config], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "serve.log"), "w"))
        self.sftp_port = self.addr("sftp.addr").rsplit(":", 1)[1]
        self.api = self.addr("api.addr")

    def addr(self, name):
        path, deadline = os.path.join(self.data, name), time.time() + 60
        while not (os.path.exists(path) and open(path).read()):
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"the daemon did not start: {open(os.path.join(self.work, 'serve.log')).read()}")
            time.sleep(0.05)
        return open(path).read().strip()

    def token(self, user):
        out = subprocess.run([BIN, "token", "create", user, "--config", self.config], env=self.env, check=True,
                             capture_output=True, text=True)
        return out.stdout.strip().splitlines()[-1]

    def summary(self, avid, stem, since_mtime=0, timeout=1800):
        path, deadline = os.path.join(self.data, "accounts", avid, "outbox", f"{stem}.summary.json"), time.time() + timeout
        while time.time() < deadline:
            try:
                if os.path.getmtime(path) >= since_mtime:
                    return json.load(open(path))
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise SystemExit(f"no summary for {avid}/{stem}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def client(args):
    """One client: POSTs new customers for `seconds`; its latencies (s)."""
    api, token, prefix, seconds, start_at = args
    host, port = api.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    while time.time() < start_at:
        time.sleep(0.001)
    latencies, i, end = [], 0, start_at + seconds
    while time.time() < end:
        body = json.dumps({"ref": f"{prefix}-{i}", "addresses": [f"+1555{i % 10_000_000:07d}", f"c{i}@example.com"],
                           "metadata": {"name": f"Customer {i}"}})
        t0 = time.perf_counter()
        conn.request("POST", "/api/v1/accounts/bench/customers", body, headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - t0)
        if response.status != 201:
            raise SystemExit(f"create answered {response.status}")
        i += 1
    return latencies


def creates(daemon, token, n, seconds):
    start_at = time.time() + 1.0
    with multiprocessing.Pool(n) as pool:
        runs = pool.map(client, [(daemon.api, token, f"n{n}-c{c}-{uuid.uuid4().hex[:6]}", seconds, start_at)
                                 for c in range(n)])
    latencies = sorted(x for run in runs for x in run)
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    return len(latencies) / seconds, p(0.50), p(0.99)


def row(i, prefix):
    addresses = json.dumps([{"type": "phone", "value": f"+1555{i % 10_000_000:07d}"},
                            {"type": "email", "value": f"c{i}@example.com"}])
    return (str(uuid.uuid4()), "baseline", f"{prefix}-{i}", addresses, json.dumps({"name": f"Customer {i}"}))


def baseline_sqlite(work, seconds):
    """Plain INSERTs, each its own transaction, over one sqlite3 connection,
    into the `customers` table of a database intake migrated."""
    db = os.path.join(work, "baseline.db")
    env = dict(os.environ, INTAKE_DATABASE_URL=f"sqlite://{db}", INTAKE_DATA_DIR=os.path.join(work, "bdata"))
    subprocess.run([BIN, "token", "list", "--config", os.path.join(work, "config.toml")], env=env, check=True,
                   capture_output=True)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    sql = ("INSERT INTO customers (customer_id, account, ref, addresses, metadata, appdata, created_at, updated_at) "
           "VALUES (?, ?, ?, ?, ?, '{}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))")
    n, end = 0, time.time() + seconds
    t0 = time.time()
    while time.time() < end:
        conn.execute(sql, row(n, "b"))
        n += 1
    return n / (time.time() - t0)


def baseline_postgres(work, pg_url, rows):
    """`rows` plain INSERTs, each its own transaction (psql's autocommit), over
    one psql connection, into the `customers` table intake made."""
    base = pg_url.rsplit("/", 1)[0]
    name = f"intake_apibench_base_{os.getpid()}"
    subprocess.run(["psql", "-q", pg_url, "-c", f"DROP DATABASE IF EXISTS {name}", "-c", f"CREATE DATABASE {name}"],
                   check=True)
    url = f"{base}/{name}"
    env = dict(os.environ, INTAKE_DATABASE_URL=url, INTAKE_DATA_DIR=os.path.join(work, "bdata"))
    subprocess.run([BIN, "token", "list", "--config", os.path.join(work, "config.toml")], env=env, check=True,
                   capture_output=True)
    script = os.path.join(work, "inserts.sql")
    with open(script, "w") as f:
        for i in range(rows):
            cid, account, ref, addresses, metadata = row(i, "b")
            f.write("INSERT INTO customers (customer_id, account, ref, addresses, metadata, appdata, created_at, "
                    f"updated_at) VALUES ('{cid}', '{account}', '{ref}', '{addresses}', '{metadata}', '{{}}', now(), now());\n")
    t0 = time.time()
    subprocess.run(["psql", "-q", "-X", url, "-f", script], check=True, stdout=subprocess.DEVNULL)
    rate = rows / (time.time() - t0)
    subprocess.run(["psql", "-q", pg_url, "-c", f"DROP DATABASE IF EXISTS {name}"], check=True)
    return rate


def bulk_http(daemon, token, path, stem):
    api = f"http://{daemon.api}/api/v1/accounts/{HTTP_ACCOUNT}/jobs"
    auth = {"Authorization": f"Bearer {token}"}

    def call(method, url, data=None, headers=None):
        req = urllib.request.Request(url, data=data, method=method, headers={**auth, **(headers or {})})
        with urllib.request.urlopen(req, timeout=3600) as r:
            return json.load(r)

    job = call("POST", api, json.dumps({"file": f"{stem}.csv"}).encode(), {"Content-Type": "application/json"})
    url = f"{api}/{job['id']}"
    t0 = time.time()
    with open(path, "rb") as f:
        size = os.path.getsize(path)
        call("PUT", f"{url}/data", f, {"Content-Length": str(size), "Content-Type": "text/csv"})
    call("POST", f"{url}/complete")
    summary = daemon.summary(HTTP_ACCOUNT, stem, t0)
    return time.time() - t0, summary


def bulk_sftp(daemon, path, stem):
    t0 = time.time()
    subprocess.run(["sftp", "-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i", os.path.join(daemon.work, "key"),
                    "-P", daemon.sftp_port, "-b", "-", f"{SFTP_ACCOUNT}@127.0.0.1"],
                   input=f"put {path} /customers/{stem}.csv\n".encode(), check=True, stdout=subprocess.DEVNULL)
    summary = daemon.summary(SFTP_ACCOUNT, stem, t0)
    return time.time() - t0, summary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--clients", default="1,8,32")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="intake-api-bench.")
    pg_url = os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    db_name = f"intake_apibench_{os.getpid()}"
    try:
        if a.backend == "sqlite":
            db_url = f"sqlite://{work}/data/intake.db"
        else:
            subprocess.run(["psql", "-q", pg_url, "-c", f"DROP DATABASE IF EXISTS {db_name}", "-c",
                            f"CREATE DATABASE {db_name}"], check=True)
            db_url = f"{pg_url.rsplit('/', 1)[0]}/{db_name}"
        daemon = Daemon(work, db_url)
        token = daemon.token("bench")
        print(f"== {a.backend}: single-customer creates, {a.seconds:g} s per level")
        print("clients  creates/s  p50 ms  p99 ms")
        for n in [int(x) for x in a.clients.split(",")]:
            rate, p50, p99 = creates(daemon, token, n, a.seconds)
            print(f"{n:7d}  {rate:9.0f}  {p50:6.2f}  {p99:6.2f}")
        if a.backend == "sqlite":
            base = baseline_sqlite(work, a.seconds)
        else:
            base = baseline_postgres(work, pg_url, int(max(1000, a.seconds * 2000)))
        print(f"baseline: plain INSERT loop, one connection, one commit each: {base:.0f} rows/s")

        if a.rows:
            gen = os.path.join(work, "bulk.csv")
            subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gen_customers.py"), str(a.rows), gen,
                            os.path.join(work, "raw.csv"), "bench"], check=True)
            print(f"== {a.backend}: {a.rows} rows ({os.path.getsize(gen) / 1e6:.0f} MB) as a bulk job vs over SFTP, "
                  f"{a.rounds} round(s), interleaved")
            http_rates, sftp_rates = [], []
            for r in range(a.rounds):
                order = ["http", "sftp"] if r % 2 == 0 else ["sftp", "http"]
                for how in order:
                    stem = f"r{r}-{how}"
                    if how == "http":
                        took, summary = bulk_http(daemon, daemon.token(HTTP_ACCOUNT), gen, stem)
                        http_rates.append(a.rows / took)
                    else:
                        took, summary = bulk_sftp(daemon, gen, stem)
                        sftp_rates.append(a.rows / took)
                    ts = lambda k: datetime.datetime.fromisoformat(summary[k].replace("Z", "+00:00")).timestamp()
                    print(f"  round {r + 1} {how:4s}: {took:7.1f} s, {a.rows / took:8.0f} rows/s "
                          f"(created {summary.get('created')}, unchanged {summary.get('unchanged')}, "
                          f"failed {summary.get('failed')}; queued {ts('started_at') - ts('received_at'):.1f} s, "
                          f"ran {ts('finished_at') - ts('started_at'):.1f} s)")
            h, s = statistics.median(http_rates), statistics.median(sftp_rates)
            print(f"median rows/s: HTTP bulk job {h:.0f}, SFTP {s:.0f}: ratio {h / s:.3f}x (target >= 0.95x)")
        daemon.stop()
    finally:
        if a.backend == "postgres":
            subprocess.run(["psql", "-q", pg_url, "-c", f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
