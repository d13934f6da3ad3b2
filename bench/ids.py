"""Customer ids for the raw-load baselines: the ids intake itself gives
(UUIDv7: a millisecond timestamp first, so they ascend in insertion order),
not random UUIDv4s. A random id makes the raw load insert into its
`customer_id` key at random places, which costs the raw load alone (intake's
ids ascend): 1 M `random`-shape rows took 26.0 s to `.import` with random ids
against 16.9 s with these, and 28.9 s against 20.6 s to `\\copy` (2026-12-07).
"""
import json
import random
import uuid

_START_MS = 1_796_637_600_000  # 2026-12-07T10:00:00Z

# What intake stores beside each customer, at the length it stores it: the
# job that created it (a UUIDv7, 36 characters) and the creation and update
# times (on SQLite, text to the millisecond). The raw loads once had
# `raw-load` and whole seconds: 32 bytes a row less to write than intake.
JOB_ID = "01a24ff2-2900-7fff-bfff-0123456789ab"
STORED_NOW = "2026-12-07T10:00:00.000Z"


def stored(value):
    """A JSON column's text as intake stores it (serde_json's: no spaces)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def ordered_ids(rows_per_ms=30, seed=7):
    """UUIDv7s for rows inserted `rows_per_ms` to a millisecond, ascending."""
    rnd = random.Random(seed)
    i = 0
    while True:
        ms = _START_MS + i // rows_per_ms
        # The counter of the millisecond in rand_a keeps them ascending within it.
        rand_a = (i % rows_per_ms) & 0xFFF
        value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rnd.getrandbits(62)
        yield str(uuid.UUID(int=value))
        i += 1
