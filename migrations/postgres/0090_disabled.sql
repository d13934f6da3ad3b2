-- An operator may disable an account or a user (`intake account|user
-- disable`, the console's /admin/accounts): a disabled user, or any user of
-- a disabled account, cannot sign in over SFTP or to the console and their
-- API tokens are refused; enabling them again restores all of it.
ALTER TABLE accounts ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE sftp_users ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;
