#!/usr/bin/env python3
"""The file-shape matrix of issue 26: customer files shaped as merchants'
exports are, not as one generator's. Writes the file to upload and the same
valid rows in the `customers` table's shape (for the raw-load baseline: only
the first row of a duplicated ref, no invalid row).

usage: shapes.py SHAPE ROWS OUT.csv RAW.csv ACCOUNT
shapes:
  gen          bench/gen_customers.py's file (refs random hex, ascending suffix)
  asc          refs r-00000001… ascending; address/address_2 columns; phones of
               8 countries and emails; a quoted multi-line note; 5 % invalid
               (bad phone, bad email, empty ref, duplicate ref)
  shuffled     the same rows as asc, in shuffled order
  random       asc with refs random strings of 4..40 characters, mixed case
  list         asc with one `addresses` cell ("+44…; ann@…")
  one-country  asc with every phone in one country (+1)
  wide         asc with 16 more metadata columns of 8..24 characters
"""
import csv, json, random, string, subprocess, sys

from ids import JOB_ID, STORED_NOW, ordered_ids, stored

shape, rows, out_path, raw_path, account = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
if shape == "gen":
    subprocess.run([sys.executable, __file__.replace("shapes.py", "gen_customers.py"), str(rows), out_path,
                    raw_path, account], check=True)
    sys.exit(0)
if shape not in ("asc", "shuffled", "random", "list", "one-country", "wide"):
    sys.exit(f"unknown shape {shape}")

rnd = random.Random(26)
now = STORED_NOW
# (country code, national number length): lengths libphonenumber calls possible.
COUNTRIES = [("1", 10), ("44", 10), ("33", 9), ("49", 11), ("61", 9), ("81", 10), ("55", 11), ("91", 10)]
CITIES = ["Oslo", "Lyon", "Austin", "Osaka", "Lima", "Perth", "Turku", "Porto"]


def phone(i):
    code, length = COUNTRIES[0] if shape == "one-country" else COUNTRIES[i % len(COUNTRIES)]
    first = "2" if code == "1" else "7" if code == "44" else "6" if code in ("33", "61") else "1" if code == "49" else "9"
    return f"+{code}{first}{rnd.randrange(10 ** (length - 1)):0{length - 1}d}"


def ref_of(i):
    if shape == "random":
        n = rnd.randint(4, 40)
        return "".join(rnd.choices(string.ascii_letters + string.digits + "-_", k=n)) + f".{i:x}"
    return f"r-{i + 1:08d}"


records = []
for i in range(rows):
    ref = ref_of(i)
    email = f"user{i}@example{i % 97}.com"
    tel = phone(i)
    name, city = f"Customer {i}", CITIES[i % len(CITIES)]
    note = f"line one of {i}\nline two, \"quoted\"" if i % 10 == 0 else ""
    roll = rnd.random()
    bad = roll < 0.05
    if bad:
        kind = rnd.randrange(4)
        if kind == 0:
            tel = tel[:5]                      # too short for its country
        elif kind == 1:
            email = f"user{i}@@example.com"    # not an email
        elif kind == 2:
            ref = ""                           # empty ref
        elif i > 0:
            ref = records[rnd.randrange(len(records))][0] or ref  # a ref seen before
    addrs = [tel, email] if i % 3 else [email, tel]
    if not bad and roll < 0.35:
        addrs = addrs[:1]
    wide = [f"{rnd.choice(CITIES)}-{rnd.randrange(10 ** rnd.randint(4, 18))}" for _ in range(16)] if shape == "wide" else []
    records.append((ref, addrs, name, city, note, f"crm-{i}", wide))

order = list(range(rows))
if shape == "shuffled":
    rnd.shuffle(order)

with open(out_path, "w", newline="") as out:
    w = csv.writer(out, lineterminator="\n")
    head = ["ref"] + (["addresses"] if shape == "list" else ["address", "address_2"])
    head += ["metadata.name", "metadata.city", "metadata.note", "appdata.crm_id"]
    head += [f"metadata.attr_{k:02d}" for k in range(16)] if shape == "wide" else []
    w.writerow(head)
    for idx in order:
        ref, addrs, name, city, note, crm, wide = records[idx]
        cells = [ref] + (["; ".join(addrs)] if shape == "list" else (addrs + [""])[:2])
        w.writerow(cells + [name, city, note, crm] + wide)

# The raw load's rows: what intake would store, first occurrence of each ref,
# no invalid row (bad phones and emails are detected by the marks below).
bad_rows = set()
for idx, (ref, addrs, *_rest) in enumerate(records):
    if any(a.startswith("+") and len(a) < 8 for a in addrs) or any("@@" in a for a in addrs) or not ref:
        bad_rows.add(idx)
seen, ids = set(), ordered_ids()
with open(raw_path, "w", newline="") as raw:
    r = csv.writer(raw, lineterminator="\n")
    for line, idx in enumerate(order, start=2):
        ref, addrs, name, city, note, crm, wide = records[idx]
        if idx in bad_rows or ref in seen:
            continue
        seen.add(ref)
        addresses = [{"type": "phone" if a.startswith("+") else "email", "value": a} for a in addrs]
        meta = {"name": name, "city": city}
        if note:
            meta["note"] = note
        meta.update({f"attr_{k:02d}": v for k, v in enumerate(wide)})
        r.writerow([next(ids), account, ref, stored(addresses),
                    stored(meta), stored({"crm_id": crm}), now, now, JOB_ID, line])
