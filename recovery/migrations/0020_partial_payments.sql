-- A payment of less than the amount (a part payment on a hosted checkout) settles nothing:
-- it is recorded with its own amount and refunded, like a duplicate.
ALTER TABLE received_payments DROP CONSTRAINT received_payments_disposition_check;
ALTER TABLE received_payments ADD CONSTRAINT received_payments_disposition_check
    CHECK (disposition IN ('recovered', 'paid_after_end', 'duplicate', 'partial'));
