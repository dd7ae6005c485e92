"""Money properties over random runs of the whole recovery engine: the real workflow and
activities, Postgres and the simulator PSP, on a time-skipping server of each example's own.

Hypothesis drives random sequences of failures (ingested, as the API and the PSPs' webhooks
deliver them, first ones and repeated ones), expedites, pauses and resumes, checkouts paid
through retry links (at once, or opened now and paid later: several back to back, or while
a charge is in flight, before the recovery has heard of the last payment), and time
passing, for one card across several recoveries, under random policies. Whatever happens: no
rolling window ever holds more attempts on the card than its network (and the merchant's
policy) allows, no attempt is charged without its attempt row, and no recovery keeps two
payments (a second one is refunded)."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.errors import RecoveryError
from recovery.models import ExpediteRequest, PauseRequest, ResumeRequest
from recovery.policy import RetryPolicy, card_limits
from recovery.store import IngestOutcome, Store
from tests.helpers import failure_body, ingest, relay, running_worker
from tests.helpers.workflows import time_skipping_server

SCRIPTS = ("decline_insufficient_funds", "succeed_on_2", "succeed_on_4")
"""What the simulator answers each recovery's charges: funds declines for ever, or a success
on the second or fourth charge of that payment method."""

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 8),
    window_days=st.integers(1, 30),
    jitter=st.sampled_from([0.0, 0.3]),
    cooldown_multiplier=st.sampled_from([0.1, 0.5, 1.0]),
    payday_snap_days=st.just(0),
    card_attempts_per_30_days=st.integers(1, 20),
    card_attempts_per_day=st.integers(1, 9),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("failure"), st.integers(0, len(SCRIPTS) - 1)),
        st.tuples(
            st.sampled_from(["again", "expedite", "pause", "resume", "checkout", "open", "pay"]),
            st.integers(0, 3),
        ),
        st.tuples(st.just("wait"), st.integers(1, 96)),  # hours
    ),
    min_size=1,
    max_size=14,
)


class World:
    """One merchant's recoveries of payments made with one card."""

    def __init__(self, store: Store, env: WorkflowEnvironment, task_queue: str, merchant: str):
        self.store, self.env, self.task_queue, self.merchant = store, env, task_queue, merchant
        self.card = f"card{uuid.uuid4().hex[:8]}"
        self.payments: list[tuple[str, str]] = []  # (payment_ref, payment method id)
        self.checkouts: list[str] = []  # opened and not paid yet, of any recovery

    @property
    def client(self) -> Client:
        return self.env.client

    async def step(self, kind: str, n: int) -> None:
        if kind == "pay":
            # The customer pays a checkout opened earlier; nothing is relayed before the next
            # step, so another checkout, or a charge, may take money before the recovery knows.
            if self.checkouts:
                checkout = self.checkouts.pop(n % len(self.checkouts))
                assert await self.store.pay_simulator_checkout(checkout) in ("paid", "closed")
            return
        if kind == "failure":
            pm = f"pm_sim_{SCRIPTS[n]}@{self.card}"
            ref = f"order_{uuid.uuid4().hex[:10]}"
            self.payments.append((ref, pm))
            await self._fail(ref, pm)
        elif kind == "wait":
            await self.env.sleep(timedelta(hours=n))
        elif self.payments:
            ref, pm = self.payments[n % len(self.payments)]
            handle = self.client.get_workflow_handle(names.workflow_id_for(self.merchant, ref))
            try:
                match kind:
                    case "again":  # the PSP's webhook or the merchant: it failed again
                        await self._fail(ref, pm)
                    case "expedite":
                        await handle.execute_update(
                            names.UPDATE_EXPEDITE, ExpediteRequest(actor="property")
                        )
                    case "pause":
                        await handle.signal(names.SIGNAL_PAUSE, PauseRequest(actor="property"))
                    case "resume":
                        await handle.signal(names.SIGNAL_RESUME, ResumeRequest(actor="property"))
                    case "checkout":
                        await self.store.pay_simulator_checkout(await self._open_checkout(ref))
                    case "open":
                        self.checkouts.append(await self._open_checkout(ref))
            except WorkflowUpdateFailedError:
                pass  # refused (nothing to expedite), as the API answers 409
            except RPCError:
                pass  # the recovery's run already ended
            except RecoveryError:
                pass  # no open recovery to issue a link for
        await relay(self.store, self.client, self.task_queue)

    async def _fail(self, ref: str, pm: str) -> None:
        res = await ingest(self.store, self.merchant, failure_body(ref, pm=pm))
        assert res.outcome is IngestOutcome.ACCEPTED, res

    async def _open_checkout(self, ref: str) -> str:
        """Support issues a link; the customer opens its checkout."""
        link_id, _ = await self.store.add_link(
            self.merchant,
            ref,
            issued_by="property",
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        checkout_id = f"simco_{uuid.uuid4().hex[:12]}"

        async def create() -> tuple[str, str, str]:
            return "simulator", checkout_id, f"http://127.0.0.1:9/pay/simulator/{checkout_id}"

        await self.store.link_checkout(link_id, create, simulator_return_url="http://127.0.0.1:9")
        return checkout_id

    async def settle(self) -> None:
        """Resume every recovery and let them all run to their end."""
        for ref, _ in self.payments:
            handle = self.client.get_workflow_handle(names.workflow_id_for(self.merchant, ref))
            try:
                await handle.signal(names.SIGNAL_RESUME, ResumeRequest(actor="property"))
            except RPCError:
                pass
        await relay(self.store, self.client, self.task_queue)
        await self.env.sleep(timedelta(days=90))
        for ref, _ in self.payments:
            await self.client.get_workflow_handle(
                names.workflow_id_for(self.merchant, ref)
            ).result()
        await relay(self.store, self.client, self.task_queue)  # refunds the last charge found
        duplicates = await self.store.pool.fetch(
            "SELECT id FROM received_payments WHERE merchant_id = $1 AND disposition = 'duplicate'",
            self.merchant,
        )
        for d in duplicates:
            await self.client.get_workflow_handle(
                names.refund_workflow_id(self.merchant, d["id"])
            ).result()


async def assert_money_rules(store: Store, merchant: str, policy: RetryPolicy) -> None:
    cards = await store.pool.fetch(
        "SELECT card_key, brand, attempted_at FROM attempt_cards WHERE merchant_id = $1",
        merchant,
    )
    assert len({r["card_key"] for r in cards}) <= 1, "one card, whatever its payment-method ids"
    if cards:
        month, day = card_limits(policy, cards[0]["brand"])
        times = [r["attempted_at"] for r in cards]
        for t in times:
            in_month = sum(t - timedelta(days=30) < u <= t for u in times)
            assert in_month <= month, f"{in_month} attempts in 30 days, limit {month}"
            in_day = sum(t - timedelta(days=1) < u <= t for u in times)
            assert day is None or in_day <= day, f"{in_day} attempts in 24 hours, limit {day}"

    charges = await store.pool.fetch(
        "SELECT c.idempotency_key, c.status, a.idempotency_key IS NOT NULL AS recorded"
        " FROM simulator_charges c LEFT JOIN attempts a USING (idempotency_key)"
        " WHERE c.merchant_id = $1",
        merchant,
    )
    assert all(c["recorded"] for c in charges), "a charge without its attempt row"
    succeeded = Counter(
        c["idempotency_key"].split(":attempt:")[0] for c in charges if c["status"] == "succeeded"
    )
    assert all(n == 1 for n in succeeded.values()), f"a recovery charged twice: {succeeded}"

    kept = await store.pool.fetch(
        "SELECT recovery_id, count(*) FILTER (WHERE disposition = 'recovered') AS recovered,"
        " count(*) FILTER (WHERE disposition = 'duplicate'"
        "   AND refund_status IS DISTINCT FROM 'succeeded') AS kept_twice"
        " FROM received_payments WHERE merchant_id = $1 GROUP BY recovery_id",
        merchant,
    )
    for r in kept:
        assert r["recovered"] <= 1 and r["kept_twice"] == 0, dict(r)
    open_ = await store.pool.fetchval(
        "SELECT count(*) FROM recoveries WHERE merchant_id = $1 AND ended_at IS NULL", merchant
    )
    assert open_ == 0, "every recovery ran to its end"


@settings(
    max_examples=int(os.environ.get("MONEY_PROPERTY_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(policy=policies, world=steps)
@example(  # two checkouts open, both paid before the recovery hears of the first
    policy=RetryPolicy(),
    world=[("failure", 0), ("open", 0), ("open", 0), ("pay", 0), ("pay", 0)],
)
@example(  # the customer pays while the expedited charge that will succeed is in flight
    policy=RetryPolicy(),
    world=[("failure", 1), ("open", 0), ("expedite", 0), ("pay", 0), ("wait", 48)],
)
async def test_no_path_exceeds_a_network_limit_or_keeps_two_payments(
    store: Store, policy: RetryPolicy, world: list[tuple[str, int]]
) -> None:
    merchant = f"mer_{uuid.uuid4().hex[:10]}"
    await store.ensure_merchant(merchant, "Property Merchant")
    policy = await store.save_policy(merchant, policy, "property")
    # hypothesis runs many examples in one test: each gets a server and worker of its own
    async with time_skipping_server() as env, running_worker(env.client, store) as worker:
        w = World(store, env, worker.task_queue, merchant)
        for kind, n in world:
            await w.step(kind, n)
        await w.settle()
    await assert_money_rules(store, merchant, policy)
