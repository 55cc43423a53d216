-- Whether the user's email address is known to be theirs. ezForge sends no mail; an address
-- is verified when the account was created with an invite bound to exactly that address.
-- Access allow-lists match verified addresses only.
ALTER TABLE users ADD COLUMN email_verified BIGINT NOT NULL DEFAULT 0;
