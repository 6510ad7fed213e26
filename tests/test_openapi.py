"""The API document: OpenAPI 3.1 made from the handlers' declarations, every route in it, and
Swagger UI at /docs served from the installed package."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import orjson
import pytest
from aiohttp import web
from schemathesis.specs.openapi.definitions import OPENAPI_31

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
        "503",
    }
    conflict = claim["responses"]["409"]["content"]["application/json"]["schema"]
    codes = conflict["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
    assert set(codes) == {
        "idempotency_conflict",
        "campaign_not_active",
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
