"""The API wired to real servers (`tests.helpers.stack.running_stack`) as fixtures: on a
Temporal dev server, with the local PSPs, and with a real SMTP server (the dev sink)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from temporalio.testing import WorkflowEnvironment

from recovery.store import Store
from scripts.mail_sink import MailSink
from tests.helpers.bodies import RAZORPAY_WHSEC, STRIPE_WHSEC
from tests.helpers.stack import Stack, running_stack
from tests.psp.localstripe_server import TEST_API_KEY
from tests.psp.razorpay_server import FakeRazorpay, fake_razorpay


@pytest.fixture
async def api(store: Store, pg_dsn: str, dev_env: WorkflowEnvironment) -> AsyncIterator[Stack]:
    address = dev_env.client.service_client.config.target_host
    async with running_stack(store, pg_dsn, address) as stack:
        yield stack


@pytest.fixture
def rzp() -> Iterator[FakeRazorpay]:
    with fake_razorpay(debit_delay=0) as fake:  # instant debits: see test_razorpay_debits
        yield fake


@pytest.fixture
async def rzp_api(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment, rzp: FakeRazorpay
) -> AsyncIterator[Stack]:
    address = dev_env.client.service_client.config.target_host
    async with running_stack(
        store,
        pg_dsn,
        address,
        razorpay_key_id=rzp.key_id,
        razorpay_key_secret=rzp.key_secret,
        razorpay_webhook_secret=rzp.webhook_secret,
        razorpay_api_base=rzp.base_url,
    ) as stack:
        yield stack


@pytest.fixture
async def psp_api(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment, stripe_base: str
) -> AsyncIterator[Stack]:
    address = dev_env.client.service_client.config.target_host
    async with running_stack(
        store,
        pg_dsn,
        address,
        stripe_api_key=TEST_API_KEY,
        stripe_api_base=stripe_base,
        stripe_webhook_secret=STRIPE_WHSEC,
        razorpay_key_id="rzp_test_e2e",
        razorpay_key_secret="rzp_secret_e2e",
        razorpay_webhook_secret=RAZORPAY_WHSEC,
    ) as stack:
        yield stack


@pytest.fixture
async def mailing(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment, sink: MailSink
) -> AsyncIterator[Stack]:
    """The API and a worker that e-mail customers through `sink`."""
    address = dev_env.client.service_client.config.target_host
    async with running_stack(
        store, pg_dsn, address, smtp_url=sink.url, mail_from="Payments <payments@example.com>"
    ) as stack:
        yield stack
