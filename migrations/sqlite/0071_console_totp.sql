-- Time-based one-time passwords (RFC 6238) for console sign-in, per
-- principal ('user' or 'operator'); `enabled_at` NULL: enrolment started,
-- not confirmed. Recovery codes are kept as SHA-256, each used once.
CREATE TABLE console_totp (
    kind            TEXT NOT NULL,
    principal       TEXT NOT NULL,
    secret          TEXT NOT NULL,
    enabled_at      INTEGER,
    PRIMARY KEY (kind, principal)
);

CREATE TABLE console_recovery_codes (
    kind            TEXT NOT NULL,
    principal       TEXT NOT NULL,
    code_hash       TEXT NOT NULL,
    used_at         INTEGER,
    PRIMARY KEY (kind, principal, code_hash)
);
