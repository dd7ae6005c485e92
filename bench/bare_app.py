"""The API benchmark's baseline: a bare FastAPI app on the same uvicorn configuration as ours
(`api.server.uvicorn_config`), doing each measured route's own work and nothing else.

`python -m bench.bare_app PORT`

- `GET /healthz`: `{"ok": true}`.
- `POST /v1/classify`: the same body model and the same pure `classify()`; no API key, no
  middleware, FastAPI's default response encoding.
- `POST /v1/events/payment_failed`: the same body validation, then a 202 with an answer of
  the same shape; nothing is stored (it is the HTTP and validation floor of an ingest).

Its figures are what FastAPI and uvicorn cost for that work on this machine: ours divided
by them is what authentication, the guards, metrics, logging and (for ingest) Postgres add.
"""

from __future__ import annotations

import sys
import uuid

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.routes.classify import ClassifyIn
from api.server import uvicorn_config
from recovery.classifier import classify
from recovery.models import Classification, ClassifyRequest, PaymentFailedIn


def create_bare_app() -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/v1/classify", response_model=Classification)
    async def classify_failure(body: ClassifyIn) -> Classification:
        return classify(ClassifyRequest(**body.model_dump()))

    @app.post("/v1/events/payment_failed", status_code=202)
    async def payment_failed(request: Request) -> JSONResponse:
        # as ours: the raw body validated as JSON (strict types, ISO times)
        body = PaymentFailedIn.model_validate_json(await request.body())
        return JSONResponse(
            {
                "recovery_id": f"rec_{uuid.uuid4().hex}",
                "workflow_id": f"recovery/mer_bare/{body.payment_ref}",
                "payment_ref": body.payment_ref,
                "status": "active",
                "duplicate": False,
            },
            status_code=202,
        )

    return app


def main() -> None:
    port = int(sys.argv[1])
    uvicorn.Server(uvicorn_config(create_bare_app(), "127.0.0.1", port)).run()


if __name__ == "__main__":
    main()
