"""``lark-transferd``'s HTTP layer: FastAPI routes under ``/v1``, JSON errors that name the field, the page.

Needs the ``[transfer]`` extra (FastAPI, uvicorn). The routes are plain ``def`` functions: FastAPI runs
them in its thread pool, which suits the blocking schedd tools and bindings. Every error is::

    {"error": {"field": "source", "message": "endpoint 'nope' is not known (endpoints: ftp, web)"}}

with 401 (no or refused token, field ``Authorization``), 403 (an endpoint or owner the user may not
use), 404 (no such transfer of this user, field ``id``), 409 (cancel of a finished transfer), 422 (bad
input) or 502 (the schedd failed, field ``schedd``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from lark import __version__
from lark.errors import NotFound, NotPermitted
from lark.transfer.model import FIELDS, TransferRequestError
from lark.transfer.page import PAGE
from lark.transfer.schedd import ScheddError, Unauthenticated
from lark.transfer.service import MAX_PAGE, TransferService

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["verb", "source"],
    "additionalProperties": False,
    "properties": {
        "verb": {"enum": ["get", "put", "delete"]},
        "source": {"type": "string", "description": "ENDPOINT:PATH (get, delete) or an absolute path (put)"},
        "destination": {"type": "string", "description": "an absolute path (get) or ENDPOINT:PATH (put)"},
        "size": {"type": "integer", "minimum": 0, "description": "bytes (LarkInputBytes, for matchmaking)"},
        "profile": {"type": "string", "description": "network profile; default: the endpoint's"},
        "label": {"type": "string", "maxLength": 128},
        "submission_id": {"type": "string", "description": "client-chosen id: a retried POST returns the "
                                                          "transfer the first one created"},
    },
}
assert set(REQUEST_SCHEMA["properties"]) == set(FIELDS)
# module level: the routes' annotations are strings (PEP 563) that FastAPI resolves in this module
Auth = Annotated[str | None, Header(alias="Authorization", description="Bearer <IDTOKEN or SciToken>")]


def _error(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status)


def _token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send 'Authorization: Bearer <token>' with an HTCondor IDTOKEN or a SciToken")
    return token.strip()


def create_app(service: TransferService) -> FastAPI:
    app = FastAPI(title="lark-transferd", version=__version__,
                  description="Transfers as HTCondor jobs, submitted as the requesting user.",
                  openapi_url="/v1/openapi.json", docs_url="/v1/docs", redoc_url=None)

    @app.exception_handler(TransferRequestError)
    def request_error(_: Request, err: TransferRequestError) -> JSONResponse:
        return _error(err.status, err.field, err.message)

    @app.exception_handler(Unauthenticated)
    def unauthenticated(_: Request, err: Unauthenticated) -> JSONResponse:
        response = _error(401, "Authorization", str(err))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(NotFound)
    def not_found(_: Request, err: NotFound) -> JSONResponse:
        return _error(404, "id", str(err))

    @app.exception_handler(NotPermitted)
    def not_permitted(_: Request, err: NotPermitted) -> JSONResponse:
        return _error(403, "id", str(err))

    @app.exception_handler(ScheddError)
    def schedd_error(_: Request, err: ScheddError) -> JSONResponse:
        return _error(502, "schedd", str(err))

    @app.exception_handler(RequestValidationError)
    def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = [str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path", "header")]
        return _error(422, where[-1] if where else "body", str(first.get("msg", "invalid request")))

    @app.post("/v1/transfers", status_code=201, openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": REQUEST_SCHEMA}}}})
    def create(body: Annotated[Any, Body()], authorization: Auth = None) -> JSONResponse:
        view, created = service.create(_token(authorization), body)
        return JSONResponse(view, status_code=201 if created else 200,
                            headers={"Location": f"/v1/transfers/{view['id']}"})

    @app.get("/v1/transfers")
    def list_transfers(authorization: Auth = None, state: str | None = None, label: str | None = None,
                       owner: str | None = None, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                       offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, object]:
        return service.list(_token(authorization), state=state, label=label, owner=owner, limit=limit,
                            offset=offset)

    @app.get("/v1/transfers/{transfer_id}")
    def get_transfer(transfer_id: str, authorization: Auth = None) -> dict[str, object]:
        return service.get(_token(authorization), transfer_id)

    @app.delete("/v1/transfers/{transfer_id}")
    def cancel(transfer_id: str, authorization: Auth = None) -> dict[str, object]:
        return service.cancel(_token(authorization), transfer_id)

    @app.get("/v1/transfers/{transfer_id}/log")
    def log(transfer_id: str, authorization: Auth = None) -> dict[str, object]:
        return service.log(_token(authorization), transfer_id)

    @app.get("/v1/endpoints")
    def endpoints(authorization: Auth = None) -> list[dict[str, object]]:
        return service.endpoint_list(_token(authorization))

    @app.get("/v1/profiles")
    def profiles(authorization: Auth = None) -> list[dict[str, object]]:
        return service.profile_list(_token(authorization))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE

    return app
