"""Every request invsync sends and every sandbox answer, held against BigCommerce's OpenAPI files.

Real CLI commands (plan, sync, sync/plan with a live baseline, drift, verify, the 422
isolation path, a refused token, a flaky store) run against a real sandbox process started
with ``--record-answers``; then each entry of its request log is checked against
``../shared/openapi/inventory.v3.yml`` and ``locations.v3.yml`` (BigCommerce's own files,
see their README): the operation exists for the method and path, path and query
parameters are declared and typed as declared, required headers are there, JSON bodies
validate against the request schema, and the answer's status, content type and JSON body
validate against what the operation declares.

Checks are stricter than the spec in one way: an object schema that lists its properties
and says nothing about others is treated as closed, so neither side sends a field
BigCommerce does not describe. Spec quirks, kept as the API behaves (see ``QUIRKS``):

- ``location_id:in``, ``variant_id:in`` and ``product_id:in`` are typed ``integer`` although
  their text says "comma separated list": each comma-separated element is checked as an
  integer, and invsync keeps sending lists.
- ``identity.sku_id`` is typed ``integer`` while its text says it is ``null`` for a base
  variant: null is allowed there.
- Statuses an operation does not declare (401, 403, 429, 5xx) use BigCommerce's problem
  format, ``ErrorResponse``, as ``application/problem+json``.

The test is skipped when ``../shared/openapi`` (beside the repository) is absent.
"""

from __future__ import annotations

import copy
import csv
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT, SAMPLE, TOKEN, env_for, output, retry_config, run_invsync, write_csv

from invsync.sandbox.process import SandboxProcess

# INVSYNC_OPENAPI_DIR: the files elsewhere (a worktree not beside shared/).
OPENAPI = Path(os.environ.get("INVSYNC_OPENAPI_DIR") or ROOT.parent / "shared" / "openapi")
SPEC_FILES = ("inventory.v3.yml", "locations.v3.yml", "orders.v2.oas2.yml", "settings.v3.yml")
if not OPENAPI.is_dir():
    pytest.skip(f"BigCommerce's OpenAPI files are not at {OPENAPI}", allow_module_level=True)

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

QUIRKS = {
    # name -> why a parameter typed integer is checked as a comma-separated list of integers
    "list_params": {"location_id:in", "variant_id:in", "product_id:in"},
    # JSON pointer-ish property paths whose integer type also allows null, per their text
    "nullable": {"sku_id"},
}

Factory = Callable[..., SandboxProcess]


# ---- the spec as JSON Schema ------------------------------------------------------------


def _resolve(node: Any, doc: dict[str, Any], depth: int = 0) -> Any:
    """Inline every local ``$ref`` of ``node`` (refs are all ``#/...`` within one file)."""
    assert depth < 40, "runaway $ref"
    if isinstance(node, dict):
        if "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            target: Any = doc
            for part in ref[2:].split("/"):
                target = target[part]
            return _resolve(target, doc, depth + 1)
        return {k: _resolve(v, doc, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, doc, depth + 1) for v in node]
    return node


def _merged_all_of(schema: dict[str, Any]) -> dict[str, Any]:
    """An ``allOf`` of object parts as one object: closing each part on its own would let
    no instance through (the orders file builds its objects from parts)."""
    parts = schema["allOf"]
    flat = [_merged_all_of(p) if isinstance(p, dict) and "allOf" in p else p for p in parts]
    if not all(isinstance(p, dict) and ("properties" in p or p.get("type") == "object")
               for p in flat):
        return schema
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    merged["type"] = "object"
    merged["properties"] = {}
    required: list[str] = []
    for p in flat:
        merged["properties"].update(p.get("properties") or {})
        required += p.get("required") or []
    if required:
        merged["required"] = sorted(set(required))
    return merged


def _json_schema(schema: Any, name: str = "") -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: `nullable`, the quirks, and closed objects."""
    if isinstance(schema, list):
        return [_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "allOf" in schema:
        schema = _merged_all_of(schema)
    out = {k: _json_schema(v) for k, v in schema.items()
           if k not in ("properties", "example", "examples", "nullable")}
    if "properties" in schema:
        out["properties"] = {k: _json_schema(v, k) for k, v in schema["properties"].items()}
        out.setdefault("additionalProperties", False)
    if "type" in schema and (schema.get("nullable") or name in QUIRKS["nullable"]):
        out["type"] = [schema["type"], "null"]
    return out


class Spec:
    """The operations of both files, by method and path template."""

    def __init__(self) -> None:
        self.operations: list[tuple[str, re.Pattern[str], str, dict[str, Any],
                                    list[dict[str, Any]]]] = []
        for name in SPEC_FILES:
            doc = yaml.safe_load((OPENAPI / name).read_text(encoding="utf-8"))
            server = doc["servers"][0]["url"]
            version = server.rsplit("/", 1)[1]
            assert server.endswith("/stores/{store_hash}/" + version), server
            for template, item in doc["paths"].items():
                template = f"/{version}{template}"  # the paths of v2 and v3 files side by side
                shared = _resolve(item.get("parameters") or [], doc)
                pattern = re.compile(
                    "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$")
                for method, op in item.items():
                    if method == "parameters" or not isinstance(op, dict):
                        continue
                    op = _resolve(op, doc)
                    params = {(p["in"], p["name"]): p for p in [*shared, *op.get("parameters", [])]}
                    self.operations.append((method.upper(), pattern, template, op,
                                            list(params.values())))

    def find(self, method: str, path: str) -> tuple[str, dict[str, Any], list[dict[str, Any]],
                                                     dict[str, str]]:
        for m, pattern, template, op, params in self.operations:
            match = pattern.match(path)
            if match and m == method:
                return template, op, params, match.groupdict()
        raise AssertionError(f"{method} {path}: no such operation in BigCommerce's spec")


@pytest.fixture(scope="module")
def spec() -> Spec:
    return Spec()


def _validate(instance: Any, schema: Any, what: str) -> list[str]:
    validator = jsonschema.Draft7Validator(_json_schema(copy.deepcopy(schema)))
    return [f"{what}: {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(instance)]


def _param_errors(value: str, param: dict[str, Any], what: str) -> list[str]:
    kind = param.get("schema", {}).get("type", "string")
    values = value.split(",") if param["name"] in QUIRKS["list_params"] else [value]
    pattern = {"integer": r"-?\d+", "boolean": r"true|false|1|0", "number": r"-?\d+(\.\d+)?"}
    errors = []
    schema = param.get("schema", {})
    if kind == "array":  # style form, explode false: comma-separated (include=a,b)
        values, schema = value.split(","), schema.get("items", {})
    for v in values:
        if "enum" in schema and v not in [str(e) for e in schema["enum"]]:
            errors.append(f"{what}: {param['name']}={value!r} is not one of {schema['enum']}")
        if kind in pattern and not re.fullmatch(pattern[kind], v):
            errors.append(f"{what}: {param['name']}={value!r} is not a {kind}")
        elif kind == "string" and param["name"] in QUIRKS["list_params"] and not v:
            errors.append(f"{what}: {param['name']}={value!r} has an empty element")
    return errors


def check_request(spec: Spec, entry: dict[str, Any], prefix: str) -> list[str]:
    """What in one logged request does not conform: method, path, query, headers, body."""
    method, full = entry["method"], entry["path"]
    what = f"#{entry['seq']} {method} {full}?{entry['query']}"
    assert full.startswith(prefix), f"{what}: not under {prefix}"
    template, op, params, path_args = spec.find(method, full[len(prefix):].rstrip("/"))
    errors: list[str] = []
    by_in: dict[str, dict[str, dict[str, Any]]] = {}
    for p in params:
        by_in.setdefault(p["in"], {})[p["name"].lower() if p["in"] == "header" else p["name"]] = p
    for name, value in path_args.items():
        errors += _param_errors(value, by_in["path"][name], what)
    query = httpx.QueryParams(entry["query"])
    for name in set(query.keys()):
        values = query.get_list(name)
        if len(values) > 1:
            errors.append(f"{what}: query parameter {name} given {len(values)} times")
        param = by_in.get("query", {}).get(name)
        if param is None:
            errors.append(f"{what}: query parameter {name!r} is not declared for {template}")
            continue
        errors += _param_errors(values[0], param, what)
    for where, declared in by_in.items():
        for name, p in declared.items():
            present = (name in query) if where == "query" else (
                name in entry["request_headers"]) if where == "header" else True
            if p.get("required") and not present:
                errors.append(f"{what}: required {where} parameter {p['name']} missing")
    if "content-type" in by_in.get("header", {}) and entry["body"] is not None:
        ctype = entry["request_headers"].get("content-type", "")
        if ctype.split(";")[0].strip() != "application/json":
            errors.append(f"{what}: Content-Type {ctype!r}")
    body_spec = op.get("requestBody")
    if body_spec is None:
        if entry["body"] is not None:
            errors.append(f"{what}: a body where the operation takes none")
    else:
        if body_spec.get("required") and entry["body"] is None:
            errors.append(f"{what}: required JSON body missing")
        elif entry["body"] is not None:
            schema = body_spec["content"]["application/json"]["schema"]
            errors += _validate(entry["body"], schema, what + " body")
    return errors


def check_answer(spec: Spec, entry: dict[str, Any], prefix: str,
                 error_schema: dict[str, Any]) -> list[str]:
    """What in one logged answer does not conform: status, content type, JSON body, headers."""
    status = entry["status"]
    what = f"#{entry['seq']} {entry['method']} {entry['path']} -> {status}"
    if status == 0:  # a dropped connection (a fault): no answer to check
        return []
    path = entry["path"][len(prefix):].rstrip("/")
    _, op, _, _ = spec.find(entry["method"], path)
    declared = op["responses"].get(str(status))
    headers = entry["answer_headers"]
    ctype = headers.get("content-type", "").split(";")[0].strip()
    errors: list[str] = []
    if declared is None:
        if status < 400:
            return [f"{what}: status {status} is not declared"]
        content = {"application/problem+json": {"schema": error_schema}}
    else:
        content = declared.get("content") or {}
    if ctype not in content:
        errors.append(f"{what}: content type {ctype!r}, declared {sorted(content)}")
    else:
        errors += _validate(entry["answer"], content[ctype]["schema"], what + " body")
    # Not in the OpenAPI files (they declare no response headers) but in the API contract
    # (../shared/bigcommerce-inventory-api.md): every answer but a bare 429 carries the
    # rate-limit headers, as whole numbers.
    rate = [h for h in headers if h.startswith("x-rate-limit-")]
    if rate:
        for name in ("x-rate-limit-time-window-ms", "x-rate-limit-time-reset-ms",
                     "x-rate-limit-requests-quota", "x-rate-limit-requests-left"):
            if not re.fullmatch(r"\d+", headers.get(name, "")):
                errors.append(f"{what}: header {name}={headers.get(name)!r}")
    elif status != 429:
        errors.append(f"{what}: no rate-limit headers")
    return errors


# ---- the runs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def traffic(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SandboxProcess, list[dict[str, Any]]]]:
    """Drive the real CLI through every request kind it makes; the sandbox's full log."""
    from invsync.sandbox.process import run_sandbox

    tmp = tmp_path_factory.mktemp("conformance")
    with run_sandbox(SAMPLE / "catalog.csv", "--record-answers", "--seed", "7",
                     token=TOKEN) as sb:
        env = env_for(sb, tmp)
        with (SAMPLE / "catalog.csv").open(newline="", encoding="utf-8") as fh:
            skus = [r["sku"] for r in csv.DictReader(fh) if r["tracking"] == "variant"]
        # Rows by SKU, by variant id and by product id, at two locations; over 1,000
        # tracked items, so a live read walks two pages of 1000.
        rows = [[s, "", "", 1, i % 50] for i, s in enumerate(skus[:1200])]
        night1 = write_csv(tmp / "night1.csv", ["sku", "variant_id", "product_id",
                                                 "location_id", "quantity"], rows)
        by_id = write_csv(tmp / "by_id.csv", ["variant_id", "location_id", "quantity"],
                          [[1000, 2, 5], [1001, 2, 6]])
        by_product = write_csv(tmp / "by_product.csv", ["product_id", "location_id", "quantity"],
                               [[101, 2, 7]])
        night2 = write_csv(tmp / "night2.csv", ["sku", "location_id", "quantity"],
                           [[s, 1, (i % 50) + 1] for i, s in enumerate(skus[:1200])])
        unknown = write_csv(tmp / "unknown.csv", ["sku", "location_id", "quantity"],
                            [[s, 2, 3] for s in skus[:30]] + [["NO-SUCH-SKU", 2, 1]])
        codes = write_csv(tmp / "codes.csv", ["sku", "warehouse code", "quantity"],
                          [[skus[10], "WH-EAST", 9]])  # not variant 1000: issue 9 #5
        config = retry_config(tmp, max_attempts=10, max_delay_s=0.1, max_total_s=60.0,
                              timeout_s=10.0)
        runs = [
            (["plan", str(night1)], {0}),
            (["sync", str(night1)], {0}),
            (["sync", str(by_id), "--allow-shrink"], {0}),
            (["sync", str(by_product), "--allow-shrink"], {0}),
            (["sync", str(codes), "--allow-shrink"], {0}),
            (["plan", str(night2), "--baseline", "live"], {0}),
            (["sync", str(night2), "--baseline", "live", "--batch-size", "500"], {0}),
            (["drift"], {0}),
            (["verify", "last"], {0}),
            # the 422 isolation path
            (["sync", str(unknown), "--batch-size", "10", "--allow-shrink"], {1}),
        ]
        for args, codes_ok in runs:
            result = run_invsync(args, env)
            assert result.returncode in codes_ok, (args, result.stdout, result.stderr)
        # A refused token (401) and a flaky store (5xx, bare 429s, quota 429s).
        bad = run_invsync(["sync", str(night2), "--full"], {**env,
                          "BIGCOMMERCE_ACCESS_TOKEN": "wrong-token"})
        assert bad.returncode == 2, output(bad)
        sb_post_json(sb, "/_sandbox/faults", {"error_rate": 0.3, "bare_429_rate": 0.2})
        flaky = run_invsync(["sync", str(night1), "--full", "--batch-size", "200",
                             "--config", str(config)], env)
        assert flaky.returncode == 0, output(flaky)
        sb_post_json(sb, "/_sandbox/faults", {"error_rate": 0.0, "bare_429_rate": 0.0})
        _orders_traffic(sb, env, tmp, skus)
        # The sandbox endpoint invsync does not use, and its 404.
        base = f"{sb.url}/stores/{sb.store_hash}/v3"
        with httpx.Client(headers={"X-Auth-Token": TOKEN, "Accept": "application/json"}) as c:
            assert c.get(f"{base}/inventory/locations/2/items",
                         params={"sku:in": ",".join(skus[:3]), "limit": "2"}).status_code == 200
            assert c.get(f"{base}/inventory/locations/99/items").status_code == 404
        yield sb, sb.requests()


def _orders_traffic(sb: SandboxProcess, env: dict[str, str], tmp: Path,
                    skus: list[str]) -> None:
    """Orders placed, shipped, cancelled and refunded, then plan/sync with --as-of (the
    orders listing over two pages of 250 and the inventory settings)."""
    from datetime import UTC, datetime, timedelta

    as_of = datetime.now(UTC) - timedelta(hours=2)
    # The levels night2 left at location 1 are (i % 50) + 1: order one unit of items with 2+.
    sellable = [s for i, s in enumerate(skus[:1200]) if (i % 50) + 1 >= 2][:260]
    with httpx.Client(timeout=30) as admin:  # one connection for the 400 admin calls
        for n, sku in enumerate(sellable):
            order = sb_post_json(sb, "/_sandbox/orders", {
                "items": [{"sku": sku, "quantity": 1}],
                "date_created": (as_of + timedelta(seconds=n + 1)).isoformat()}, admin)
            if n % 3 == 1:
                sb_post_json(sb, f"/_sandbox/orders/{order['id']}/status", {"status_id": 2},
                             admin)
            elif n % 7 == 2:
                sb_post_json(sb, f"/_sandbox/orders/{order['id']}/status", {"status_id": 5},
                             admin)
    night = write_csv(tmp / "night3.csv", ["sku", "location_id", "quantity"],
                      [[s, 1, 60] for s in skus[:1200]])
    for command in ("plan", "sync"):
        result = run_invsync([command, str(night), "--as-of", as_of.isoformat()], env)
        assert result.returncode == 0, output(result)
    v2 = f"{sb.url}/stores/{sb.store_hash}/v2/orders"
    with httpx.Client(headers={"X-Auth-Token": TOKEN, "Accept": "application/json"}) as c:
        assert c.get(v2, params={"page": "9", "limit": "250"}).status_code == 200  # []
        assert c.get(v2, params={"limit": "0"}).status_code == 400
        assert c.get(f"{sb.url}/stores/{sb.store_hash}/v3/settings/inventory").status_code == 200


def sb_post_json(sb: SandboxProcess, path: str, payload: Any,
                 client: httpx.Client | None = None) -> Any:
    r = (client.post if client else httpx.post)(sb.url + path, json=payload, timeout=30)
    r.raise_for_status()
    return r.json()


def _prefix(sb: SandboxProcess) -> str:
    return f"/stores/{sb.store_hash}"


def test_the_runs_covered_every_request_kind(traffic: tuple[SandboxProcess, list[Any]]) -> None:
    sb, log = traffic
    prefix = _prefix(sb)
    kinds = {(e["method"], re.sub(r"/\d+/", "/{id}/", e["path"][len(prefix):]), e["status"])
             for e in log}
    for kind in [("GET", "/v3/inventory/locations", 200), ("GET", "/v3/inventory/items", 200),
                 ("PUT", "/v3/inventory/adjustments/absolute", 200),
                 ("PUT", "/v3/inventory/adjustments/absolute", 422),
                 ("GET", "/v3/inventory/locations", 401),
                 ("GET", "/v3/inventory/locations/{id}/items", 200),
                 ("GET", "/v3/inventory/locations/{id}/items", 404),
                 ("GET", "/v2/orders", 200), ("GET", "/v3/settings/inventory", 200)]:
        assert kind in kinds, kind
    statuses = {e["status"] for e in log}
    assert statuses & {500, 502, 503} and 429 in statuses, statuses
    pages = {httpx.QueryParams(e["query"]).get("page") for e in log
             if e["path"].endswith("/inventory/items")}
    assert {"1", "2"} <= pages, "a live read walked one page only"
    puts = [e["body"] for e in log if e["method"] == "PUT"]
    idents = {k for body in puts for it in body["items"] for k in it} - {"location_id",
                                                                        "quantity"}
    assert idents == {"sku", "variant_id", "product_id"}, idents


def test_every_request_invsync_sent_conforms(spec: Spec,
                                             traffic: tuple[SandboxProcess, list[Any]]) -> None:
    sb, log = traffic
    sent = [e for e in log if e["request_headers"].get("user-agent", "").startswith("invsync/")]
    assert len(sent) > 20
    errors = [err for e in sent for err in check_request(spec, e, _prefix(sb))]
    assert not errors, "\n".join(errors[:40])


def test_every_sandbox_answer_conforms(spec: Spec,
                                       traffic: tuple[SandboxProcess, list[Any]]) -> None:
    sb, log = traffic
    error_schema = _resolve({"$ref": "#/components/schemas/ErrorResponse"},
                            yaml.safe_load((OPENAPI / SPEC_FILES[0]).read_text()))
    errors = [err for e in log for err in check_answer(spec, e, _prefix(sb), error_schema)]
    assert not errors, "\n".join(errors[:40])


def test_the_checks_catch_what_does_not_conform(spec: Spec) -> None:
    """The validators are not vacuous: known-bad requests and answers are flagged."""
    prefix = "/stores/s"
    base = {"seq": 0, "method": "PUT", "path": prefix + "/v3/inventory/adjustments/absolute",
            "query": "", "status": 200,
            "request_headers": {"accept": "application/json", "content-type": "application/json"},
            "answer_headers": {"content-type": "application/json",
                               "x-rate-limit-time-window-ms": "1",
                               "x-rate-limit-time-reset-ms": "1",
                               "x-rate-limit-requests-quota": "1",
                               "x-rate-limit-requests-left": "1"},
            "answer": {"transaction_id": "t"},
            "body": {"items": [{"location_id": 1, "sku": "A", "quantity": 1}]}}
    assert check_request(spec, base, prefix) == []
    bad_bodies = [
        {"items": [{"location_id": 1, "sku": "A", "variant_id": 2, "quantity": 1}]},
        {"items": [{"location_id": "1", "sku": "A", "quantity": 1}]},
        {"items": [{"location_id": 1, "sku": "A", "quantity": 1.5}]},
        {"items": [{"location_id": 1, "sku": "A", "quantity": 1, "note": "x"}]},
        {"reason": 5, "items": []},
        {"changes": []},
    ]
    for body in bad_bodies:
        assert check_request(spec, {**base, "body": body}, prefix), body
    assert check_request(spec, {**base, "request_headers": {}}, prefix)  # no Accept
    get = {**base, "method": "GET", "path": prefix + "/v3/inventory/items", "body": None}
    assert check_request(spec, {**get, "query": "location_id:in=1,2&page=1&limit=1000"},
                         prefix) == []
    for query in ("location_id:in=1,x", "page=one", "locations=1", "limit=5&limit=6"):
        assert check_request(spec, {**get, "query": query}, prefix), query
    error_schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    assert check_answer(spec, base, prefix, error_schema) == []
    assert check_answer(spec, {**base, "answer": {"transaction_id": 5}}, prefix, error_schema)
    assert check_answer(spec, {**base, "status": 201}, prefix, error_schema)
    meta = {"pagination": {"links": {"current": "?page=1", "next": None}}}
    assert check_answer(spec, {**get, "answer": {"data": [], "meta": meta}}, prefix,
                        error_schema)
    assert check_answer(spec, {**base, "answer_headers": {"content-type": "text/html"}}, prefix,
                        error_schema)


def test_the_order_checks_catch_what_does_not_conform(spec: Spec) -> None:
    """The orders and settings validators are not vacuous either."""
    prefix = "/stores/s"
    line = {"id": 1, "order_id": 100, "product_id": 5, "variant_id": 7, "sku": "A",
            "quantity": 2, "quantity_refunded": 0, "type": "physical"}
    order = {"id": 100, "status_id": 11, "status": "Awaiting Fulfillment",
             "date_created": "Sun, 06 Dec 2026 03:00:00 +0000", "date_shipped": "",
             "consignments": {"pickups": [], "downloads": [], "email": {"gift_certificates": []},
                              "shipping": [{"id": 1, "line_items": [line]}]}}
    ok = {"seq": 0, "method": "GET", "path": prefix + "/v2/orders", "body": None,
          "query": "min_date_created=2026-12-06T02:00:00+00:00&include=consignments.line_items"
                   "&consignment_structure=object&page=1&limit=250",
          "status": 200, "request_headers": {"accept": "application/json"},
          "answer_headers": {"content-type": "application/json",
                             "x-rate-limit-time-window-ms": "1",
                             "x-rate-limit-time-reset-ms": "1",
                             "x-rate-limit-requests-quota": "1",
                             "x-rate-limit-requests-left": "1"},
          "answer": [order]}
    assert check_request(spec, ok, prefix) == []
    assert check_answer(spec, ok, prefix, {}) == []
    for query in ("include=lines", "consignment_structure=array", "page=x", "since=1"):
        assert check_request(spec, {**ok, "query": query}, prefix), query
    bad_lines = [{**line, "quantity": "2"}, {**line, "stock": 3}]
    for bad in bad_lines:
        shipping = [{"id": 1, "line_items": [bad]}]
        answer = [{**order, "consignments": {**order["consignments"], "shipping": shipping}}]
        assert check_answer(spec, {**ok, "answer": answer}, prefix, {}), bad
    assert check_answer(spec, {**ok, "answer": [{**order, "status_id": "11"}]}, prefix, {})
    assert check_answer(spec, {**ok, "answer": {"data": [order]}}, prefix, {})
    settings = {**ok, "path": prefix + "/v3/settings/inventory", "query": "",
                "answer": {"data": {"update_stock_behavior": "order_placed"}, "meta": {}}}
    assert check_answer(spec, settings, prefix, {}) == []
    assert check_answer(spec, {**settings, "answer": {"data": {
        "update_stock_behavior": "when_paid"}, "meta": {}}}, prefix, {})
