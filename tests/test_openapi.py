"""The API document: OpenAPI 3.1 made from the handlers' declarations, every route in it, and
Swagger UI at /docs served from the installed package."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
from aiohttp import web
from schemathesis.specs.openapi.definitions import OPENAPI_31

from quanyi.core import errors
from quanyi.core.schemas import endpoint_of
from quanyi.issuance.model import ClaimBody, ClaimReply
from quanyi.web.app import create_app
from quanyi.web.openapi import API_DOCUMENT, build_document, undeclared_routes
from tests.support.settings import settings_for_tests


@pytest.fixture(scope="module")
def app() -> Any:
    # Built, never started: the document comes from the routes alone.
    return create_app(settings_for_tests())


@pytest.fixture(scope="module")
def document(app) -> dict[str, Any]:
    return build_document(app)


def component(document: dict[str, Any], name: str) -> jsonschema_rs.Validator:
    """A validator for one of the document's component schemas, its $refs resolved in it."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/components/schemas/{name}",
        "components": document["components"],
    }
    return jsonschema_rs.validator_for(schema)


def test_the_document_is_openapi_3_1(document):
    assert document["openapi"] == "3.1.0"
    errors = [
        f"{'/'.join(map(str, e.instance_path))}: {e.message}"
        for e in jsonschema_rs.validator_for(OPENAPI_31).iter_errors(document)
    ]
    assert errors == []


def test_every_schema_in_it_is_a_valid_json_schema(document):
    for name in document["components"]["schemas"]:
        component(document, name)  # compiling refuses a bad schema or a $ref to nowhere
    refs = set(re.findall(rb'"\$ref":"#/components/schemas/([^"]+)"', orjson.dumps(document)))
    assert {r.decode() for r in refs} <= set(document["components"]["schemas"])


def test_every_route_has_a_declared_schema(app):
    """A route added without @endpoint fails here, by name."""
    missing = undeclared_routes(app)
    assert not missing, "routes without @endpoint(...): " + ", ".join(missing)


def test_a_route_without_a_declared_schema_is_named():
    app = create_app(settings_for_tests())

    async def undeclared(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_post("/v1/undeclared/{thing_id}", undeclared)
    assert undeclared_routes(app) == ["POST /v1/undeclared/{thing_id}"]
    assert "/v1/undeclared/{thing_id}" not in build_document(app)["paths"]


def test_every_declared_route_is_in_the_document(app, document):
    declared = {
        (route.method.lower(), re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical))
        for route in app.router.routes()
        if route.method != "HEAD"
        and (found := endpoint_of(route.handler)) is not None
        and found.documented
    }
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert declared == documented
    assert ("post", "/v1/claims") in documented
    assert ("post", "/admin/v1/grants/{grant_id}/revoke") in documented
    assert ("post", "/admin/v1/login") in documented
    assert ("get", "/healthz") in documented


def test_each_operation_says_how_it_is_signed_and_what_it_answers(document):
    claim = document["paths"]["/v1/claims"]["post"]
    assert claim["security"] == [{"channelId": [], "channelTimestamp": [], "channelSignature": []}]
    assert claim["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ClaimBody"
    }
    assert set(claim["responses"]) == {
        "200",
        "201",
        "400",
        "401",
        "403",
        "404",
        "409",
        "413",
        "429",
        "503",
    }
    conflict = claim["responses"]["409"]["content"]["application/json"]["schema"]
    codes = conflict["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
    assert set(codes) == {
        "idempotency_conflict",
        "campaign_not_active",
        "not_eligible",
        "out_of_stock",
        "limit_reached",
        "budget_exhausted",
    }
    login = document["paths"]["/admin/v1/login"]["post"]
    assert login["security"] == []
    assert "429" in login["responses"]
    revoke = document["paths"]["/admin/v1/grants/{grant_id}/revoke"]["post"]
    assert revoke["security"] == [{"staffToken": []}]
    assert revoke["requestBody"]["required"] is False  # the reason may be left out
    schemes = document["components"]["securitySchemes"]
    assert schemes["channelSignature"]["name"] == "X-Signature"
    assert schemes["staffToken"] == {**schemes["staffToken"], "type": "http", "scheme": "bearer"}


def test_every_error_a_route_declares_is_in_its_responses(app, document):
    missing = []
    for route in app.router.routes():
        declared = endpoint_of(route.handler)
        if route.method == "HEAD" or declared is None or not declared.documented:
            continue
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical)
        responses = document["paths"][path][route.method.lower()]["responses"]
        for error in declared.errors:
            if error.status in declared.responses:
                continue  # a declared answer of that status (a 503 report) says what it holds
            answer = responses.get(str(error.status), {})
            schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
            codes = schema.get("allOf", [{}, {}])[1]["properties"]["error"]["properties"]
            if error.code not in codes["code"]["enum"]:
                missing.append(f"{route.method} {path}: {error.status} {error.code}")
    assert missing == []


ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("quanyi", "inventory", "issuance", "vendors")


def detail_fields() -> dict[str, str]:
    """Every detail an error of the app may carry, read from the source: the keywords its
    error classes are raised with (and pass to QuanyiError), and what `details.update` adds."""
    classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.QuanyiError)
    }
    found: dict[str, str] = {}
    files = {f.resolve() for top in SOURCES for f in (ROOT / top).rglob("*.py")}
    for file in sorted(files):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            in_errors = file == Path(errors.__file__).resolve()
            if name in classes or (in_errors and name in ("__init__", "update")):
                for keyword in node.keywords:
                    if keyword.arg is not None and keyword.arg != "message":
                        found.setdefault(keyword.arg, f"{file.name}:{node.lineno}")
    return found


def test_the_error_schema_documents_every_detail_errors_carry(document):
    found = detail_fields()
    assert {"fields", "reason", "progress", "scope", "state", "errors", "rejected"} <= set(found)
    error = document["components"]["schemas"]["Error"]["properties"]["error"]
    undocumented = {name: where for name, where in found.items() if name not in error["properties"]}
    assert undocumented == {}
    assert error["required"] == ["code", "message"]  # every detail is optional


async def test_a_real_refusal_with_details_is_what_the_document_says(signed_in, document):
    """A claim refused not_eligible goal_not_met carries reason and progress: the claim's 409
    schema holds them, and nothing else."""
    api = signed_in
    await api.create_right()
    goal = {"window": "campaign", "count": 2}
    rewards = [{"id": "r1", "right_id": "coffee", "stock": 5, "per_customer_limit": 1}]
    await api.create_campaign(rewards=[{**rewards[0], "goal": goal, "grant": "claim"}])
    status, refused = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 409, refused
    assert refused["error"]["code"] == "not_eligible"
    assert {"reason", "progress"} <= set(refused["error"])
    claim = document["paths"]["/v1/claims"]["post"]
    schema = claim["responses"]["409"]["content"]["application/json"]["schema"]
    validator = jsonschema_rs.validator_for(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **schema,
            "components": document["components"],
        }
    )
    validator.validate(refused)
    assert not validator.is_valid({"error": {**refused["error"], "unheard_of": 1}})


def test_the_claim_example_is_a_valid_claim_and_its_reply_a_valid_reply(document):
    body_schema = document["components"]["schemas"]["ClaimBody"]
    [example] = body_schema["examples"]
    assert ClaimBody.model_validate(example).customer_id == "cust-1"
    component(document, "ClaimBody").validate(example)
    [reply] = document["components"]["schemas"]["ClaimReply"]["examples"]
    component(document, "ClaimReply").validate(reply)
    assert ClaimReply.model_validate(reply).replayed is False


async def test_a_real_claim_answers_what_the_document_says(signed_in, document):
    api = signed_in
    await api.create_right()
    await api.create_campaign()
    claim = {"request_id": "q1", "campaign_id": "c1", "customer_id": "cust-1"}
    status, granted = await api.claim(**claim)
    assert status == 201, granted
    component(document, "ClaimReply").validate(granted)
    status, replayed = await api.claim(**claim)
    assert (status, replayed["replayed"]) == (200, True)
    component(document, "ClaimReply").validate(replayed)
    status, grant = await api.channel("GET", f"/v1/grants/{granted['grant_id']}")
    assert status == 200
    component(document, "GrantReply").validate(grant)
    status, listed = await api.channel("GET", "/v1/customers/cust-1/grants")
    assert status == 200
    component(document, "CustomerGrantsReply").validate(listed)
    status, revoked = await api.admin(
        "marketer", "POST", f"/admin/v1/grants/{granted['grant_id']}/revoke", {"reason": "test"}
    )
    assert (status, revoked["status"]) == (200, "revoked"), revoked
    component(document, "GrantReply").validate(revoked)


async def test_openapi_json_is_served_and_made_once(api):
    first = await api.client.get("/openapi.json")
    assert first.status == 200
    assert first.content_type == "application/json"
    served = await first.json()
    assert served["openapi"] == "3.1.0" and "/v1/claims" in served["paths"]
    app = api.client.server.app
    assert app[API_DOCUMENT].json(app) is app[API_DOCUMENT].json(app)


async def test_docs_is_swagger_ui_loading_only_from_docs_static(api):
    resp = await api.client.get("/docs")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert "SwaggerUIBundle" in page and '"openapi.json"' in page
    assert "http://" not in page and "https://" not in page  # nothing from a CDN
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert loaded and all(link.startswith("docs/static/") for link in loaded)
    for link in loaded:
        asset = await api.client.get(f"/{link}")
        assert asset.status == 200, link
        assert len(await asset.read()) > 100, link
    script = await api.client.get("/docs/static/swagger-ui-bundle.js")
    assert script.content_type == "text/javascript"
    assert b"SwaggerUIBundle" in await script.read()


async def test_docs_static_serves_nothing_else(api):
    for name in ("index.html", "..%2F..%2Fquanyi%2Fcore%2Fsettings.py", "nope.js"):
        resp = await api.client.get(f"/docs/static/{name}")
        assert resp.status == 404, name
        assert (await resp.json())["error"]["code"] == "not_found"
