"""The notifications API and the e-mail policy, through the API on real servers: what a
merchant sees of the messages sent to its customers (recipient masked, its own only), how long
an e-mailed link lives, and the policy fields that drive e-mail."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from recovery.customer_email import EMAIL_OFF
from tests.helpers import INGEST, Stack, add_merchant, assert_envelope, eventually, failure_body


async def test_notifications_show_each_message_masked_to_its_own_merchant_only(
    api: Stack,
) -> None:
    body = failure_body(decline_code="lost_card")
    body["customer"] = {"id": "cus_1", "email": "dora@example.com"}
    ref = body["payment_ref"]
    assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202

    async def listed() -> list[dict[str, Any]]:
        r = await api.http.get("/v1/notifications", params={"ref": ref}, headers=api.auth())
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data and data[0]["status"] != "queued"  # recorded, then settled
        return data

    [note] = await eventually(listed, within=30)
    assert note["id"].startswith("ntf_")
    assert (note["payment_ref"], note["channel"], note["kind"]) == (ref, "email", "retry_link")
    # this stack has no SMTP_URL: recorded, and why it was not sent
    assert (note["status"], note["error"], note["sent_at"]) == ("suppressed", EMAIL_OFF, None)
    assert note["recipient"] == "d***@example.com"
    assert "dora" not in str(note)

    # the e-mailed link lives EMAIL_LINK_TTL_SECONDS (7 days), the API's own LINK_TTL_SECONDS
    recovery = (await api.http.get(f"/v1/recoveries/by_ref/{ref}", headers=api.auth())).json()
    [emailed] = [lnk for lnk in recovery["links"] if lnk["link_id"] == note["link_id"]]
    lifetime = datetime.fromisoformat(emailed["expires_at"]) - datetime.fromisoformat(
        emailed["created_at"]
    )
    assert abs(lifetime - timedelta(days=7)) < timedelta(seconds=2)
    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=api.auth())
    assert r.status_code == 201, r.text
    issued = recovery_link_lifetime(
        (await api.http.get(f"/v1/recoveries/by_ref/{ref}", headers=api.auth())).json(),
        r.json()["link_id"],
    )
    assert abs(issued - timedelta(seconds=900)) < timedelta(seconds=2)

    _, other_key = await add_merchant(api.store)
    r = await api.http.get("/v1/notifications", params={"ref": ref}, headers=api.auth(other_key))
    assert r.status_code == 200 and r.json() == {"data": []}
    r = await api.http.get("/v1/notifications", headers=api.auth(other_key))
    assert r.json() == {"data": []}
    assert_envelope(
        await api.http.get("/v1/notifications", params={"ref": "no spaces"}, headers=api.auth()),
        422,
    )


def recovery_link_lifetime(recovery: dict[str, Any], link_id: str) -> timedelta:
    [link] = [lnk for lnk in recovery["links"] if lnk["link_id"] == link_id]
    return datetime.fromisoformat(link["expires_at"]) - datetime.fromisoformat(link["created_at"])


async def test_the_policy_sets_the_reminder_days_and_whether_customers_are_emailed(
    api: Stack,
) -> None:
    _, key = await add_merchant(api.store)
    policy = (await api.http.get("/v1/policy", headers=api.auth(key))).json()
    assert (policy["email_customers"], policy["reminder_days"]) == (True, [3, 7])
    for bad in ([7, 3], [0, 2], [30], "3,7"):
        err = assert_envelope(
            await api.http.put("/v1/policy", json={"reminder_days": bad}, headers=api.auth(key)),
            422,
        )
        assert err["field"] == "reminder_days", err
    r = await api.http.put(
        "/v1/policy",
        json={"reminder_days": [2, 5, 9], "email_customers": False},
        headers=api.auth(key),
    )
    assert r.status_code == 200, r.text
    policy = (await api.http.get("/v1/policy", headers=api.auth(key))).json()
    assert (policy["email_customers"], policy["reminder_days"]) == (False, [2, 5, 9])
