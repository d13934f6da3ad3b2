-- One fixed-width UTC text form for every timestamp (milliseconds:
-- `2026-11-26T10:00:00.000Z`, what strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
-- gives), so that comparing them as text compares them as time; the
-- database's clock sets heartbeats, retries and arrivals from now on.
UPDATE jobs SET
    received_at = strftime('%Y-%m-%dT%H:%M:%fZ', received_at),
    started_at = strftime('%Y-%m-%dT%H:%M:%fZ', started_at),
    finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', finished_at),
    heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ', heartbeat_at),
    retry_at = strftime('%Y-%m-%dT%H:%M:%fZ', retry_at);
UPDATE customers SET
    created_at = strftime('%Y-%m-%dT%H:%M:%fZ', created_at),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', updated_at);
