"""Stripe bank debits (SEPA Direct Debit, ACH) are waited out for as long as the banks can
take, and charged once (time-skipping server, real activities and Postgres, the real
`stripe` SDK against localstripe behind the proxy, whose bank debits stay `processing` for
days on its own clock as Stripe's do).

Reproduced: the workflow read a debit still processing as a 30-minute `payment_pending`,
then wrote it off and showed a next attempt a day later (reserved on the card-network
limits), and so on every day until the banks answered; only the re-check before each charge
stood between a debit still processing and a second one."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from recovery.models import RecoveryState
from recovery.policy import RetryPolicy
from recovery.settings import Settings
from recovery.store import Store
from tests.helpers import (
    RunningWorker,
    expedited,
    failure_body,
    ingest,
    relay,
    run_out,
    wait_for_state,
    workflow_state,
)
from tests.psp.localstripe_server import (
    DAY,
    TEST_API_KEY,
    SavedCard,
    advance_clock,
    create_customer_with_bank_account,
    payment_intents_for_customer,
    script_bank_debit,
    successful_charges,
)

# The SDK's httpx client posts its form body with `data=` (httpx prefers `content=`).
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture
def worker_settings(stripe_base: str) -> Settings:
    """The worker charges at localstripe (`worker` in tests/workflow/conftest.py)."""
    return Settings(
        environment="development", stripe_api_key=TEST_API_KEY, stripe_api_base=stripe_base
    )


async def expedited_first_debit(
    store: Store, worker: RunningWorker, merchant: str, account: SavedCard, currency: str
) -> WorkflowHandle:
    """A Stripe funds failure on a bank account, expedited: its first debit is processing."""
    client, task_queue = worker.client, worker.task_queue
    await store.save_policy(merchant, RetryPolicy(payday_snap_days=0), "test")
    body = failure_body(
        psp="stripe", decline_code="insufficient_funds", pm=account.payment_method_id
    )
    body["currency"] = currency
    body["payment_method"]["type"] = "sepa_debit" if currency == "eur" else "us_bank_account"
    body["customer"] = {"id": account.customer_id, "email": "c@example.com"}
    res = await ingest(store, merchant, body)
    await relay(store, client, task_queue)
    handle = client.get_workflow_handle(res.body["workflow_id"], result_type=RecoveryState)
    await expedited(handle)
    await wait_for_state(handle, lambda s: [a.outcome for a in s.attempts] == ["processing"])
    return handle


async def waiting_for_the_debit(handle: WorkflowHandle) -> RecoveryState:
    s = await workflow_state(handle)
    assert s.status == "active", s.ended_reason
    assert [a.outcome for a in s.attempts] == ["processing"]
    assert s.next_attempt_at is None, f"a next attempt shown while the debit is processing: {s}"
    assert s.category == "upi_pending"
    return s


@pytest.mark.parametrize(
    ("kind", "currency", "takes_days"),
    # SEPA: "up to 14 business days" (docs.stripe.com/payments/sepa-debit); ACH: "up to 4
    # business days" (docs.stripe.com/payments/ach-direct-debit), here over a weekend
    [("sepa_debit", "eur", 18), ("us_bank_account", "usd", 6)],
)
async def test_a_bank_debit_processing_for_days_is_waited_out_and_charged_once(
    worker: RunningWorker,
    ts_env: WorkflowEnvironment,
    store: Store,
    merchant: str,
    stripe_base: str,
    kind: str,
    currency: str,
    takes_days: int,
) -> None:
    account = create_customer_with_bank_account(stripe_base, kind)
    script_bank_debit(stripe_base, account.customer_id, after=takes_days * DAY)
    handle = await expedited_first_debit(store, worker, merchant, account, currency)

    await ts_env.sleep(timedelta(days=takes_days - 1))  # the workflow polls meanwhile
    s = await waiting_for_the_debit(handle)
    assert len(payment_intents_for_customer(stripe_base, account.customer_id)) == 1

    advance_clock(stripe_base, takes_days * DAY)  # the banks answer: paid
    result = await run_out(ts_env, handle)
    assert result.status == "recovered", result.ended_reason
    assert [a.outcome for a in result.attempts] == ["succeeded"]
    assert len(payment_intents_for_customer(stripe_base, account.customer_id)) == 1
    assert len(successful_charges(stripe_base, account.customer_id)) == 1
    rec = await store.get_recovery(merchant, s.payment_ref)
    assert [a.outcome for a in rec.attempts] == ["succeeded"] and rec.paid_by is not None


async def test_a_bank_debit_that_fails_days_later_is_followed_by_one_new_debit(
    worker: RunningWorker,
    ts_env: WorkflowEnvironment,
    store: Store,
    merchant: str,
    stripe_base: str,
) -> None:
    """The bank returns the debit for insufficient funds after three days: only then, and
    after the funds cooldown, is the account debited again."""
    account = create_customer_with_bank_account(stripe_base, "sepa_debit")
    script_bank_debit(
        stripe_base, account.customer_id, after=3 * DAY, failure={"code": "insufficient_funds"}
    )
    script_bank_debit(stripe_base, account.customer_id, after=0)  # the next one goes through
    handle = await expedited_first_debit(store, worker, merchant, account, "eur")
    await ts_env.sleep(timedelta(days=2))
    await waiting_for_the_debit(handle)

    advance_clock(stripe_base, 3 * DAY)
    await ts_env.sleep(timedelta(hours=2))
    s = await workflow_state(handle)
    assert [(a.outcome, a.code) for a in s.attempts] == [("failed", "insufficient_funds")], s
    assert s.next_attempt_at is not None and s.category == "funds"
    assert len(payment_intents_for_customer(stripe_base, account.customer_id)) == 1

    result = await run_out(ts_env, handle)
    assert result.status == "recovered", result.ended_reason
    assert [a.outcome for a in result.attempts] == ["failed", "succeeded"]
    assert len(payment_intents_for_customer(stripe_base, account.customer_id)) == 2
    assert len(successful_charges(stripe_base, account.customer_id)) == 1
