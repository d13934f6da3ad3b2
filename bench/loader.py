#!/usr/bin/env python3
"""The loader a team would write instead of intake: the benchmark's
alternative (issue 10, target 4). It reads the same CSV columns the bench
file has (ref, email, phone, metadata.KEY, appdata.KEY), validates with
`phonenumbers` (a possible number, E.164) and `email-validator` (syntax, no
DNS), upserts into the same `customers` table with the same rules — new ref
created; existing ref updated (addresses replaced, metadata/appdata merged
at top level) or unchanged when nothing would change; the same ref twice in
the file is `duplicate_ref` — and writes a per-row results file in input
order (line, ref, status, customer_id, error_code, error_field,
error_message).

It is what a competent script looks like, not a strawman: batches of
BATCH rows, an `INSERT … ON CONFLICT … DO UPDATE … WHERE … IS DISTINCT FROM
… RETURNING` per row (psycopg's executemany pipelines a batch's statements
on PostgreSQL), one commit per batch. It keeps no crash-resume state and
holds every ref of the file in a dict for duplicates.

usage: loader.py FILE.csv RESULTS.csv ACCOUNT DATABASE_URL
       (postgres://… or sqlite:///path/to.db, the schema made by intake)
"""
import csv, json, sqlite3, sys, uuid

import email_validator
import phonenumbers

BATCH = 5000


def parse_phone(raw):
    try:
        n = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(n):
        return None
    return phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)


def parse_email(raw):
    try:
        v = email_validator.validate_email(raw, check_deliverability=False)
    except email_validator.EmailNotValidError:
        return None
    return v.normalized


def parse_row(row, header):
    """(ref, addresses, metadata, appdata) or (ref, error_code, field, message)."""
    cells = dict(zip(header, (c.strip() for c in row)))
    ref = cells.get("ref", "")
    if len(row) != len(header):
        return ref, ("wrong_field_count", "", f"the record has {len(row)} fields; the header has {len(header)}")
    if not ref:
        return ref, ("missing_ref", "ref", "ref is empty")
    if len(ref) > 255:
        return ref, ("ref_too_long", "ref", "ref is over 255 characters")
    addresses = []
    for col in header:
        value = cells[col]
        if not value:
            continue
        if col == "email":
            e = parse_email(value)
            if e is None:
                return ref, ("invalid_email", col, f"{value!r} is not an email address")
            addresses.append({"type": "email", "value": e})
        elif col == "phone":
            p = parse_phone(value)
            if p is None:
                return ref, ("invalid_phone", col, f"{value!r} is not a phone number")
            addresses.append({"type": "phone", "value": p})
    if not addresses:
        return ref, ("missing_address", "address", "the row has no address")
    metadata = {c[9:]: cells[c] for c in header if c.startswith("metadata.") and cells[c]}
    appdata = {c[8:]: cells[c] for c in header if c.startswith("appdata.") and cells[c]}
    return ref, (addresses, metadata, appdata)


PG_UPSERT = """
INSERT INTO customers AS c (customer_id, account, ref, addresses, metadata, appdata, created_at, updated_at,
                            last_job_id, last_line)
VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, now(), now(), 'loader', %s)
ON CONFLICT (account, ref) DO UPDATE SET addresses = excluded.addresses,
    metadata = c.metadata || excluded.metadata, appdata = c.appdata || excluded.appdata,
    updated_at = now(), last_line = excluded.last_line
WHERE (c.addresses, c.metadata || excluded.metadata, c.appdata || excluded.appdata)
      IS DISTINCT FROM (excluded.addresses, c.metadata, c.appdata)
RETURNING customer_id, (xmax = 0)
"""

SQLITE_UPSERT = """
INSERT INTO customers AS c (customer_id, account, ref, addresses, metadata, appdata, created_at, updated_at,
                            last_job_id, last_line)
VALUES (?, ?, ?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'loader', ?)
ON CONFLICT (account, ref) DO UPDATE SET addresses = excluded.addresses,
    metadata = json_patch(c.metadata, excluded.metadata), appdata = json_patch(c.appdata, excluded.appdata),
    updated_at = excluded.updated_at, last_line = excluded.last_line
WHERE c.addresses IS NOT excluded.addresses OR json_patch(c.metadata, excluded.metadata) IS NOT c.metadata
   OR json_patch(c.appdata, excluded.appdata) IS NOT c.appdata
RETURNING customer_id, customer_id = ?
"""


class Store:
    def __init__(self, url, account):
        self.account = account
        self.pg = url.startswith("postgres")
        if self.pg:
            import psycopg
            self.conn = psycopg.connect(url)
        else:
            self.conn = sqlite3.connect(url.removeprefix("sqlite://"), isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("BEGIN")

    def upsert(self, rows):
        """rows: (line, ref, addresses, metadata, appdata) -> [(status, customer_id)]"""
        out = []
        if self.pg:
            params = [(str(uuid.uuid4()), self.account, ref, json.dumps(a), json.dumps(m), json.dumps(d), line)
                      for line, ref, a, m, d in rows]
            with self.conn.cursor() as cur:
                cur.executemany(PG_UPSERT, params, returning=True)
                for _ in params:
                    r = cur.fetchone()
                    out.append(("created" if r[1] else "updated", r[0]) if r else None)
                    cur.nextset()
                # Unchanged rows return nothing: look their ids up.
                missing = [p[2] for p, o in zip(params, out) if o is None]
                if missing:
                    cur.execute("SELECT ref, customer_id FROM customers WHERE account = %s AND ref = ANY(%s)",
                                (self.account, missing))
                    ids = dict(cur.fetchall())
                    out = [o or ("unchanged", ids[p[2]]) for p, o in zip(params, out)]
            self.conn.commit()
        else:
            cur = self.conn.cursor()
            for line, ref, a, m, d in rows:
                new_id = str(uuid.uuid4())
                r = cur.execute(SQLITE_UPSERT, (new_id, self.account, ref, json.dumps(a), json.dumps(m),
                                                json.dumps(d), line, new_id)).fetchone()
                if r:
                    out.append(("created" if r[1] else "updated", r[0]))
                else:
                    cid = cur.execute("SELECT customer_id FROM customers WHERE account = ? AND ref = ?",
                                      (self.account, ref)).fetchone()[0]
                    out.append(("unchanged", cid))
            self.conn.execute("COMMIT")
            self.conn.execute("BEGIN")
        return out

    def close(self):
        if not self.pg:
            self.conn.execute("COMMIT")
        self.conn.close()


def main():
    path, results_path, account, url = sys.argv[1:5]
    store = Store(url, account)
    seen = {}
    with open(path, newline="", encoding="utf-8-sig") as f, open(results_path, "w", newline="") as out:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader)]
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["line", "ref", "status", "customer_id", "error_code", "error_field", "error_message"])
        pending = []  # (line, ref, parsed-or-error) in input order

        def flush():
            valid = [(line, ref, *p) for line, ref, p in pending if isinstance(p[0], list)]
            done = iter(store.upsert(valid)) if valid else iter(())
            for line, ref, p in pending:
                if isinstance(p[0], list):
                    status, cid = next(done)
                    w.writerow([line, ref, status, cid, "", "", ""])
                else:
                    w.writerow([line, ref, "failed", "", *p])
            pending.clear()

        for row in reader:
            line = reader.line_num
            if not any(c.strip() for c in row):
                continue
            ref, parsed = parse_row(row, header)
            if ref in seen:
                parsed = ("duplicate_ref", "ref", f"ref is already used on line {seen[ref]} of this file")
            elif ref:
                seen[ref] = line
            pending.append((line, ref, parsed))
            if len(pending) >= BATCH:
                flush()
        flush()
    store.close()


if __name__ == "__main__":
    main()
