-- OpenPGP (spec §12): an account's rules, and its keys. A server key (role
-- 'server') is kept armoured with its secret parts locked by the operator's
-- passphrase; a merchant key (role 'merchant') is a public key. Times are
-- Unix seconds.
ALTER TABLE accounts ADD COLUMN pgp_require_encryption BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE accounts ADD COLUMN pgp_require_signature BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE accounts ADD COLUMN pgp_encrypt_reports BOOLEAN NOT NULL DEFAULT false;
CREATE TABLE pgp_keys (
    account         TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    role            TEXT NOT NULL,
    armored         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    -- 1, 2, ... per account, in the order the keys were added (the newest
    -- server key is the one offered).
    serial          BIGINT NOT NULL,
    PRIMARY KEY (account, fingerprint)
);
