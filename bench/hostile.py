#!/usr/bin/env python3
"""Hostile inputs against the release `intake serve`: for each input, a fresh
daemon (SQLite) takes the file as another server would place it, and we
record the outcome, the seconds from placing it to its summary, the daemon's
peak RSS (VmHWM) and its RSS once idle again (memory given back).

usage: bench/hostile.py [--only NAME] [--keep]
Needs a release build (cargo build --release). Writes ~600 MB of temp files.
"""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "intake")
MB = 1 << 20


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def write_parts(path, parts):
    with open(path, "wb") as f:
        for p in parts:
            f.write(p)


def sparse(path):
    with open(path, "wb") as f:
        f.seek(4 << 30)
        f.write(b"ref,address\nx,y\n\n")


def deep_header(path):
    write_parts(path, [b"ref,address,metadata" + b".a" * 7000 + b"\nc1,+15555001234,x\n"])


def big_metadata(path):
    obj = "{" + "".join(f'""k{i:04}"":""v{i:08}"",' for i in range(2800)) + '""z"":1}'
    with open(path, "w") as f:
        f.write("ref,address,metadata\n")
        for i in range(1000):
            f.write(f'bm{i},+15555001234,"{obj}"\n')


def many_addresses(path):
    cell = "x," * 30000
    with open(path, "w") as f:
        f.write("ref,addresses\n")
        for i in range(200):
            f.write(f'm{i},"{cell}"\n')


def wide(path):
    write_parts(path, [("ref,address," + ",".join(f"metadata.k{i}" for i in range(100_000)) + "\n").encode()])


def normal(path, rows=100_000):
    with open(path, "w") as f:
        f.write("ref,email,phone,metadata.name\n")
        for i in range(rows):
            f.write(f"r{i},c{i}@example.com,+1555{i % 10_000_000:07d},Customer {i}\n")


def gzipped(writer):
    def write(path):
        import gzip
        writer(path + ".plain")
        with open(path + ".plain", "rb") as src, gzip.open(path, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
        os.remove(path + ".plain")
    return write


def gzip_bomb(path, gib=3):
    """Concatenated gzip members: a header, then one compressed MiB of rows
    repeated: `gib` GiB of CSV in a few MB."""
    import gzip
    member = gzip.compress(b"r1,+15555550001\n" * (64 * 1024), compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(b"ref,phone\n"))
        for _ in range(gib * 1024):
            f.write(member)


def corrupt_gzip(path):
    import gzip
    data = gzip.compress(b"ref,address\n" + b"c1,+15555001234\n" * 100_000)
    write_parts(path, [data[: len(data) // 2], b"\x00garbage" * 100])


INPUTS = [
    # (name, file name, writer)
    ("baseline: 100k valid rows", "normal.csv", normal),
    ("name ending inside a character", "顧客.csv", lambda p: normal(p, 10)),
    ("214-byte name (70 CJK + .csv)", "顧" * 70 + ".csv", lambda p: normal(p, 10)),
    ("metadata.a.a... 7,000 levels (14 KB)", "deep.csv", deep_header),
    ("17 bytes at 4 GiB (sparse, 8 KB on disk)", "sparse.csv", sparse),
    ("200 MB line without a newline", "line.csv", lambda p: write_parts(p, [b"ref,address\n", b"a" * (200 * MB)])),
    ("50 MB unclosed quote", "quote.csv", lambda p: write_parts(p, [b"ref,address\nq1,\"", b"x,\n" * (50 * MB // 3)])),
    ("100 MB of blank lines", "blank.csv", lambda p: write_parts(p, [b"ref,address\n", b"\n" * (100 * MB), b"b1,+15555001234\n"])),
    ("1,000 rows with 56 KB metadata objects", "bigmeta.csv", big_metadata),
    ("200 rows with 30,000 bad addresses each (12 MB)", "many.csv", many_addresses),
    ("100,000 metadata.kN columns", "wide.csv", wide),
    ("baseline gzipped: 100k valid rows, .csv.gz", "normal.csv.gz", gzipped(normal)),
    ("gzip bomb: 3 GiB of rows in concatenated members", "bomb.csv.gz", gzip_bomb),
    ("gzip cut in half, then garbage", "cut.csv.gz", corrupt_gzip),
]


def run_one(label, name, writer, work):
    data = os.path.join(work, "data")
    os.makedirs(os.path.join(data, "accounts", "acme", "customers"), exist_ok=True)
    with open(os.path.join(work, "config.toml"), "w") as f:
        f.write('[sftp]\nenabled = false\n\n[[accounts]]\navid = "acme"\n')
    env = dict(os.environ, INTAKE_DATA_DIR=data, INTAKE_LOG="warn")
    log = open(os.path.join(work, "serve.log"), "w")
    proc = subprocess.Popen([BIN, "serve", "--config", os.path.join(work, "config.toml")], cwd=work, env=env,
                            stdout=log, stderr=log)
    try:
        deadline = time.time() + 30
        while not os.path.exists(os.path.join(data, "intake.db")) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        start_rss = status_kib(proc.pid, "VmRSS")
        aside = os.path.join(work, "placing")
        writer(aside)
        size = os.path.getsize(aside)
        target = os.path.join(data, "accounts", "acme", "customers", name)
        t0 = time.time()
        os.rename(aside, target)
        stem = name[:-4]
        from_stem = None
        outbox = os.path.join(data, "accounts", "acme", "outbox")
        summary = None
        while time.time() - t0 < 600:
            if proc.poll() is not None:
                return dict(label=label, outcome=f"daemon exited {proc.returncode}", bytes=size)
            for f in os.listdir(outbox) if os.path.isdir(outbox) else []:
                if f.endswith(".summary.json"):
                    from_stem = f
                    summary = json.load(open(os.path.join(outbox, f)))
            if summary:
                break
            time.sleep(0.05)
        seconds = time.time() - t0
        peak = status_kib(proc.pid, "VmHWM")
        time.sleep(5)
        idle = status_kib(proc.pid, "VmRSS")
        results = os.path.join(outbox, from_stem.replace(".summary.json", ".results.csv")) if from_stem else None
        outcome = summary["status"] if summary else "no report"
        if summary and summary.get("error"):
            outcome += f" ({summary['error']['code']})"
        elif summary:
            outcome += f" ({summary['created']} created, {summary['failed']} failed)"
        return dict(label=label, outcome=outcome, bytes=size, seconds=round(seconds, 2),
                    peak_mib=round(peak / 1024, 1), idle_mib=round(idle / 1024, 1),
                    start_mib=round(start_rss / 1024, 1),
                    report_bytes=os.path.getsize(results) if results and os.path.exists(results) else None,
                    alive=proc.poll() is None)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only")
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    rows = []
    for label, name, writer in INPUTS:
        if args.only and args.only not in label:
            continue
        work = tempfile.mkdtemp(prefix="intake-hostile-")
        try:
            row = run_one(label, name, writer, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(row, ensure_ascii=False), flush=True)
        rows.append(row)
    print()
    print("| input | upload bytes | outcome | seconds | peak RSS MiB | idle RSS MiB after | report bytes |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['bytes']:,} | {r['outcome']} | {r.get('seconds', '-')} | {r.get('peak_mib', '-')} "
              f"| {r.get('idle_mib', '-')} | {r.get('report_bytes') if r.get('report_bytes') is not None else '-'} |")


if __name__ == "__main__":
    main()
