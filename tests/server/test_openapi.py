"""The OpenAPI document matches the API (FastAPI TestClient, tiny dse-qwen2 / colqwen2 collections):
every reference resolves, error responses are documented with the bodies the server sends, security
is declared only with a key and only where it is required, empty strings are schema-invalid, and the
server refuses what the schema refuses (unknown/repeated parameters, unknown fields, ``"k": true``,
page ids beyond 64 bits). Also HEAD on page images, the offline ``/docs`` and the favicon.
The full check (schemathesis against a live server) is in test_schemathesis.py."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from support.server import Built

from dse.server.app import create_app
from dse.server.routes import web

KEY = "openapi-key-0042"
PROTECTED = {"/info", "/search", "/pages/{page_id}/image", "/pages/{page_id}/similarity", "/answer"}


@pytest.fixture(scope="module")
def client(dse_col: Built) -> Iterator[TestClient]:
    with TestClient(create_app(dse_col.directory, device="cpu", encoder=dse_col.encoder)) as c:
        yield c


@pytest.fixture(scope="module")
def multi_keyed(col_col: Built) -> Iterator[TestClient]:
    """colqwen2 (similarity maps on) with an API key."""
    with TestClient(create_app(col_col.directory, device="cpu", encoder=col_col.encoder, api_key=KEY)) as c:
        c.headers["X-API-Key"] = KEY
        yield c


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def png(size: tuple[int, int] = (40, 50)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ document
def test_every_reference_resolves_and_search_bodies_are_declared(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    missing = {r for r in refs(spec) if r.removeprefix("#/components/schemas/") not in schemas}
    assert not missing, missing
    body = spec["paths"]["/search"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/SearchRequest"}
    assert body["multipart/form-data"]["schema"] == {"$ref": "#/components/schemas/SearchForm"}
    assert body["multipart/form-data"]["encoding"]["image"]["contentType"].startswith("image/png")
    search = schemas["SearchRequest"]
    assert search["required"] == ["text"] and search["additionalProperties"] is False
    assert search["properties"]["k"].items() >= {"type": "integer", "minimum": 1, "maximum": 100}.items()
    form = schemas["SearchForm"]
    assert form["additionalProperties"] is False and form["properties"]["image"]["format"] == "binary"
    assert form["required"] == ["image"] and form["dependentRequired"] == {"fusion": ["text"]}
    # FastAPI's default 422 body ({"detail": [...]}) is not what this server sends: not in the document
    assert "HTTPValidationError" not in schemas


def test_error_responses_are_documented(client: TestClient, multi_keyed: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ops = {(path, m): op for path, item in spec["paths"].items() for m, op in item.items()}
    expected = {
        ("/search", "post"): {"200", "400", "413", "415", "422"},
        ("/pages/{page_id}/image", "get"): {"200", "404", "422"},
        ("/pages/{page_id}/image", "head"): {"200", "404", "422"},
        ("/info", "get"): {"200", "422"},
    }
    for key, statuses in expected.items():
        assert set(ops[key]["responses"]) == statuses, key
    error = {"$ref": "#/components/schemas/ErrorOut"}
    invalid = {"$ref": "#/components/schemas/ValidationErrorOut"}
    assert ops["/search", "post"]["responses"]["413"]["content"]["application/json"]["schema"] == error
    assert ops["/search", "post"]["responses"]["422"]["content"]["application/json"]["schema"] == invalid
    keyed = multi_keyed.get("/openapi.json").json()["paths"]
    assert set(keyed["/pages/{page_id}/similarity"]["get"]["responses"]) == {"200", "400", "401", "404", "422"}
    # and the bodies are those documented: 422 {"detail": str, "errors": [{loc, msg, type}]}
    body = client.post("/search", json={"text": "x", "k": True}).json()
    assert set(body) == {"detail", "errors"} and set(body["errors"][0]) == {"loc", "msg", "type"}


def test_security_declared_only_with_a_key_and_only_where_required(client: TestClient, multi_keyed) -> None:
    open_spec = client.get("/openapi.json").json()
    assert "securitySchemes" not in open_spec.get("components", {})
    assert not [op for item in open_spec["paths"].values() for op in item.values() if "security" in op]
    spec = multi_keyed.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer", "APIKeyQuery"}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            declared = "security" in op
            assert declared == (path in PROTECTED), (method, path)
            assert ("401" in op["responses"]) == declared, (method, path)
    # the document itself and the health check need no key; everything declared protected does
    bare = TestClient(multi_keyed.app)
    assert bare.get("/openapi.json").status_code == 200 and bare.get("/health").status_code == 200
    assert bare.get("/info").status_code == 401


def test_optional_operations_listed_only_when_offered(client: TestClient, multi_keyed: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/pages/{page_id}/similarity" not in paths and "/answer" not in paths
    # the routes still explain themselves
    r = client.get("/pages/1/similarity", params={"text": "red"})
    assert r.status_code == 400 and "multi-vector" in r.json()["detail"]
    r = client.post("/answer", json={"question": "q"})
    assert r.status_code == 503 and "--generator" in r.json()["detail"]
    assert "/pages/{page_id}/similarity" in multi_keyed.get("/openapi.json").json()["paths"]


def test_empty_strings_are_schema_invalid_and_refused(client: TestClient, multi_keyed: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for text in (schemas["SearchRequest"]["properties"]["text"], schemas["SearchForm"]["properties"]["text"]):
        assert text["minLength"] == 1 and re.search(text["pattern"], "  \t\u3000") is None
        assert re.search(text["pattern"], " a ")
    keys = schemas["SearchRequest"]["properties"]["filters"]["anyOf"][0]["propertyNames"]
    assert keys["minLength"] == 1
    sim = multi_keyed.get("/openapi.json").json()["paths"]["/pages/{page_id}/similarity"]["get"]
    text_param = next(p for p in sim["parameters"] if p["name"] == "text")
    assert text_param["required"] and text_param["schema"]["minLength"] == 1
    for body in ({"text": ""}, {"text": " \n"}, {"text": "x", "filters": {"": "a"}}):
        assert client.post("/search", json=body).status_code == 422, body
    r = client.post("/search", data={"text": "  "}, files={"image": ("q.png", png(), "image/png")})
    assert r.status_code == 422 and r.json()["detail"] == "body.text: must not be blank (give some non-whitespace text)"
    assert multi_keyed.get("/pages/1/similarity", params={"text": ""}).status_code == 422


# ------------------------------------------------------------ refused inputs
def test_unknown_fields_and_non_integer_k_are_refused(client: TestClient) -> None:
    r = client.post("/search", json={"text": "x", "kk": 3})
    assert r.status_code == 422
    assert r.json()["detail"] == "body: unknown field 'kk'; the accepted fields are text, k, filters, where, fusion"
    r = client.post("/search", json={"text": "x", "k": True})
    assert r.status_code == 422 and r.json()["detail"] == "body.k: Input should be a valid integer, got true"
    for k in ("3", 2.5, None, [3]):
        assert client.post("/search", json={"text": "x", "k": k}).status_code == 422, k
    r = client.post("/search", json={"text": "x", "k": 3.0})  # JSON Schema's integer: 3.0 is one
    assert r.status_code == 200 and r.json()["query"]["k"] == 3
    r = client.post("/search", json={"text": "x", "filters": {"team": "red"}, "where": {"team": "blue"}})
    assert r.status_code == 422 and "give one of them" in r.json()["detail"]
    r = client.post("/search", json={"text": "x", "fusion": "rrf"})
    assert r.status_code == 422 and "multipart" in r.json()["detail"]
    r = client.post("/answer", json={"question": "q", "top_k": 3})
    assert r.status_code == 422 and "unknown field 'top_k'" in r.json()["detail"]
    r = client.post("/answer", json={"question": "q", "k": True})
    assert r.status_code == 422 and r.json()["detail"].startswith("body.k: Input should be a valid integer")

    # the multipart variant: the same rules, field by field
    image = {"image": ("q.png", png(), "image/png")}
    r = client.post("/search", data={"k": "3", "colour": "red"}, files=image)
    assert r.status_code == 422 and "unknown field 'colour'" in r.json()["detail"]
    r = client.post("/search", data={"k": "true"}, files=image)
    assert r.status_code == 422 and r.json()["detail"].startswith("body.k: Input should be a valid integer")
    r = client.post(
        "/search", files=[("image", ("q.png", png(), "image/png")), ("text", (None, "a")), ("text", (None, "b"))]
    )
    assert r.status_code == 422 and r.json()["detail"] == "body.text: repeated field: give it once"
    r = client.post("/search", data={"fusion": "rrf"}, files=image)
    assert r.status_code == 422 and "give a text too" in r.json()["detail"]
    r = client.post("/search", files=[("text", (None, "red")), ("image", (None, "not a file"))])
    assert r.status_code == 422 and r.json()["detail"].startswith("body.image: must be a file part")
    r = client.post("/search", files=[("k", (None, "2"))])
    assert r.status_code == 422 and r.json()["detail"].startswith("body.image: Field required: a multipart query")
    r = client.post(
        "/search", data={"k": "2", "filters": '{"team": "red"}', "fusion": "rrf", "text": "red"}, files=image
    )
    assert (
        r.status_code == 200
        and r.json()["query"].items() >= {"fusion": "rrf", "filters": {"team": "red"}, "k": 2}.items()
    )


def test_repeated_and_unknown_query_parameters_are_refused(client: TestClient) -> None:
    r = client.get("/pages/1/image?width=64&width=128")
    assert r.status_code == 422 and r.json()["detail"] == "query.width: repeated 2 times: give it once"
    r = client.get("/pages/1/image?widht=64")
    assert (
        r.status_code == 422 and r.json()["detail"] == "query.widht: unknown query parameter (this route takes: width)"
    )
    r = client.get("/info?verbose=1")
    assert r.status_code == 422 and "this route takes: none" in r.json()["detail"]
    assert client.post("/search?k=1&k=2", json={"text": "x"}).status_code == 422
    assert client.get("/pages/1/image?width=64").status_code == 200
    assert client.get("/info?key=anything").status_code == 200  # the key parameter is always accepted


@pytest.mark.parametrize("page_id", ["9223372036854775808", "99999999999999999999999", "-1", "1e3", "0x10"])
def test_page_ids_out_of_range_or_malformed_are_4xx(client: TestClient, multi_keyed: TestClient, page_id: str) -> None:
    for c, method, path in (
        (client, "get", f"/pages/{page_id}/image"),
        (client, "head", f"/pages/{page_id}/image"),
        (client, "get", f"/pages/{page_id}/image?width=64"),
        (multi_keyed, "get", f"/pages/{page_id}/similarity?text=red"),
    ):
        r = getattr(c, method)(path)
        assert r.status_code == 422, (method, path, r.status_code)
        if method == "get":
            assert r.json()["detail"].startswith("path.page_id: ")


def test_largest_page_id_is_a_404(client: TestClient, multi_keyed: TestClient) -> None:
    largest = 2**63 - 1
    r = client.get(f"/pages/{largest}/image")
    assert r.status_code == 404 and r.json() == {"detail": f"no page {largest} in this collection"}
    assert client.head(f"/pages/{largest}/image").status_code == 404
    assert multi_keyed.get(f"/pages/{largest}/similarity", params={"text": "red"}).status_code == 404


# ------------------------------------------------------------------- HEAD
def test_head_on_page_images_sends_the_get_headers_without_a_body(client: TestClient) -> None:
    page_id = client.post("/search", json={"text": "red", "k": 1}).json()["hits"][0]["page_id"]
    for params in ({}, {"width": 64}):
        get = client.get(f"/pages/{page_id}/image", params=params)
        head = client.head(f"/pages/{page_id}/image", params=params)
        assert head.status_code == get.status_code == 200
        assert head.content == b""
        for name in ("content-type", "content-length", "cache-control"):
            assert head.headers[name] == get.headers[name], name
        assert int(head.headers["content-length"]) == len(get.content) > 0
    assert client.head("/pages/999999/image").status_code == 404
    r = client.put(f"/pages/{page_id}/image")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


# ------------------------------------------------------------ docs, favicon
def test_docs_and_favicon_are_served_locally(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page.text), "the docs page loads nothing from the web"
    for url in re.findall(r"(?:src|href)=\"(/[^\"]+)\"", page.text):
        assert client.get(url).status_code == 200, url
    assert client.get("/redoc").status_code == 404  # ReDoc needs a CDN: not offered
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    assert Image.open(io.BytesIO(icon.content)).format == "ICO"
    assert '<link rel="icon" href="/favicon.ico"' in client.get("/").text
    for path in ("/", "/favicon.ico", "/docs", "/static/app.js"):
        head = client.head(path)
        assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0, path


def test_builtin_docs_page_without_swagger_ui(dse_col: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "swagger_ui_dir", lambda: None)
    with TestClient(create_app(dse_col.directory, device="cpu", encoder=dse_col.encoder)) as c:
        page = c.get("/docs")
        assert page.status_code == 200 and "/static/docs.js" in page.text
        assert c.get("/static/docs.js").status_code == 200 and c.get("/static/docs.css").status_code == 200


@pytest.mark.skipif(web.swagger_ui_dir() is None, reason="no Swagger UI 5 bundle installed (swagger-ui-bundle-v2)")
def test_swagger_ui_served_from_the_installed_bundle(client: TestClient) -> None:
    page = client.get("/docs").text
    assert "/docs/assets/swagger-ui-bundle.js" in page and "SwaggerUIBundle" in page
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
