#!/usr/bin/env python3
"""Takeover time of two `intake serve` nodes sharing one PostgreSQL database
and one data directory (issue 13), with the default `[cluster]` settings.

Each round uploads a ROWS-row file with OpenSSH sftp, waits until a node
runs its job (rows committed), then either kills that node (`kill -9`) or
freezes it (`SIGSTOP`, woken after the report), and measures, on this host's
monotonic clock:
  takeover  from the signal to the other node owning the job (the database says so);
  report    from the signal to NAME.summary.json being published, complete.
The killed node is started again before the next round. Medians over rounds.

usage: bench/takeover.py [--rounds 3] [--rows 200000]
Needs a release build (cargo build --release) and PG_URL (default
postgres://postgres@127.0.0.1:5432/postgres); creates and drops its own database.
"""
import argparse, json, os, signal, statistics, subprocess, sys, tempfile, time, uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "intake")


def psql(url, sql):
    return subprocess.run(["psql", "-Atq", url, "-c", sql], check=True, capture_output=True, text=True).stdout.strip()


def write_customers(path, prefix, rows):
    with open(path, "w") as f:
        f.write("ref,email,phone,metadata.name\n")
        for i in range(rows):
            f.write(f"{prefix}{i},c{i}@example.com,+1555{i % 10_000_000:07d},Customer {i}\n")


class Node:
    def __init__(self, work, data, node_id, db_url, key_pub):
        self.work, self.data, self.node_id = work, data, node_id
        os.makedirs(work, exist_ok=True)
        cfg = f'[sftp]\nlisten = "127.0.0.1:0"\n[http]\nenabled = false\n[api]\nenabled = false\n[cluster]\nnode_id = "{node_id}"\n'
        cfg += '\n[[accounts]]\navid = "acme"\n'
        cfg += f'\n[[users]]\nusername = "acme"\naccount = "acme"\nkeys = ["{key_pub}"]\n'
        self.config = os.path.join(work, "config.toml")
        open(self.config, "w").write(cfg)
        self.env = dict(os.environ, INTAKE_DATA_DIR=data, INTAKE_DATABASE_URL=db_url, INTAKE_LOG="info")
        self.proc = None

    def start(self):
        addr_file = os.path.join(self.data, "sftp.addr")
        if os.path.exists(addr_file):
            os.remove(addr_file)
        self.proc = subprocess.Popen([BIN, "serve", "--config", self.config], env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.work, "serve.log"), "a"))
        deadline = time.time() + 60
        while not (os.path.exists(addr_file) and open(addr_file).read()):
            if time.time() > deadline:
                raise SystemExit(f"{self.node_id} did not start")
            time.sleep(0.05)
        self.port = open(addr_file).read().rsplit(":", 1)[1]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def round_(kind, n, nodes, db_url, key, outbox, work, rows):
    stem = f"{kind}-{n}"
    local = os.path.join(work, f"{stem}.csv")
    write_customers(local, f"{stem}-", rows)
    subprocess.run(["sftp", "-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "BatchMode=yes", "-i", key, "-P", nodes[0].port, "-b", "-", "acme@127.0.0.1"],
                   input=f"put {local} /customers/{stem}.csv\n", text=True, check=True, capture_output=True)
    while True:
        row = psql(db_url, f"SELECT job_id, owner FROM jobs WHERE file_name = '{stem}.csv' AND status = 'running' "
                           "AND records_done > 0 AND owner IS NOT NULL")
        if row:
            job_id, owner = row.split("|")
            break
        time.sleep(0.05)
    victim = next(nd for nd in nodes if owner.startswith(nd.node_id + ":"))
    other = next(nd for nd in nodes if nd is not victim)
    signalled = time.monotonic()
    victim.proc.send_signal(signal.SIGKILL if kind == "kill" else signal.SIGSTOP)
    takeover = None
    summary = os.path.join(outbox, f"{stem}.summary.json")
    while not os.path.exists(summary):
        if takeover is None:
            now_owner = psql(db_url, f"SELECT coalesce(owner, '') FROM jobs WHERE job_id = '{job_id}'")
            if now_owner.startswith(other.node_id + ":"):
                takeover = time.monotonic() - signalled
        time.sleep(0.05)
    report = time.monotonic() - signalled
    s = json.load(open(summary))
    assert s["status"] == "completed" and s["created"] == rows, s
    if kind == "kill":
        victim.proc.wait()
        victim.start()
    else:
        victim.proc.send_signal(signal.SIGCONT)
    return takeover if takeover is not None else report, report


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=200_000)
    args = ap.parse_args()
    admin = os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name = f"intake_takeover_{uuid.uuid4().hex[:8]}"
    psql(admin, f"CREATE DATABASE {name}")
    db_url = admin.rsplit("/", 1)[0] + "/" + name
    work = tempfile.mkdtemp(prefix="intake-takeover-")
    nodes = []
    try:
        key = os.path.join(work, "key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        key_pub = open(key + ".pub").read().strip()
        data = os.path.join(work, "data")
        nodes = [Node(os.path.join(work, n), data, n, db_url, key_pub) for n in ("node-a", "node-b")]
        for nd in nodes:
            nd.start()
        outbox = os.path.join(data, "accounts", "acme", "outbox")
        results = {}
        for kind in ("kill", "stop"):
            for n in range(args.rounds):
                results.setdefault(kind, []).append(round_(kind, n, nodes, db_url, key, outbox, work, args.rows))
                print(kind, n, "takeover %.2f s, report %.2f s" % results[kind][-1], flush=True)
        for kind, rs in results.items():
            print(f"{kind:5}: takeover median {statistics.median(r[0] for r in rs):.2f} s, "
                  f"signal to complete report median {statistics.median(r[1] for r in rs):.2f} s "
                  f"({len(rs)} rounds, {args.rows} rows)")
    finally:
        for nd in nodes:
            if nd.proc and nd.proc.poll() is None:
                nd.proc.send_signal(signal.SIGCONT)
            nd.stop()
        psql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())
