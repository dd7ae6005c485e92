-- Merchant retry policies, versioned: a recovery pins the version it started with.
CREATE TABLE merchant_policies (
    merchant_id  text NOT NULL REFERENCES merchants (id),
    version      integer NOT NULL CHECK (version > 0),
    policy       jsonb NOT NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, version)
);

ALTER TABLE recoveries ADD COLUMN policy_version integer;

-- Card-network limits count our attempts per card across a merchant's recoveries.
ALTER TABLE attempts ADD COLUMN merchant_id text;
ALTER TABLE attempts ADD COLUMN payment_method_id text;
UPDATE attempts a SET merchant_id = r.merchant_id FROM recoveries r WHERE r.id = a.recovery_id;
CREATE INDEX attempts_by_card ON attempts (merchant_id, payment_method_id, created_at)
    WHERE payment_method_id IS NOT NULL;
