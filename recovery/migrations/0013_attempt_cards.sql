-- Card-network limits count every attempt on the card the PSP actually charges: one key per
-- card whatever payment-method ids name it (Stripe's card fingerprint, Razorpay's card id),
-- the default card included. Each attempt is reserved on its card before the charge, at the
-- workflow's time of the attempt, under a lock per card, so concurrent recoveries on one card
-- cannot both pass a limit; the attempt row keeps the same card key.
CREATE TABLE attempt_cards (
    idempotency_key    text PRIMARY KEY,   -- the attempt's (attempts.idempotency_key)
    merchant_id        text NOT NULL REFERENCES merchants (id),
    card_key           text NOT NULL,
    brand              text,
    payment_method_id  text,
    attempted_at       timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX attempt_cards_by_card ON attempt_cards (merchant_id, card_key, attempted_at);

ALTER TABLE attempts ADD COLUMN card_key text;
