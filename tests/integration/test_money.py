"""Money is never lost or taken twice: every payment a customer makes is recorded once and
settles its recovery, shows on an ended one, or is refunded as a duplicate; a hosted
checkout takes no money once its recovery ended."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from temporalio.testing import WorkflowEnvironment

from recovery.models import (
    ChargeRequest,
    ChargeResult,
    Customer,
    Failure,
    PaymentMethod,
    WebhookEvent,
)
from recovery.payments import Disposition, RecoveryFacts, dispose
from recovery.store import Store
from recovery.webhook_routing import WebhookOutcome
from tests.helpers import (
    INGEST,
    Stack,
    eventually,
    failure_body,
    ingest,
    recovery,
    running_stack,
)
from worker.main import build_worker


def test_every_payment_falls_under_exactly_one_rule() -> None:
    running = RecoveryFacts(status="active", ended=False, settled=False)
    assert dispose(running) is Disposition.RECOVERED
    for status in ("cancelled", "exhausted"):
        assert dispose(RecoveryFacts(status, ended=True, settled=False)) is (
            Disposition.PAID_AFTER_END
        )
        assert dispose(RecoveryFacts(status, ended=True, settled=True)) is Disposition.DUPLICATE
    assert dispose(RecoveryFacts("recovered", ended=True, settled=False)) is Disposition.DUPLICATE
    assert dispose(RecoveryFacts("active", ended=False, settled=True)) is Disposition.DUPLICATE


async def checkout_of(api: Stack, ref: str) -> str:
    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=api.auth())
    assert r.status_code == 201, r.text
    opened = await api.http.post(urlsplit(r.json()["url"]).path)
    assert opened.status_code == 303, opened.text
    return urlsplit(opened.headers["location"]).path


async def test_two_checkouts_paid_one_recovers_the_other_is_refunded(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment
) -> None:
    """Reproduced bug: two links, two open checkouts, both paid: the second payment was
    taken and dropped. Both are paid before the recovery's worker runs at all."""
    address = dev_env.client.service_client.config.target_host
    async with running_stack(store, pg_dsn, address, worker=False) as api:
        body = failure_body(pm="pm_sim_decline_insufficient_funds")
        ref = body["payment_ref"]
        assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202
        first, second = await checkout_of(api, ref), await checkout_of(api, ref)
        assert (await api.http.post(first)).status_code == 303
        assert (await api.http.post(second)).status_code == 303  # the customer paid twice
        tq = api.settings.temporal_task_queue
        async with build_worker(dev_env.client, store, tq, settings=api.settings):

            async def settled() -> dict:
                rec = await recovery(api, ref)
                assert rec["status"] == "recovered", rec
                assert [p["refund_status"] for p in rec["payments"]] == [None, "succeeded"]
                return rec

            rec = await eventually(settled, within=30)
    assert rec["paid"] is True and rec["attempts"] == []
    kept, refunded = rec["payments"]
    assert kept["disposition"] == "recovered" and kept["source"] == "simulator_checkout"
    assert refunded["disposition"] == "duplicate" and refunded["amount"] == 4999
    assert kept["psp_payment_id"] == urlsplit(first).path.rsplit("/", 1)[1]
    refunds = await store.pool.fetch(
        "SELECT psp_payment_id, amount FROM simulator_refunds WHERE psp_payment_id = $1",
        refunded["psp_payment_id"],
    )
    assert [(r["psp_payment_id"], r["amount"]) for r in refunds] == [
        (urlsplit(second).path.rsplit("/", 1)[1], 4999)
    ]


async def test_a_checkout_opened_before_a_cancel_takes_no_money_after_it(api: Stack) -> None:
    """Reproduced bug: a checkout opened before the cancel still took the money."""
    body = failure_body(pm="pm_sim_decline_insufficient_funds")
    ref = body["payment_ref"]
    assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202

    async def scheduled() -> bool:
        return (await recovery(api, ref))["next_attempt_at"] is not None

    await eventually(scheduled)
    checkout = await checkout_of(api, ref)
    r = await api.http.post(
        f"/v1/recoveries/by_ref/{ref}/cancel", json={"reason": "x"}, headers=api.auth()
    )
    assert r.json()["status"] == "cancelled"

    async def closed() -> bool:
        return bool(
            await api.store.pool.fetchval(
                "SELECT closed_at IS NOT NULL FROM simulator_checkouts WHERE id = $1",
                checkout.rsplit("/", 1)[1],
            )
        )

    await eventually(closed)
    r = await api.http.post(checkout)
    assert r.status_code == 409 and "closed" in r.text
    rec = await recovery(api, ref)
    assert rec["payments"] == [] and rec["paid"] is False and rec["status"] == "cancelled"


def _paid(merchant: str, ref: str, event_id: str, payment_id: str) -> WebhookEvent:
    return WebhookEvent(
        psp="stripe",
        event_id=event_id,
        kind="payment_succeeded",
        psp_type="payment_intent.succeeded",
        merchant_id=merchant,
        payment_ref=ref,
        psp_payment_id=payment_id,
        amount=4999,
        currency="usd",
    )


async def test_a_payment_after_the_end_shows_and_a_second_is_refunded(
    store: Store, merchant: str
) -> None:
    """Reproduced bug: a `payment_succeeded` for an ended recovery was logged and dropped."""
    body = failure_body()
    await ingest(store, merchant, body)
    ref = body["payment_ref"]
    await store.pool.execute(
        "UPDATE recoveries SET status = 'cancelled', ended_at = now()"
        " WHERE merchant_id = $1 AND payment_ref = $2",
        merchant,
        ref,
    )
    new, outcome = await store.record_webhook(_paid(merchant, ref, "evt_a", "pi_a"), {})
    assert new and outcome is WebhookOutcome.PAID_AFTER_END
    rec = await store.get_recovery(merchant, ref)
    assert rec.status == "cancelled" and rec.paid_by is not None
    # the same payment told again (another event of it): recorded once
    _, outcome = await store.record_webhook(_paid(merchant, ref, "evt_b", "pi_a"), {})
    assert outcome is WebhookOutcome.PAYMENT_ALREADY_RECORDED
    # another payment: a duplicate, refunded through the outbox
    _, outcome = await store.record_webhook(_paid(merchant, ref, "evt_c", "pi_c"), {})
    assert outcome is WebhookOutcome.REFUNDING_DUPLICATE
    payments = await store.payments_of(rec.id)
    assert [(p.psp_payment_id, p.disposition, p.refund_status) for p in payments] == [
        ("pi_a", "paid_after_end", None),
        ("pi_c", "duplicate", "pending"),
    ]
    queued = await store.pool.fetch(
        "SELECT workflow_id, payload FROM outbox WHERE signal = 'start_refund'"
        " AND payload->>'received_payment_id' = $1",
        payments[1].id,
    )
    assert [r["workflow_id"] for r in queued] == [f"refund/{merchant}/{payments[1].id}"]
    # the metrics count them (other tests' payments in this database may count too)
    counted = (await store.metrics_snapshot()).payments
    assert counted[("paid_after_end", "none")] >= 1 and counted[("duplicate", "pending")] >= 1


async def test_our_charge_succeeding_after_the_customer_paid_is_refunded(
    store: Store, merchant: str
) -> None:
    body = failure_body()
    res = await ingest(store, merchant, body)
    ref = body["payment_ref"]
    _, outcome = await store.record_webhook(_paid(merchant, ref, "evt_x", "pi_customer"), {})
    assert outcome is WebhookOutcome.SIGNALLED_PAYMENT_SUCCEEDED
    key = f"{res.body['recovery_id']}:attempt:1"
    await store.begin_attempt(
        ChargeRequest(
            merchant_id=merchant,
            recovery_id=res.body["recovery_id"],
            payment_ref=ref,
            attempt=1,
            idempotency_key=key,
            psp="stripe",
            amount=4999,
            currency="usd",
            customer=Customer(id="cus_1"),
            payment_method=PaymentMethod(id="pm_1"),
            original_failure=Failure(code="card_declined"),
        )
    )
    await store.complete_attempt(key, ChargeResult(status="succeeded", psp_payment_id="pi_ours"))
    payments = await store.payments_of(res.body["recovery_id"])
    assert [(p.psp_payment_id, p.source, p.disposition) for p in payments] == [
        ("pi_customer", "stripe_webhook", "recovered"),
        ("pi_ours", "attempt", "duplicate"),
    ]
    # Stripe's own event of our charge is the same payment: not recorded again
    _, outcome = await store.record_webhook(
        _paid(merchant, ref, f"evt_{uuid.uuid4()}", "pi_ours"), {}
    )
    assert outcome is WebhookOutcome.PAYMENT_ALREADY_RECORDED
