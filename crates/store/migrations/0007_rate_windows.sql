-- Rate limits counted across every node that shares the database (sign-in failures, dynamic
-- client registration): one row per limited key (a hash naming the limit and, say, the client
-- address), counting events in a fixed window that ends at `ends_at`. Rows whose window has
-- ended are deleted by housekeeping.
CREATE TABLE rate_windows (
    key TEXT PRIMARY KEY,
    ends_at BIGINT NOT NULL,
    count BIGINT NOT NULL
);
CREATE INDEX rate_windows_ends_at ON rate_windows (ends_at);
