-- Customer retry links: one row per issued link (its id is the token's jti).
CREATE TABLE recovery_links (
    id               text PRIMARY KEY,
    merchant_id      text NOT NULL,
    payment_ref      text NOT NULL,
    recovery_id      text NOT NULL REFERENCES recoveries (id),
    issued_by        text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at       timestamptz NOT NULL,
    opened_at        timestamptz,
    used_at          timestamptz,
    revoked_at       timestamptz,
    revoked_reason   text,
    checkout_psp     text,
    checkout_id      text,
    checkout_url     text
);
CREATE INDEX recovery_links_recovery ON recovery_links (recovery_id);

-- Messages for the customer (retry links), waiting for a delivery integration
-- (merchant webhook or e-mail provider). They carry the link, so they are kept short-lived.
CREATE TABLE customer_notifications (
    id           bigserial PRIMARY KEY,
    merchant_id  text NOT NULL,
    payment_ref  text NOT NULL,
    link_id      text NOT NULL REFERENCES recovery_links (id),
    channel      text NOT NULL,
    recipient    text,
    url          text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at      timestamptz
);

-- The simulator PSP's hosted checkout pages.
CREATE TABLE simulator_checkouts (
    id           text PRIMARY KEY,
    link_id      text NOT NULL UNIQUE REFERENCES recovery_links (id),
    merchant_id  text NOT NULL,
    payment_ref  text NOT NULL,
    amount       bigint NOT NULL,
    currency     text NOT NULL,
    return_url   text NOT NULL,
    paid_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
