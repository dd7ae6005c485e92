"""`POST /v1/classify`: the workflow's classifier, without starting anything."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.deps import PrincipalDep
from recovery.classifier import classify
from recovery.models import Classification, ClassifyRequest, PspName

router = APIRouter(prefix="/v1", tags=["classify"])

Code = Annotated[str, StringConstraints(max_length=200)]


class ClassifyIn(BaseModel):
    model_config = ConfigDict(strict=True)

    psp: PspName
    code: Code | None = None
    decline_code: Code | None = None
    message: Annotated[str, StringConstraints(max_length=1000)] | None = None
    payment_method_type: Code | None = None
    network_advice_code: Code | None = None
    attempt: Annotated[int, Field(ge=1, le=100)] = 1

    @model_validator(mode="after")
    def _something_to_classify(self) -> ClassifyIn:
        if not (self.code or self.decline_code or self.message):
            raise ValueError("give at least one of code, decline_code or message")
        return self


@router.post("/classify", response_model=Classification)
async def classify_failure(body: ClassifyIn, principal: PrincipalDep) -> Classification:
    return classify(ClassifyRequest(**body.model_dump()))
