"""The API document (`/openapi.json`, OpenAPI 3.1) built from what each handler declares with
`@endpoint`, and Swagger UI reading it at `/docs`, served from the installed package (no CDN).

The document is made once per app, on its first request, from the app's routes: a route added
to the app is in it, with the models its handler declares. Each operation answers, besides
what it declares, what the app itself answers for it: 401 `unauthorized` when it is signed,
503 `unavailable` when it is signed too (every such route reads a store, and a store may be
away), 403 `forbidden` and 429 `rate_limited` when a channel signs it (a channel without the
scope the route needs, or over its rate limit),
413 `payload_too_large` when it takes a body, 404 `not_found` when its path has parameters (a
value the router cannot place)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import Any

import orjson
import swagger_ui_bundle
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from quanyi.core.schemas import Endpoint, endpoint, endpoint_of

TITLE = "Quanyi rights platform API"
VERSION = "1"
COMPONENTS = "#/components/schemas/{model}"
ERROR = "Error"
# The statuses and codes the app answers itself, for the operations they concern.
SIGNED = (401, "unauthorized")
# A channel's signature is good but it lacks the scope the route needs (quanyi/access/channels.py).
OUT_OF_SCOPE = (403, "forbidden")
# Past its signature, a channel over its rate limit (quanyi/access/rate_limits.py).
RATE_LIMITED = (429, "rate_limited")
TOO_LARGE = (413, "payload_too_large")
# Staff whose password was reset reach nothing but setting a new one (quanyi/access/api.py).
PASSWORD_PENDING = (403, "password_change_required")
NO_ROUTE = (404, "not_found")
STORE_AWAY = (503, "unavailable")
# A card number in a path parameter is refused before any look-up (core/http.py path_id).
PAN_IN_PATH = (400, "invalid_request")

SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "channel": [{"channelId": [], "channelTimestamp": [], "channelSignature": []}],
    "staff": [{"staffToken": []}],
    "vendor": [{"vendorTimestamp": [], "vendorSignature": []}],
    "customer": [{"customerSession": []}],
    "none": [],
}
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "channelId": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Channel-Id",
        "description": "The calling channel (APP, WeChat, H5, branch counter).",
    },
    "channelTimestamp": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Timestamp",
        "description": "Unix seconds, within QUANYI_SIGNATURE_WINDOW_S (300 by default) of the server's clock.",
    },
    "channelSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Signature",
        "description": (
            'hex(HMAC-SHA256(channel secret, METHOD "\\n" PATH_WITH_QUERY "\\n" TIMESTAMP "\\n"'
            " hex(SHA-256(body)))), the path and query exactly as sent, percent-escapes"
            " included; the body as sent (empty for a GET)."
        ),
    },
    "staffToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The token of `POST /admin/v1/login`; `POST /admin/v1/logout` ends it.",
    },
    "customerSession": {
        "type": "http",
        "scheme": "bearer",
        "description": "The token of `POST /v1/h5/sessions` (15 minutes, one channel's customer).",
    },
    "vendorTimestamp": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Vendor-Timestamp",
        "description": "Unix seconds, within QUANYI_SIGNATURE_WINDOW_S (300 by default) of the server's clock.",
    },
    "vendorSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Vendor-Signature",
        "description": (
            "base64 of the vendor's RSA signature (PKCS#1 v1.5, SHA-256) over"
            ' TIMESTAMP "\\n" BODY, the raw bytes sent; either of its two live keys.'
        ),
    },
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "Every error: a stable `code`, a `message`, and details by code (each optional, present"
        " where its description says)."
    ),
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            # Every detail an error carries is named here (tests/test_openapi.py reads them
            # from the source): a new one must be documented.
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "description": "invalid_request: each bad field and what it must be",
                    "additionalProperties": {"type": "string"},
                },
                "retry_after_s": {
                    "type": "integer",
                    "description": "too_many_requests, too_many_attempts: seconds to wait",
                },
                "errors": {
                    "type": "array",
                    "description": (
                        "invalid_request of a file (a dry run's transactions): its first bad"
                        " lines, each by number and the rule it breaks, never its value"
                    ),
                    "items": {
                        "type": "object",
                        "required": ["line", "reason"],
                        "properties": {
                            "line": {"type": "integer"},
                            "reason": {"type": "string"},
                        },
                    },
                },
                "rejected": {
                    "type": "integer",
                    "description": "invalid_request of a file: how many of its lines are bad",
                },
                "reason": {
                    "type": "string",
                    "description": (
                        "not_eligible: audience (not a member), goal_not_met (see progress) or"
                        " automatic (granted on the goal, never claimed)"
                    ),
                },
                "progress": {
                    "type": "object",
                    "description": (
                        "not_eligible goal_not_met: the customer's count and amount (fen) this"
                        " period, and the goal"
                    ),
                    "properties": {
                        "count": {"type": "integer"},
                        "amount": {"type": "integer"},
                        "goal": {"type": "object"},
                    },
                },
                "scope": {
                    "type": "string",
                    "description": (
                        "limit_reached, out_of_stock, too_many_requests: which limit or stock"
                        " (per_customer, daily, window, ...)"
                    ),
                },
                "state": {
                    "type": "string",
                    "description": (
                        "campaign_not_active, invalid_transition, grant_not_live,"
                        " grant_not_fulfilled, vendor_not_active: the state the campaign, grant,"
                        " right or vendor is in (campaign_not_active right_suspended: the"
                        " reward's right is suspended)"
                    ),
                },
                "campaigns": {
                    "type": "array",
                    "description": "right_in_use, vendor_in_use: the live campaigns using it",
                    "items": {"type": "string"},
                },
                "rights": {
                    "type": "array",
                    "description": (
                        "right_not_admitted: the rights named that are not admitted;"
                        " vendor_in_use: the admitted or suspended rights keeping a vendor"
                    ),
                    "items": {
                        "type": "object",
                        "required": ["right_id", "state"],
                        "properties": {"right_id": {"type": "string"}, "state": {"type": "string"}},
                    },
                },
                "vendor_id": {
                    "type": "string",
                    "description": "vendor_not_active: the right's vendor (its state in state)",
                },
                "max_size": {
                    "type": "integer",
                    "description": "payload_too_large: the most bytes the body may have",
                },
                "redemption_id": {
                    "type": "string",
                    "description": "grant_unknown, grant_not_redeemable: the redemption refused",
                },
                "grant_id": {
                    "type": ["string", "null"],
                    "description": "grant_unknown, grant_not_redeemable: the grant it named",
                },
                "branch": {
                    "type": "string",
                    "description": "budget_exceeded, budget_required: the branch whose budget",
                },
                "period": {
                    "type": "string",
                    "description": "budget_exceeded, budget_required: the year of that budget",
                },
                "available": {
                    "type": "integer",
                    "description": "budget_exceeded: fen left of that budget",
                },
                "needed": {
                    "type": "integer",
                    "description": "budget_exceeded: fen asked for",
                },
                "approvals": {
                    "type": "array",
                    "description": (
                        "already_approved, head_office_approval_needed: the approvals given so"
                        " far (quanyi/campaigns/approvals.py)"
                    ),
                    "items": {
                        "type": "object",
                        "properties": {
                            "approver": {"type": "string"},
                            "branch": {"type": "string"},
                            "at": {"type": "string", "format": "date-time"},
                        },
                    },
                },
                "approvals_needed": {
                    "type": "integer",
                    "description": "already_approved, head_office_approval_needed: 1 or 2",
                },
                "reward_id": {
                    "type": "string",
                    "description": "stock_below_granted: the reward whose stock would drop",
                },
                "granted": {
                    "type": "integer",
                    "description": "stock_below_granted: what that reward granted already",
                },
                "spent": {
                    "type": "integer",
                    "description": "budget_below_spent: fen the campaign spent already",
                },
            },
        }
    },
}


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of `app` whose handler has an `@endpoint`."""
    declared = list(_declared_routes(app))
    schemas = _component_schemas(endpoint for _, _, endpoint in declared)
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for method, path, handler_endpoint in declared:
        operation = _operation(method, path, handler_endpoint, schemas)
        operation["operationId"] = _unique(operation["operationId"], operation_ids)
        paths.setdefault(path, {})[method.lower()] = operation
    components = schemas.components
    components[ERROR] = ERROR_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }


def undeclared_routes(app: web.Application) -> list[str]:
    """`METHOD /path` of every route whose handler has no `@endpoint` (none should)."""
    return [
        f"{route.method} {route.resource.canonical}"
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
        if endpoint_of(route.handler) is None
    ]


def _declared_routes(app: web.Application) -> Iterator[tuple[str, str, Endpoint]]:
    for route in app.router.routes():
        # aiohttp adds a HEAD route beside each GET: the GET documents both.
        if route.method == "HEAD" or route.resource is None:
            continue
        declared = endpoint_of(route.handler)
        if declared is not None and declared.documented:
            yield route.method, _template(route.resource.canonical), declared


def _template(canonical: str) -> str:
    """aiohttp's `/a/{id:regex}` as OpenAPI's `/a/{id}`."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", canonical)


class _Schemas:
    """The models of every endpoint as shared components, each operation pointing at them."""

    def __init__(self, refs: Mapping[tuple[Any, JsonSchemaMode], Any], defs: Any) -> None:
        self._refs = refs
        self.components: dict[str, Any] = defs.get("$defs", {})

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return self._refs[(model, mode)]


def _component_schemas(endpoints: Iterable[Endpoint]) -> _Schemas:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for declared in endpoints:
        if declared.body is not None:
            wanted[(declared.body, "validation")] = None
        for model in declared.responses.values():
            if model is not None:
                wanted[(model, "serialization")] = None
    refs, defs = models_json_schema(list(wanted), ref_template=COMPONENTS)
    return _Schemas(refs, defs)


def _operation(method: str, path: str, declared: Endpoint, schemas: _Schemas) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": declared.summary,
        "operationId": _operation_id(method, path),
        "security": SECURITY[declared.auth],
    }
    if declared.tags:
        operation["tags"] = list(declared.tags)
    parameters = _parameters(path, declared)
    if parameters:
        operation["parameters"] = parameters
    if declared.body is not None:
        operation["requestBody"] = {
            "required": _has_required_fields(declared.body),
            "content": {"application/json": {"schema": schemas.ref(declared.body, "validation")}},
        }
    elif declared.body_media is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {declared.body_media: {"schema": {"type": "string"}}},
        }
    operation["responses"] = _responses(path, declared, schemas)
    return operation


def _operation_id(method: str, path: str) -> str:
    words = [w.strip("{}") for w in path.strip("/").split("/") if w]
    return "_".join([method.lower(), *words]).replace("-", "_")


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _has_required_fields(model: type[BaseModel]) -> bool:
    return any(field.is_required() for field in model.model_fields.values())


def _parameters(path: str, declared: Endpoint) -> list[dict[str, Any]]:
    names = re.findall(r"\{(\w+)\}", path)
    documented = _fields(declared.path, "validation")
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            **_described(documented.get(name, {"type": "string"})),
        }
        for name in names
    ]
    if declared.query is not None:
        required = set(declared.query.model_json_schema().get("required", ()))
        for name, schema in _fields(declared.query, "validation").items():
            parameters.append(
                {"name": name, "in": "query", "required": name in required, **_described(schema)}
            )
    return parameters


def _fields(model: type[BaseModel] | None, mode: JsonSchemaMode) -> dict[str, Any]:
    if model is None:
        return {}
    return dict(model.model_json_schema(mode=mode).get("properties", {}))


def _described(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter: its description beside its schema, as OpenAPI has it."""
    schema = {k: v for k, v in schema.items() if k != "title"}
    description = schema.pop("description", None)
    return {"schema": schema, **({"description": description} if description else {})}


def _responses(path: str, declared: Endpoint, schemas: _Schemas) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, model in sorted(declared.responses.items()):
        response: dict[str, Any] = {"description": _reason(status)}
        if model is not None:
            response["content"] = {
                "application/json": {"schema": schemas.ref(model, "serialization")}
            }
        if declared.response_media is not None:  # with a model too: JSON or, when asked, this
            response.setdefault("content", {})[declared.response_media] = {
                "schema": {"type": "string"}
            }
        responses[str(status)] = response
    for status, codes in sorted(_error_codes(path, declared).items()):
        if str(status) in responses:
            continue  # a declared answer of that status (a 503 report) says what it holds
        responses[str(status)] = {
            "description": f"{_reason(status)}: {', '.join(codes)}",
            "content": {"application/json": {"schema": _error_of(codes)}},
        }
    return responses


def _error_codes(path: str, declared: Endpoint) -> dict[int, list[str]]:
    codes: dict[int, list[str]] = {}

    def add(status: int, code: str) -> None:
        if code not in codes.setdefault(status, []):
            codes[status].append(code)

    for error in declared.errors:
        add(error.status, error.code)
    if declared.auth != "none":
        add(*SIGNED)
        add(*STORE_AWAY)
    if declared.auth == "channel":
        add(*OUT_OF_SCOPE)
        add(*RATE_LIMITED)
    if declared.auth == "staff":
        add(*PASSWORD_PENDING)
    if declared.body is not None or declared.body_media is not None:
        add(*TOO_LARGE)
    if "{" in path:
        add(*NO_ROUTE)
        add(*PAN_IN_PATH)
    return codes


def _error_of(codes: list[str]) -> dict[str, Any]:
    return {
        "allOf": [
            {"$ref": COMPONENTS.format(model=ERROR)},
            {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
        ]
    }


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return str(status)


# serving it


class ApiDocument:
    """The app's document, made on first use and kept: the app's routes do not change once
    it serves."""

    def __init__(self) -> None:
        self._json: bytes | None = None

    def json(self, app: web.Application) -> bytes:
        if self._json is None:
            self._json = orjson.dumps(build_document(app))
        return self._json


API_DOCUMENT = web.AppKey("api_document", ApiDocument)
routes = web.RouteTableDef()

# What /docs/static serves of the package: the page below loads nothing else.
STATIC_FILES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
DOCS_PAGE = b"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Quanyi API</title>
  <link rel="stylesheet" href="docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/static/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true});
  </script>
</body>
</html>
"""


@routes.get("/openapi.json")
@endpoint("This document", auth="none", responses={200: None}, documented=False)
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[API_DOCUMENT].json(request.app), content_type="application/json"
    )


@routes.get("/docs")
@endpoint(
    "Swagger UI on this document",
    auth="none",
    responses={200: None},
    response_media="text/html",
    documented=False,
)
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(body=DOCS_PAGE, content_type="text/html", charset="utf-8")


@routes.get("/docs/static/{name}")
@endpoint("Swagger UI's files", auth="none", responses={200: None}, documented=False)
async def docs_static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(
        swagger_ui_bundle.swagger_ui_path / name,
        headers={"Content-Type": STATIC_FILES[name], "Cache-Control": "max-age=86400"},
    )
