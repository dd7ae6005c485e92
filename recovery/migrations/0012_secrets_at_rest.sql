-- Secrets at rest. Merchants' PSP credentials are sealed (AES-256-GCM,
-- recovery/psp/sealing.py): `sealed` is nonce || ciphertext under the key `key_id`. Rows
-- written before this keep their plaintext `credentials` until their next write or
-- `recovery psp reseal`, which clear it.
ALTER TABLE merchant_psp_credentials
    ALTER COLUMN credentials DROP NOT NULL,
    ADD COLUMN key_id text,
    ADD COLUMN sealed bytea,
    ADD CONSTRAINT merchant_psp_credentials_one_form CHECK (
        (sealed IS NULL) = (key_id IS NULL) AND (sealed IS NULL) = (credentials IS NOT NULL)
    );

-- Customer notifications keep their link id, not the link's URL: the URL (and its token) is
-- built from the link row when the message is sent (recovery.retry_links.notification_url).
ALTER TABLE customer_notifications DROP COLUMN url;
