"""A merchant's retry policy: read it, publish a new version.

Running recoveries keep the version they started with; support applies a new version to one
recovery explicitly (`POST /v1/recoveries/by_ref/{ref}/apply_policy`). The card-network
limits are ceilings: a body that unsets one (null) or sets it above every network's is a 422
naming the field (`PolicyUpdate`).
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import PrincipalDep, StoreDep
from recovery.policy import PolicyUpdate, RetryPolicy

router = APIRouter(prefix="/v1/policy", tags=["policy"])


@router.get("", response_model=RetryPolicy)
async def get_policy(principal: PrincipalDep, store: StoreDep) -> RetryPolicy:
    return await store.current_policy(principal.merchant_id)


@router.put("", response_model=RetryPolicy)
async def put_policy(body: PolicyUpdate, principal: PrincipalDep, store: StoreDep) -> RetryPolicy:
    policy = RetryPolicy.model_validate(body.model_dump(exclude={"version"}))
    return await store.save_policy(principal.merchant_id, policy, principal.actor)
