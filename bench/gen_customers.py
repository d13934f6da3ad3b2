#!/usr/bin/env python3
"""Generates a realistic customer file for benchmarks: a mix of phones and
emails, metadata and appdata, about 5% bad rows. Also writes the same valid
rows in the `customers` table's shape (for the raw-load baseline).

usage: gen_customers.py ROWS OUT.csv RAW.csv ACCOUNT [--changed]
  --changed: the same refs and values, but every other row's metadata.city
             differs (a re-import: half the rows update, half are unchanged)
"""
import csv, json, random, sys

from ids import JOB_ID, STORED_NOW, ordered_ids, stored

rows, out_path, raw_path, account = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
changed = "--changed" in sys.argv[5:]
rnd = random.Random(42)
ids = ordered_ids()
cities = ["Oslo", "Lyon", "Austin", "Osaka", "Lima", "Perth", "Turku", "Porto"]
now = STORED_NOW
with open(out_path, "w", newline="") as out, open(raw_path, "w", newline="") as raw:
    w = csv.writer(out, lineterminator="\n")
    r = csv.writer(raw, lineterminator="\n")
    w.writerow(["ref", "email", "phone", "metadata.name", "metadata.city", "appdata.crm_id"])
    for i in range(rows):
        ref = f"cus-{rnd.getrandbits(48):012x}-{i}"
        email = f"user{i}@example{i % 97}.com"
        phone = f"+1555{rnd.randrange(10**7):07d}"
        kind = rnd.random()
        bad = rnd.random() < 0.05
        if bad:
            if kind < 0.5:
                phone, email = "+1555", ""
            else:
                email, phone = f"user{i}@@example.com", ""
        elif kind < 0.3:
            email = ""
        elif kind < 0.6:
            phone = ""
        name, city, crm = f"Customer {i}", cities[i % len(cities)], f"crm-{i}"
        if changed and i % 2 == 0:
            city = "Bergen"
        w.writerow([ref, email, phone, name, city, crm])
        if not bad:
            addresses = []
            if email:
                addresses.append({"type": "email", "value": email})
            if phone:
                addresses.append({"type": "phone", "value": phone})
            rnd.getrandbits(128)  # the random id raw rows had: the file's rows stay as they were
            r.writerow([next(ids), account, ref, stored(addresses),
                        stored({"name": name, "city": city}), stored({"crm_id": crm}), now, now,
                        JOB_ID, i + 2])
