-- E-mail to customers. A notification is one message the recovery sends (or would send) to
-- the customer: the first retry link of a wait, a reminder with a fresh link, a receipt.
-- It is created once per `notification_key` (the activity that records it may be retried)
-- and then queued -> sent | failed | suppressed (never sent: no address, e-mail off, the
-- recovery ended first). `message_id` is derived from the key: every try of one message
-- carries the same Message-ID.
ALTER TABLE customer_notifications
    ALTER COLUMN link_id DROP NOT NULL,
    ADD COLUMN recovery_id      text REFERENCES recoveries (id),
    ADD COLUMN notification_key text UNIQUE,
    ADD COLUMN kind             text NOT NULL DEFAULT 'retry_link'
        CHECK (kind IN ('retry_link', 'reminder', 'receipt')),
    ADD COLUMN status           text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'sent', 'failed', 'suppressed')),
    ADD COLUMN subject          text,
    ADD COLUMN message_id       text,
    ADD COLUMN tries            int NOT NULL DEFAULT 0,
    ADD COLUMN error            text,
    ADD COLUMN updated_at       timestamptz;

-- Messages recorded before e-mail was sent: their links expired long ago, none goes out now.
UPDATE customer_notifications n
   SET status = 'suppressed',
       error = 'recorded before e-mail delivery existed: never sent',
       recovery_id = l.recovery_id,
       updated_at = clock_timestamp()
  FROM recovery_links l
 WHERE l.id = n.link_id;

CREATE INDEX customer_notifications_payment ON customer_notifications (merchant_id, payment_ref);

-- The address customers may reply to (the merchant's support desk); null: no Reply-To.
ALTER TABLE merchants ADD COLUMN reply_to text;
