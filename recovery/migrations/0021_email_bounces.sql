-- A message the SMTP server accepted may bounce later (a delivery status notification mailed
-- back to us): it is then failed, with when and why, and its address is not mailed again
-- for the merchant. Bounces name the message by its Message-ID.
ALTER TABLE customer_notifications ADD COLUMN bounced_at timestamptz;

CREATE INDEX customer_notifications_message_id ON customer_notifications (message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX customer_notifications_bounced ON customer_notifications (merchant_id, lower(recipient))
    WHERE bounced_at IS NOT NULL;
