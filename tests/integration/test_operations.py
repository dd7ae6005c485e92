"""Operations: the compose file's wiring, /metrics on its own listener, structured logs
without secrets, and a worker that finishes its activity on SIGTERM."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml
from temporalio.testing import WorkflowEnvironment

from recovery.logs import JsonFormatter
from recovery.settings import Settings
from recovery.store import Store
from scripts.stack import HOST
from tests.helpers import (
    INGEST,
    Stack,
    eventually,
    failure_body,
    free_port,
    has_next_attempt,
    recovery,
    running_stack,
)

ROOT = Path(__file__).resolve().parents[2]
DESIGN_ENV = {
    "DATABASE_URL",
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_TASK_QUEUE",
    "PUBLIC_BASE_URL",
    "LINK_SIGNING_SECRET",
    "LINK_TTL_SECONDS",
    "STRIPE_API_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_BASE",
    "RAZORPAY_KEY_ID",
    "RAZORPAY_KEY_SECRET",
    "RAZORPAY_WEBHOOK_SECRET",
    "RAZORPAY_API_BASE",
    "ENVIRONMENT",
}


def test_compose_file_wires_every_service_and_setting() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.temporal.yml").read_text())
    services = compose["services"]
    assert {
        "postgres",
        "temporal-postgres",
        "temporal-schema",
        "temporal",
        "temporal-namespace",
        "temporal-ui",
        "setup",
        "worker",
        "api",
    } <= set(services)
    settings_env = {name.upper() for name in Settings.model_fields}
    for name, svc in services.items():
        image = svc.get("image", "")
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned"
        if name not in ("setup", "temporal-schema", "temporal-namespace", "temporal-ui"):
            assert "healthcheck" in svc, f"{name} has no health check"
    assert services["temporal"]["environment"]["DB"].startswith("postgres")
    _assert_temporal_is_run_for_production(services)
    for name in ("setup", "worker", "api"):
        env = set(services[name]["environment"])
        assert DESIGN_ENV <= env, f"{name} lacks {sorted(DESIGN_ENV - env)}"
        assert env <= settings_env, f"{name} sets unknown {sorted(env - settings_env)}"
    assert services["worker"]["command"] == ["python", "-m", "worker"]
    assert services["setup"]["command"] == ["python", "-m", "recovery.setup"]
    for name in ("worker", "api"):
        assert services[name]["depends_on"]["setup"]["condition"] == (
            "service_completed_successfully"
        )
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-slim" in dockerfile.split("\n", 3)[1]
    user = [ln for ln in dockerfile.splitlines() if ln.startswith("USER ")]
    assert user and user[-1].split()[1] not in ("root", "0")


def _published(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(host ip, container port) of each published port ("" when on every interface)."""
    out = []
    for port in svc.get("ports", []):
        if isinstance(port, dict):
            out.append((str(port.get("host_ip", "")), str(port["target"])))
            continue
        parts = str(port).rsplit(":", 2)
        host_ip = parts[0] if len(parts) == 3 else ""
        out.append((host_ip, parts[-1].split("/")[0]))
    return out


def _assert_temporal_is_run_for_production(services: dict[str, Any]) -> None:
    """The Temporal server image (not the development auto-setup one), its schema set up by
    the admin tools in a one-shot job it waits for, and Temporal and its UI on loopback only."""
    for name, svc in services.items():
        assert "auto-setup" not in svc.get("image", ""), f"{name} runs temporalio/auto-setup"
        for host_ip, target in _published(svc):
            if target in ("7233", "8233", "8080"):
                assert host_ip == "127.0.0.1", f"{name} publishes {target} on {host_ip or '*'}"
    assert services["temporal"]["image"].startswith("temporalio/server:")
    schema = services["temporal-schema"]
    assert schema["image"].startswith("temporalio/admin-tools:")
    script = " ".join(schema["command"])
    for step in ("create-database", "setup-schema", "update-schema"):
        assert f'temporal-sql-tool --db "$$db" {step}' in script, step
    assert "for db in temporal temporal_visibility" in script
    assert services["temporal"]["depends_on"]["temporal-schema"]["condition"] == (
        "service_completed_successfully"
    )
    assert _published(services["temporal"]) == [("127.0.0.1", "7233")]
    assert _published(services["temporal-ui"]) == [("127.0.0.1", "8080")]


async def recover_at_once(api: Stack, body: dict[str, Any]) -> httpx.Response:
    """Ingest `body` (a simulator method that succeeds), expedite its first attempt and wait
    until it is recovered; returns the ingest answer."""
    ref = body["payment_ref"]
    r = await api.http.post(INGEST, json=body, headers=api.auth())
    assert r.status_code == 202, r.text
    await eventually(lambda: has_next_attempt(api, ref))
    await api.http.post(f"/v1/recoveries/by_ref/{ref}/expedite", headers=api.auth())

    async def recovered() -> bool:
        assert (await recovery(api, ref))["status"] == "recovered"
        return True

    await eventually(recovered)
    return r


async def test_metrics_after_a_recovery_on_their_own_listener_only(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment
) -> None:
    address = dev_env.client.service_client.config.target_host
    metrics_address = f"{HOST}:{free_port()}"
    async with running_stack(store, pg_dsn, address, metrics_address=metrics_address) as api:
        await recover_at_once(api, failure_body(pm="pm_sim_succeed_on_1", amount=1234))
        # every merchant's totals: not on the public port, with or without a key
        assert (await api.http.get("/metrics")).status_code == 404
        assert (await api.http.get("/metrics", headers=api.auth())).status_code == 404
        async with httpx.AsyncClient() as http:
            scraped = await http.get(f"http://{metrics_address}/metrics")
    assert scraped.status_code == 200
    text = scraped.text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['recovery_recoveries{status="recovered"}'] >= 1
    assert samples['recovery_recovered_amount_minor{currency="usd"}'] >= 1234
    # the recovering charge is a payment received, counted by what became of it
    assert samples['recovery_payments_received{disposition="recovered",refund_status="none"}'] >= 1
    assert samples['recovery_events_ingested_total{outcome="accepted"}'] >= 1
    assert "recovery_outbox_lag_seconds" in samples and "recovery_outbox_pending" in samples
    assert (
        samples[
            'recovery_http_requests_total{method="POST",route="/v1/events/payment_failed",'
            'status="202"}'
        ]
        >= 1
    )
    assert any(k.startswith("recovery_http_request_duration_seconds_bucket") for k in samples)


async def test_logs_are_json_with_ids_and_no_secrets(api: Stack) -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        body = failure_body(pm="pm_sim_succeed_on_1")
        ref = body["payment_ref"]
        r = await recover_at_once(api, body)
        # a bad key must not be echoed either
        await api.http.get("/v1/recoveries", headers={"Authorization": "Bearer rk_test_guess1234"})
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    out = buffer.getvalue()
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(e) for e in lines)
    ingest = [e for e in lines if e["logger"] == "recovery.api.events"]
    assert ingest and ingest[0]["merchant_id"] == api.merchant_id
    assert ingest[0]["payment_ref"] == ref and ingest[0]["workflow_id"] == r.json()["workflow_id"]
    charges = [e for e in lines if e["logger"] == "recovery.activities"]
    assert charges and charges[0]["payment_ref"] == ref
    assert charges[0]["workflow_id"] == r.json()["workflow_id"]
    for secret in (
        api.key,
        api.settings.link_signing_secret.get_secret_value(),
        "rk_test_guess1234",
    ):
        assert secret not in out


async def test_worker_finishes_its_activity_on_sigterm(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment
) -> None:
    address = dev_env.client.service_client.config.target_host
    async with running_stack(store, pg_dsn, address, worker=False) as api:
        env = {
            **os.environ,
            "DATABASE_URL": pg_dsn,
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_TASK_QUEUE": api.settings.temporal_task_queue,
            "ENVIRONMENT": "development",
            "ALLOW_SIMULATOR": "true",
        }
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            body = failure_body(pm="pm_sim_slow_3")
            ref = body["payment_ref"]
            assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202
            await eventually(lambda: has_next_attempt(api, ref), within=30)
            await api.http.post(f"/v1/recoveries/by_ref/{ref}/expedite", headers=api.auth())

            async def charging() -> bool:
                return bool(
                    await api.store.pool.fetchval(
                        "SELECT count(*) FROM attempts a JOIN recoveries r ON r.id = a.recovery_id"
                        " WHERE r.payment_ref = $1 AND a.status = 'pending'",
                        ref,
                    )
                )

            await eventually(charging, within=15)
            worker.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(worker.wait(), timeout=30)
            assert code == 0, (await worker.stdout.read()).decode()[-2000:]
            status = await api.store.pool.fetchval(
                "SELECT a.status FROM attempts a JOIN recoveries r ON r.id = a.recovery_id"
                " WHERE r.payment_ref = $1",
                ref,
            )
            assert status == "succeeded"  # the charge completed before the worker left
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        charges = await api.store.pool.fetchval(
            "SELECT count(*) FROM simulator_charges WHERE payment_ref = $1", ref
        )
        assert charges == 1
