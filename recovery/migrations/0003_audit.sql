-- Support actions, who did them and what came of it.
CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    merchant_id   text NOT NULL,
    actor_key_id  text NOT NULL,
    actor_role    text NOT NULL,
    action        text NOT NULL,
    payment_ref   text,
    recovery_id   text,
    reason        text,
    result        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX audit_log_by_ref ON audit_log (merchant_id, payment_ref, created_at DESC);

ALTER TABLE recoveries ADD COLUMN paused boolean NOT NULL DEFAULT false;
