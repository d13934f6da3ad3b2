-- When intake last warned that a key expires soon (Unix seconds): at most
-- one warning (log and `pgp.key_expiring` webhook event) per key per day,
-- claimed with a conditional UPDATE so two nodes never both send it.
ALTER TABLE pgp_keys ADD COLUMN expiry_warned_at INTEGER;
