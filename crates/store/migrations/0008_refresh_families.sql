-- Refresh-token families (core::oauth::family): a family's row stands for its current token,
-- at `generation`, and moves to the next generation in place at each rotation. Rows issued
-- before families, one per token, keep `generation` empty.
ALTER TABLE oauth_refresh_tokens ADD COLUMN generation BIGINT;
