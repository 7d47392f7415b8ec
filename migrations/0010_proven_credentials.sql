-- Pre-hijacking defences (auth::api::accounts and auth::api::oauth).
--
-- When the password was last shown to belong to whoever controls the
-- address: set by a password reset (the mailbox proved) or by a verification
-- that also presented the password. NULL: the password was chosen by someone
-- who had not proven the address (at signup, before verification), so a
-- proven owner who claims the account through a provider does not share it
-- with that password.
ALTER TABLE users ADD COLUMN password_proven_at INTEGER;

-- The session that started a link flow: the callback links only while it
-- still lives, so a sign-out everywhere also cancels flows in progress.
ALTER TABLE oauth_states ADD COLUMN session_id TEXT;
