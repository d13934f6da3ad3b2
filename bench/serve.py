#!/usr/bin/env python3
"""Benchmarks `intake serve` through the real OpenSSH sftp client.

(a) latency: 50 sequential uploads of a 10-row file; p50/p95 from the end of
    the upload (sftp exits) to NAME.summary.json being visible;
(b) a ROWS-row file through sftp until its summary: rows/s and the daemon's
    peak RSS, beside `intake ingest` of the same file in the same run;
(c) 20 concurrent clients over 10 accounts, 5 files each: every report
    correct, total time.
(d) --big: ROWS rows end to end through sftp, ROUNDS rounds (a fresh daemon
    and database each): rows/s from the start of the upload to the summary,
    the time from the end of the upload to the summary, the daemon's peak
    RSS, and fairness: once the big job is running, a 10-row upload of
    another account, its time to its summary and whether the big one was
    still running then. Medians over the rounds. With --bin NAME=PATH given
    more than once, each round runs every build in turn (interleaved), and
    the medians of each are compared with the first's.

usage: bench/serve.py [--rows 1000000] [--backend sqlite|postgres] [--big --rounds 3 [--bin A=PATH --bin B=PATH]]
Needs a release build (cargo build --release; BIN to pick another) and PG_URL for postgres;
the daemons log at `warn` (BENCH_INTAKE_LOG to change it) into serve.log in the scratch directory.
"""
import argparse, concurrent.futures, csv, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN") or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                                            "release", "intake")


def write_customers(path, prefix, rows):
    with open(path, "w") as f:
        f.write("ref,email,phone,metadata.name\n")
        for i in range(rows):
            f.write(f"{prefix}{i},c{i}@example.com,+1555{i % 10_000_000:07d},Customer {i}\n")


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class Daemon:
    def __init__(self, work, accounts, db_url, binary=None):
        self.work = work
        self.data = os.path.join(work, "data")
        if not os.path.exists(os.path.join(work, "key")):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(work, "key")], check=True)
        public = open(os.path.join(work, "key.pub")).read().strip()
        cfg = '[sftp]\nlisten = "127.0.0.1:0"\n'
        for a in accounts:
            cfg += f'\n[[accounts]]\navid = "{a}"\n'
        for a in accounts:
            cfg += f'\n[[users]]\nusername = "{a}"\naccount = "{a}"\nkeys = ["{public}"]\n'
        open(os.path.join(work, "config.toml"), "w").write(cfg)
        self.env = dict(os.environ, INTAKE_DATA_DIR=self.data, INTAKE_DATABASE_URL=db_url,
                        INTAKE_LOG=os.environ.get("BENCH_INTAKE_LOG", "warn"))
        self.proc = subprocess.Popen([binary or BIN, "serve", "--config", os.path.join(work, "config.toml")], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "serve.log"), "w"))
        addr_file = os.path.join(self.data, "sftp.addr")
        deadline = time.time() + 60
        while not (os.path.exists(addr_file) and open(addr_file).read()):
            if time.time() > deadline:
                raise SystemExit("daemon did not start")
            time.sleep(0.05)
        self.port = open(addr_file).read().rsplit(":", 1)[1]

    def sftp(self, user, batch):
        subprocess.run(["sftp", "-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                        "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-q", "-i", os.path.join(self.work, "key"),
                        "-P", self.port, "-b", "-", f"{user}@127.0.0.1"], input=batch.encode(), check=True,
                       stdout=subprocess.DEVNULL)

    def summary_path(self, avid, stem):
        return os.path.join(self.data, "accounts", avid, "outbox", f"{stem}.summary.json")

    def wait_summary(self, avid, stem, timeout=600):
        path = self.summary_path(avid, stem)
        deadline = time.time() + timeout
        while not os.path.exists(path):
            if time.time() > deadline:
                raise SystemExit(f"no summary for {avid}/{stem}")
            time.sleep(0.002)
        return json.load(open(path))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def fresh_db(backend, name):
    if backend == "sqlite":
        return None
    base = os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    subprocess.run(["psql", "-q", base, "-c", "SET client_min_messages = warning", "-c", f"DROP DATABASE IF EXISTS {name}",
                    "-c", f"CREATE DATABASE {name}"], check=True)
    return base.rsplit("/", 1)[0] + "/" + name


def big_rounds(args):
    """(d): ROWS rows end to end, ROUNDS rounds (each build in turn); medians."""
    builds = [b.split("=", 1) for b in args.bin] or [["intake", BIN]]
    work = tempfile.mkdtemp(prefix="intake-serve-bench.")
    try:
        big = os.path.join(work, "big.csv")
        write_customers(big, "b-", args.rows)
        small = os.path.join(work, "small.csv")
        write_customers(small, "s-", 10)
        results = {name: [] for name, _ in builds}
        for r in range(args.rounds):
            for name, binary in builds:
                row = big_round(args, work, big, small, f"{r}_{len(results[name])}_{name}", binary)
                results[name].append(row)
                print(f"round {r + 1}, {name}: {row['rows_s']:.0f} rows/s, upload {row['upload_s']:.1f} s, end of "
                      f"upload to summary {row['tail_s']:.1f} s, peak RSS {row['rss']:.1f} MiB; 10-row upload of "
                      f"another account: {row['small_s']:.2f} s to its summary, big job still running then: "
                      f"{row['big_running']}", flush=True)
        first = builds[0][0]
        for name, _ in builds:
            rows = results[name]
            med = lambda k, rows=rows: statistics.median(x[k] for x in rows)
            versus = ""
            if name != first:
                base = lambda k: statistics.median(x[k] for x in results[first])
                versus = f" (vs {first}: rows/s {med('rows_s') / base('rows_s'):.2f}x, peak RSS {med('rss') / base('rss'):.3f}x)"
            print(f"(d) {name}, {args.backend}, {args.rows} rows via sftp, median of {len(rows)}: {med('rows_s'):.0f} "
                  f"rows/s, end of upload to summary {med('tail_s'):.1f} s, peak RSS {med('rss'):.1f} MiB, other "
                  f"account's 10-row upload {med('small_s'):.2f} s (big job still running: "
                  f"{sum(x['big_running'] for x in rows)}/{len(rows)}){versus}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def big_round(args, work, big, small, tag, binary):
    """One round of (d) with a fresh daemon and database."""
    shutil.rmtree(os.path.join(work, "data"), ignore_errors=True)
    db_name = f"intake_serve_big_{os.getpid()}_{tag}".lower().replace("-", "_")
    db = fresh_db(args.backend, db_name)
    d = Daemon(work, ["big", "other"], db or f"sqlite://{work}/data/intake.db", binary)
    t0 = time.time()
    d.sftp("big", f"put {big} /customers/big.csv\n")
    t_uploaded = time.time()
    progress = os.path.join(d.data, "accounts", "big", "outbox", "big.progress.json")
    deadline = time.time() + 600
    while True:
        try:
            if json.load(open(progress)).get("rows_done", 0) > 0:
                break
        except (OSError, ValueError):
            pass
        if os.path.exists(d.summary_path("big", "big")) or time.time() > deadline:
            break
        time.sleep(0.05)
    t_small = time.time()
    d.sftp("other", f"put {small} /customers/small.csv\n")
    s_small = d.wait_summary("other", "small")
    small_secs = time.time() - t_small
    big_running = not os.path.exists(d.summary_path("big", "big"))
    s = d.wait_summary("big", "big", timeout=7200)
    t_done = time.time()
    rss = peak_rss_kib(d.proc.pid) / 1024
    d.stop()
    assert s["created"] == args.rows and s_small["created"] == 10, (s, s_small)
    if db:
        subprocess.run(["psql", "-q", os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
                        "-c", f"DROP DATABASE {db_name}"], check=False)
    return {"rows_s": args.rows / (t_done - t0), "upload_s": t_uploaded - t0, "tail_s": t_done - t_uploaded,
            "rss": rss, "small_s": small_secs, "big_running": big_running}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--backend", default="sqlite")
    ap.add_argument("--big", action="store_true", help="only (d): ROWS rows end to end, --rounds rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bin", action="append", default=[], metavar="NAME=PATH",
                    help="with --big: a build to run in every round (give two or more to compare them)")
    args = ap.parse_args()
    if args.big:
        return big_rounds(args)
    work = tempfile.mkdtemp(prefix="intake-serve-bench.")
    try:
        accounts = [f"m{i}" for i in range(10)]
        db = fresh_db(args.backend, f"intake_serve_bench_{os.getpid()}")
        d = Daemon(work, accounts, db or f"sqlite://{work}/data/intake.db")

        # (a) latency
        small = os.path.join(work, "small.csv")
        write_customers(small, "s-", 10)
        lat = []
        for i in range(50):
            d.sftp("m0", f"put {small} /customers/lat{i}.csv\n")
            t0 = time.time()
            s = d.wait_summary("m0", f"lat{i}")
            lat.append((time.time() - t0) * 1000)
            assert s["created"] == 10 or s["unchanged"] == 10, s
        lat.sort()
        p50, p95 = statistics.median(lat), lat[int(0.95 * len(lat)) - 1]
        print(f"(a) latency upload->summary, 50 uploads of 10 rows: p50 {p50:.0f} ms, p95 {p95:.0f} ms (target p95 <= 500 ms)")

        # (b) a big file through sftp, then the same file with `intake ingest` in the same run
        big = os.path.join(work, "big.csv")
        write_customers(big, "b-", args.rows)
        t0 = time.time()
        d.sftp("m1", f"put {big} /customers/big.csv\n")
        s = d.wait_summary("m1", "big", timeout=3600)
        t_sftp = time.time() - t0
        rss_serve = peak_rss_kib(d.proc.pid) / 1024
        assert s["created"] == args.rows, s
        d.stop()
        db2 = fresh_db(args.backend, f"intake_serve_bench_ingest_{os.getpid()}")
        env = dict(d.env, INTAKE_DATA_DIR=os.path.join(work, "ingest-data"),
                   INTAKE_DATABASE_URL=db2 or f"sqlite://{work}/ingest-data/intake.db")
        subprocess.run([BIN, "account", "add", "m1"], env=env, check=True, stdout=subprocess.DEVNULL)
        t0 = time.time()
        subprocess.run([BIN, "ingest", big, "--account", "m1"], env=env, check=True, stdout=subprocess.DEVNULL)
        t_ingest = time.time() - t0
        print(f"(b) {args.rows} rows via sftp until summary: {args.rows / t_sftp:.0f} rows/s "
              f"(upload included), daemon peak RSS {rss_serve:.1f} MiB; intake ingest: {args.rows / t_ingest:.0f} rows/s; "
              f"ratio {t_ingest / t_sftp:.2f} (target >= 0.9)")

        # (c) 20 concurrent clients over 10 accounts, 5 files each
        shutil.rmtree(os.path.join(work, "data"), ignore_errors=True)
        db3 = fresh_db(args.backend, f"intake_serve_bench_c_{os.getpid()}")
        d = Daemon(work, accounts, db3 or f"sqlite://{work}/data/intake.db")
        files = []
        for c in range(20):
            path = os.path.join(work, f"client{c}.csv")
            write_customers(path, f"c{c}-", 1000)
            files.append(path)

        def client(c):
            avid = accounts[c % 10]
            d.sftp(avid, "".join(f"put {files[c]} /customers/client{c}-f{k}.csv\n" for k in range(5)))
            return avid, [f"client{c}-f{k}" for k in range(5)]

        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            uploads = list(pool.map(client, range(20)))
        ok = 0
        for avid, stems in uploads:
            for stem in stems:
                s = d.wait_summary(avid, stem)
                ok += (s["status"] == "completed" and s["rows"] == 1000 and s["failed"] == 0)
        total = time.time() - t0
        print(f"(c) 20 clients x 5 files x 1000 rows over 10 accounts: {ok}/100 reports correct, {total:.1f} s in all")
        d.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
