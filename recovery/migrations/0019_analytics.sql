-- Analytics without joins: each recovery run carries what its figures need, so that every
-- figure of recovery/store/analytics.py reads one index range of `recoveries` alone.
--
-- - `amount`, `currency`: its payment's (`transactions.amount`, `.currency`), as the figures
--   always counted them: a later event of the payment that changes its amount changes it on
--   every run of that payment, as it did through the join.
-- - `recovered_by_attempt`: for a run that ended `recovered`, the number of our charge attempt
--   that recovered it: the first succeeded attempt whose PSP payment is the one that settled
--   it (`paid_by`), or, for runs settled before payments were recorded, its first succeeded
--   attempt; 0 when none (the customer paid themselves: a retry link, the PSP's own page).
--   NULL while the run is not `recovered`.
--
-- They are derived, never written by the application: the triggers below keep them in step
-- with what they are derived from, whichever statement changes it (a payment's amount at
-- ingest, a run opened by ingest or redrive, its end, the payment that settles it, an
-- attempt that succeeds late), so no writer can leave them stale.

ALTER TABLE recoveries
    ADD COLUMN amount bigint,
    ADD COLUMN currency text,
    ADD COLUMN recovered_by_attempt integer;

-- The attempt that recovered a run (see above); `paid_by` is the run's, and a received
-- payment's `psp_payment_id` is written once, with the payment.
CREATE FUNCTION recovering_attempt(run_id text, settled_by text) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT coalesce((
        SELECT a.number FROM attempts a
         WHERE a.recovery_id = run_id AND a.status = 'succeeded'
           AND (settled_by IS NULL OR a.psp_payment_id = (
                SELECT p.psp_payment_id FROM received_payments p WHERE p.id = settled_by))
         ORDER BY a.number LIMIT 1), 0)
$$;

UPDATE recoveries r SET amount = t.amount, currency = t.currency
  FROM transactions t
 WHERE t.merchant_id = r.merchant_id AND t.payment_ref = r.payment_ref;
UPDATE recoveries SET recovered_by_attempt = recovering_attempt(id, paid_by)
 WHERE status = 'recovered';
ALTER TABLE recoveries ALTER COLUMN amount SET NOT NULL, ALTER COLUMN currency SET NOT NULL;

-- A run: its payment's amount when it opens; its attempt whenever its status or the
-- payment that settled it changes.
CREATE FUNCTION recoveries_derive_figures() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT t.amount, t.currency INTO NEW.amount, NEW.currency
          FROM transactions t
         WHERE t.merchant_id = NEW.merchant_id AND t.payment_ref = NEW.payment_ref;
        IF NOT FOUND THEN  -- e.g. inserted by a WITH of the same statement: not seen yet
            RAISE EXCEPTION 'recovery % of payment %/%: insert its payment (transactions) first',
                NEW.id, NEW.merchant_id, NEW.payment_ref
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END IF;
    NEW.recovered_by_attempt := CASE WHEN NEW.status = 'recovered'
                                     THEN recovering_attempt(NEW.id, NEW.paid_by) END;
    RETURN NEW;
END
$$;
CREATE TRIGGER recoveries_derive_on_insert BEFORE INSERT ON recoveries
    FOR EACH ROW EXECUTE FUNCTION recoveries_derive_figures();
CREATE TRIGGER recoveries_derive_on_update BEFORE UPDATE OF status, paid_by ON recoveries
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.paid_by IS DISTINCT FROM NEW.paid_by)
    EXECUTE FUNCTION recoveries_derive_figures();

-- A payment's new amount or currency (a later failure event of it): on every run of it.
CREATE FUNCTION transactions_copy_amount() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE recoveries SET amount = NEW.amount, currency = NEW.currency
     WHERE merchant_id = NEW.merchant_id AND payment_ref = NEW.payment_ref;
    RETURN NULL;
END
$$;
CREATE TRIGGER transactions_copy_amount AFTER UPDATE OF amount, currency ON transactions
    FOR EACH ROW
    WHEN (OLD.amount IS DISTINCT FROM NEW.amount OR OLD.currency IS DISTINCT FROM NEW.currency)
    EXECUTE FUNCTION transactions_copy_amount();

-- An attempt that succeeds (or stops being the success) after its run ended recovered: the
-- run's attempt again. A running recovery gets its attempt when it ends.
CREATE FUNCTION attempts_rederive_recovery() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE recoveries r SET recovered_by_attempt = recovering_attempt(r.id, r.paid_by)
     WHERE r.id = NEW.recovery_id AND r.status = 'recovered'
       AND r.recovered_by_attempt IS DISTINCT FROM recovering_attempt(r.id, r.paid_by);
    RETURN NULL;
END
$$;
CREATE TRIGGER attempts_rederive_on_insert AFTER INSERT ON attempts
    FOR EACH ROW WHEN (NEW.status = 'succeeded')
    EXECUTE FUNCTION attempts_rederive_recovery();
CREATE TRIGGER attempts_rederive_on_update AFTER UPDATE OF status, psp_payment_id ON attempts
    FOR EACH ROW
    WHEN ((OLD.status = 'succeeded' OR NEW.status = 'succeeded')
          AND (OLD.status IS DISTINCT FROM NEW.status
               OR OLD.psp_payment_id IS DISTINCT FROM NEW.psp_payment_id))
    EXECUTE FUNCTION attempts_rederive_recovery();

-- Each figure's index range holds what it reads (index-only scans):
-- runs that ended in a period: counts, amounts, categories, attempts, times to recover;
DROP INDEX recoveries_ended_analytics;
CREATE INDEX recoveries_ended_analytics ON recoveries (merchant_id, ended_at)
    INCLUDE (status, category, currency, amount, recovered_by_attempt, started_at)
    WHERE ended_at IS NOT NULL;
-- runs still open, by when they started (the open figures; runs ended after the period's
-- end come from the range above).
CREATE INDEX recoveries_open_analytics ON recoveries (merchant_id, started_at)
    INCLUDE (currency, amount) WHERE ended_at IS NULL;
