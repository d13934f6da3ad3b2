-- The last TOTP time step accepted for a principal: a code of that step or
-- an earlier one is not accepted again (RFC 6238 §5.2), whether at sign-in
-- or to turn two-factor sign-in off. NULL: none accepted yet.
ALTER TABLE console_totp ADD COLUMN last_step BIGINT;
