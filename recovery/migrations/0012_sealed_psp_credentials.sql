-- Merchants' PSP credentials sealed at rest (AES-256-GCM, recovery/psp/sealing.py): `sealed`
-- is nonce || ciphertext under the key `key_id`. Rows written before this keep their plaintext
-- `credentials` until their next write or `recovery psp reseal`, which clear it.
ALTER TABLE merchant_psp_credentials
    ALTER COLUMN credentials DROP NOT NULL,
    ADD COLUMN key_id text,
    ADD COLUMN sealed bytea,
    ADD CONSTRAINT merchant_psp_credentials_one_form CHECK (
        (sealed IS NULL) = (key_id IS NULL) AND (sealed IS NULL) = (credentials IS NOT NULL)
    );
