"""Tests of the sandbox store: in-process through httpx.ASGITransport, and as a real process."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest
from click.testing import CliRunner
from conftest import budget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invsync.sandbox.server import (
    MAX_QUANTITY,
    DroppedConnection,
    Location,
    SandboxConfig,
    _item_ok,
    _item_shape_errors,
    create_app,
    load_catalog,
    load_locations,
)
from invsync.surfaces.cli_sandbox import sandbox as sandbox_command

REPO = Path(__file__).resolve().parents[1]
TOKEN = "sandbox-token"
AUTH = {"X-Auth-Token": TOKEN}
BASE = "/stores/sandbox/v3"
ABSOLUTE = f"{BASE}/inventory/adjustments/absolute"
RELATIVE = f"{BASE}/inventory/adjustments/relative"
ITEMS = f"{BASE}/inventory/items"
RATE_HEADERS = (
    "x-rate-limit-time-window-ms",
    "x-rate-limit-time-reset-ms",
    "x-rate-limit-requests-quota",
    "x-rate-limit-requests-left",
)

CATALOG = """sku,product_id,variant_id,tracking
SHIRT-S,111,201,variant
SHIRT-M,111,202,variant
SHIRT-L,111,203,variant
MUG,120,106,product
POSTER,130,301,none
"""


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.csv"
    rows = "".join(f"ITEM-{n:04d},{1000 + n},{5000 + n},product\n" for n in range(2100))
    path.write_text(CATALOG + rows)
    return path


class AppClient:
    """A synchronous httpx client for an ASGI app served on an event loop in a helper thread."""

    def __init__(self, app: Any) -> None:
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        transport = httpx.ASGITransport(app=app)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://sandbox")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._portal.call(partial(self._client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def __enter__(self) -> AppClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._portal.call(self._client.aclose)
        self._portal_cm.__exit__(None, None, None)


def make_client(catalog_path: Path, **options: Any) -> AppClient:
    return AppClient(create_app(SandboxConfig(catalog_path=catalog_path, **options)))


@pytest.fixture
def client(catalog_path: Path) -> Iterator[AppClient]:
    with make_client(catalog_path) as c:
        yield c


def put(client: AppClient, items: list[Any], **extra: Any) -> httpx.Response:
    return client.put(ABSOLUTE, json={"items": items, **extra}, headers=AUTH)


def levels(client: AppClient) -> dict[tuple[int, str], int]:
    return {
        (row["location_id"], row["sku"]): row["quantity"]
        for row in client.get("/_sandbox/levels").json()
    }


def onhand(client: AppClient, sku: str, location_id: int = 1) -> int:
    r = client.get(f"{BASE}/inventory/locations/{location_id}/items?sku:in={sku}", headers=AUTH)
    assert r.status_code == 200
    [entry] = r.json()["data"]
    return int(entry["total_inventory_onhand"])


# ---- catalog and config --------------------------------------------------------------------


def test_load_catalog_indexes_and_refuses_bad_files(tmp_path: Path, catalog_path: Path) -> None:
    cat = load_catalog(catalog_path)
    assert cat.items[cat.by_sku["SHIRT-M"]].variant_id == 202
    assert [cat.items[i].sku for i in cat.by_product[111]] == ["SHIRT-S", "SHIRT-M", "SHIRT-L"]
    assert "POSTER" in cat.by_sku and cat.by_sku["POSTER"] not in cat.tracked_indexes()

    bad = tmp_path / "bad.csv"
    bad.write_text("sku,product_id\nA,1\n")
    with pytest.raises(ValueError, match="missing column"):
        load_catalog(bad)
    bad.write_text("sku,product_id,variant_id,tracking\nA,1,10,product\nA,2,20,product\n")
    with pytest.raises(ValueError, match="duplicate sku"):
        load_catalog(bad)
    bad.write_text("sku,product_id,variant_id,tracking\nA,1,10,product\nB,1,11,product\n")
    with pytest.raises(ValueError, match="more than one row"):
        load_catalog(bad)


def test_load_locations(tmp_path: Path) -> None:
    path = tmp_path / "locations.csv"
    path.write_text("id,code,label,enabled\n1,MAIN,Main,true\n7,POPUP,Pop-up,false\n")
    assert load_locations(path) == [
        Location(1, "MAIN", "Main", True),
        Location(7, "POPUP", "Pop-up", False),
    ]


# ---- auth and routing ----------------------------------------------------------------------


def test_auth_store_hash_and_scopes(catalog_path: Path) -> None:
    with make_client(catalog_path, read_only_token="ro-token") as c:
        r = c.get(ITEMS)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert all(h in r.headers for h in RATE_HEADERS)
        assert c.get(ITEMS, headers={"X-Auth-Token": "wrong"}).status_code == 401
        assert c.get("/stores/other/v3/inventory/items", headers=AUTH).status_code == 404
        assert c.get(f"{BASE}/catalog/products", headers=AUTH).status_code == 404
        assert c.get(ABSOLUTE, headers=AUTH).status_code == 405

        ro = {"X-Auth-Token": "ro-token"}
        assert c.get(ITEMS, headers=ro).status_code == 200
        item = {"location_id": 1, "sku": "MUG", "quantity": 1}
        r = c.put(ABSOLUTE, json={"items": [item]}, headers=ro)
        assert r.status_code == 403
        assert c.post(RELATIVE, json={"items": [item]}, headers=ro).status_code == 403
        assert levels(c) == {}


def test_content_type_size_and_json_checks(client: AppClient) -> None:
    body = b'{"items": [{"location_id": 1, "sku": "MUG", "quantity": 1}]}'
    r = client.put(ABSOLUTE, content=body, headers={**AUTH, "Content-Type": "text/csv"})
    assert r.status_code == 415
    r = client.put(
        ABSOLUTE,
        content=b"x" * (5 * 1024 * 1024),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    r = client.put(
        ABSOLUTE, content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    r = client.put(ABSOLUTE, json={"things": []}, headers=AUTH)
    assert r.status_code == 422 and r.json()["errors"] == {
        "items": "items is required and must be an array."
    }
    r = client.put(ABSOLUTE, json={"items": [], "reason": "x"}, headers=AUTH)
    assert r.status_code == 422
    assert levels(client) == {}


# ---- successful writes and reads ------------------------------------------------------------


def test_put_applies_and_both_reads_show_it(client: AppClient) -> None:
    r = put(
        client,
        [
            {"location_id": 1, "sku": "SHIRT-S", "quantity": 12},
            {"location_id": 1, "variant_id": 202, "quantity": 0},
            {"location_id": 2, "product_id": 120, "quantity": 5},
            {"location_id": 1, "sku": "MUG", "quantity": 7},
        ],
        reason="Nightly warehouse sync",
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    tid = r.json()["transaction_id"]
    assert uuid.UUID(tid).version == 4
    second = put(client, [{"location_id": 1, "sku": "SHIRT-L", "quantity": 1}]).json()
    assert second["transaction_id"] != tid

    assert levels(client) == {
        (1, "SHIRT-S"): 12,
        (1, "SHIRT-M"): 0,
        (1, "SHIRT-L"): 1,
        (1, "MUG"): 7,
        (2, "MUG"): 5,
    }

    r = client.get(f"{ITEMS}?sku:in=MUG,SHIRT-S", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    by_sku = {d["identity"]["sku"]: d for d in body["data"]}
    assert by_sku["MUG"]["identity"] == {
        "sku": "MUG",
        "variant_id": 106,
        "product_id": 120,
        "sku_id": None,
    }
    assert by_sku["SHIRT-S"]["identity"] == {
        "sku": "SHIRT-S",
        "variant_id": 201,
        "product_id": 111,
        "sku_id": None,
    }
    mug_locations = {loc["location_id"]: loc for loc in by_sku["MUG"]["locations"]}
    assert set(mug_locations) == {1, 2, 3}
    assert mug_locations[2] == {
        "location_id": 2,
        "location_code": "WH-EAST",
        "location_name": "East warehouse",
        "available_to_sell": 5,
        "total_inventory_onhand": 5,
        "location_enabled": True,
        "settings": {
            "safety_stock": 0,
            "is_in_stock": True,
            "warning_level": 0,
            "bin_picking_number": "",
        },
    }
    assert mug_locations[3]["location_enabled"] is False
    assert mug_locations[3]["total_inventory_onhand"] == 0
    assert mug_locations[3]["settings"]["is_in_stock"] is False
    assert body["meta"]["pagination"]["total"] == 2

    r = client.get(f"{ITEMS}?product_id:in=111&location_code:in=BC-LOCATION-1", headers=AUTH)
    data = r.json()["data"]
    assert [d["identity"]["sku"] for d in data] == ["SHIRT-S", "SHIRT-M", "SHIRT-L"]
    assert [[loc["total_inventory_onhand"] for loc in d["locations"]] for d in data] == [
        [12],
        [0],
        [1],
    ]

    r = client.get(f"{BASE}/inventory/locations/2/items?variant_id:in=106,201", headers=AUTH)
    assert r.json()["data"] == [
        {
            "identity": {"sku": "SHIRT-S", "variant_id": 201, "product_id": 111},
            "available_to_sell": 0,
            "total_inventory_onhand": 0,
            "settings": {
                "safety_stock": 0,
                "is_in_stock": False,
                "warning_level": 0,
                "bin_picking_number": "",
            },
        },
        {
            "identity": {"sku": "MUG", "variant_id": 106, "product_id": 120},
            "available_to_sell": 5,
            "total_inventory_onhand": 5,
            "settings": {
                "safety_stock": 0,
                "is_in_stock": True,
                "warning_level": 0,
                "bin_picking_number": "",
            },
        },
    ]

    log = client.get("/_sandbox/requests").json()
    assert log[0]["method"] == "PUT" and log[0]["status"] == 200 and log[0]["applied"] is True
    assert log[0]["transaction_id"] == tid
    assert log[0]["items"][2] == {"location_id": 2, "product_id": 120, "quantity": 5}
    assert log[0]["finished"] >= log[0]["started"]
    assert (
        log[2]["method"] == "GET"
        and log[2]["items"] == []
        and log[2]["query"] == "sku:in=MUG,SHIRT-S"
    )


def test_items_filters_by_variant_and_product_id_give_each_items_identity(
        client: AppClient) -> None:
    """What identity resolution relies on: ``variant_id:in`` / ``product_id:in`` on
    ``GET /inventory/items`` (URL-encoded or not), combined with AND, unknown ids left out."""

    def identities(query: str) -> list[tuple[str, int, int]]:
        r = client.get(f"{ITEMS}?{query}", headers=AUTH)
        assert r.status_code == 200, r.text
        return [(d["identity"]["sku"], d["identity"]["variant_id"], d["identity"]["product_id"])
                for d in r.json()["data"]]

    assert identities("variant_id:in=202,106,999999") == [("SHIRT-M", 202, 111),
                                                         ("MUG", 106, 120)]
    assert identities("variant_id%3Ain=203") == [("SHIRT-L", 203, 111)]
    # A product tracked by variant lists one item per variant; one tracked by product, one.
    assert identities("product_id:in=111,120") == [("SHIRT-S", 201, 111), ("SHIRT-M", 202, 111),
                                                   ("SHIRT-L", 203, 111), ("MUG", 106, 120)]
    assert identities("product_id:in=111&variant_id:in=202,106") == [("SHIRT-M", 202, 111)]
    assert identities("sku:in=MUG&variant_id:in=106&product_id:in=120") == [("MUG", 106, 120)]
    assert identities("variant_id:in=999999") == []
    # Untracked items have no inventory item.
    assert identities("product_id:in=130") == []
    r = client.get(f"{ITEMS}?product_id:in=111&limit=2&page=2", headers=AUTH)
    assert [d["identity"]["sku"] for d in r.json()["data"]] == ["SHIRT-L"]
    assert r.json()["meta"]["pagination"]["total"] == 3
    assert client.get(f"{ITEMS}?product_id:in=1,x", headers=AUTH).status_code == 422


def test_untracked_items_are_not_listed_and_pagination_walks_everything(client: AppClient) -> None:
    put(client, [{"location_id": 1, "sku": "ITEM-2099", "quantity": 42}])
    seen: list[str] = []
    page = 1
    while True:
        r = client.get(f"{ITEMS}?limit=1000&page={page}&location_id:in=1", headers=AUTH)
        meta = r.json()["meta"]["pagination"]
        seen += [d["identity"]["sku"] for d in r.json()["data"]]
        assert meta["per_page"] == 1000 and meta["current_page"] == page
        assert meta["total"] == 2104 and meta["total_pages"] == 3
        assert meta["links"]["current"] == f"?page={page}&limit=1000"
        assert ("previous" in meta["links"]) == (page > 1)  # absent, never null
        if "next" not in meta["links"]:
            break
        assert meta["links"]["next"] == f"?page={page + 1}&limit=1000"
        page += 1
    assert page == 3 and meta["count"] == 104 and meta["links"]["previous"] == "?page=2&limit=1000"
    assert len(seen) == len(set(seen)) == 2104
    assert "POSTER" not in seen

    r = client.get(f"{BASE}/inventory/locations/1/items?limit=2&page=1053", headers=AUTH)
    body = r.json()
    assert body["meta"]["pagination"]["total_pages"] == 1052
    assert body["data"] == []
    r = client.get(f"{BASE}/inventory/locations/1/items?limit=4&page=526", headers=AUTH)
    assert [(d["identity"]["sku"], d["total_inventory_onhand"]) for d in r.json()["data"]] == [
        ("ITEM-2096", 0),
        ("ITEM-2097", 0),
        ("ITEM-2098", 0),
        ("ITEM-2099", 42),
    ]
    r = client.get(ITEMS, headers=AUTH)
    assert r.json()["meta"]["pagination"]["per_page"] == 50 and len(r.json()["data"]) == 50
    assert client.get(f"{ITEMS}?limit=1001", headers=AUTH).status_code == 422
    assert client.get(f"{ITEMS}?page=0", headers=AUTH).status_code == 422
    assert client.get(f"{ITEMS}?variant_id:in=abc", headers=AUTH).status_code == 422
    assert client.get(f"{BASE}/inventory/locations/9/items", headers=AUTH).status_code == 404


def test_locations_listing(client: AppClient) -> None:
    r = client.get(f"{BASE}/inventory/locations", headers=AUTH)
    assert r.status_code == 200
    data = r.json()["data"]
    assert [(d["id"], d["code"], d["label"], d["enabled"], d["type_id"]) for d in data] == [
        (1, "BC-LOCATION-1", "Default location", True, "PHYSICAL"),
        (2, "WH-EAST", "East warehouse", True, "PHYSICAL"),
        (3, "OLD-SHOP", "Closed shop", False, "PHYSICAL"),
    ]
    assert r.json()["meta"]["pagination"]["total"] == 3

    def ids(query: str) -> list[int]:
        return [
            d["id"]
            for d in client.get(f"{BASE}/inventory/locations?{query}", headers=AUTH).json()["data"]
        ]

    assert ids("is_active=true") == [1, 2]
    assert ids("is_active=false") == [3]
    assert ids("location_id:in=3,1") == [1, 3]
    assert ids("location_code:in=WH-EAST") == [2]
    assert ids("limit=1&page=2") == [2]


def test_duplicates_last_wins_and_are_logged(client: AppClient) -> None:
    r = put(
        client,
        [
            {"location_id": 1, "sku": "MUG", "quantity": 1},
            {"location_id": 1, "product_id": 120, "quantity": 2},
            {"location_id": 2, "sku": "MUG", "quantity": 3},
        ],
    )
    assert r.status_code == 200
    assert levels(client) == {(1, "MUG"): 2, (2, "MUG"): 3}
    [entry] = client.get("/_sandbox/requests").json()
    assert entry["duplicates"] == 1


def test_relative_adjustment(client: AppClient) -> None:
    put(client, [{"location_id": 1, "sku": "MUG", "quantity": 5}])
    r = client.post(
        RELATIVE, json={"items": [{"location_id": 1, "sku": "MUG", "quantity": 3}]}, headers=AUTH
    )
    assert r.status_code == 200 and "transaction_id" in r.json()
    assert onhand(client, "MUG") == 8
    r = client.post(
        RELATIVE,
        json={
            "items": [
                {"location_id": 1, "sku": "SHIRT-S", "quantity": 4},
                {"location_id": 1, "sku": "MUG", "quantity": -9},
            ]
        },
        headers=AUTH,
    )
    assert r.status_code == 422
    assert "MUG" in r.json()["title"]
    assert onhand(client, "MUG") == 8 and onhand(client, "SHIRT-S") == 0
    assert client.put(RELATIVE, json={"items": []}, headers=AUTH).status_code == 405


# ---- whole-batch 422s ------------------------------------------------------------------------

GOOD = {"location_id": 1, "sku": "MUG", "quantity": 9}


@pytest.mark.parametrize(
    ("bad_items", "title", "errors"),
    [
        ([{"location_id": 1, "quantity": 1}], "Payload contains invalid fields", ["items.1"]),
        (
            [{"location_id": 1, "sku": "MUG", "variant_id": 106, "quantity": 1}],
            "Payload contains invalid fields",
            ["items.1"],
        ),
        (
            [{"location_id": 1, "sku": "MUG", "quantity": 1, "bin": "A"}],
            "Payload contains invalid fields",
            ["items.1.bin"],
        ),
        (
            [{"location_id": 1, "sku": "MUG", "quantity": 1.5}],
            "Payload contains invalid fields",
            ["items.1.quantity"],
        ),
        (
            [{"location_id": 1, "sku": "MUG", "quantity": "3"}],
            "Payload contains invalid fields",
            ["items.1.quantity"],
        ),
        (
            [{"location_id": 1, "sku": "MUG", "quantity": True}],
            "Payload contains invalid fields",
            ["items.1.quantity"],
        ),
        (
            [{"location_id": "1", "sku": "MUG", "quantity": 1}],
            "Payload contains invalid fields",
            ["items.1.location_id"],
        ),
        (
            [{"sku": "MUG", "quantity": 1}],
            "Payload contains invalid fields",
            ["items.1.location_id"],
        ),
        (
            [{"location_id": 1, "variant_id": "106", "quantity": 1}],
            "Payload contains invalid fields",
            ["items.1.variant_id"],
        ),
        (
            [{"location_id": 1, "sku": "MUG", "quantity": -1}],
            "Payload contains invalid fields",
            ["items.1.quantity"],
        ),
        (
            [{"location_id": 1, "sku": "MUG", "quantity": MAX_QUANTITY + 1}],
            "Payload contains invalid fields",
            ["items.1.quantity"],
        ),
        (["MUG"], "Payload contains invalid fields", ["items.1"]),
        (
            [
                {"location_id": 9, "sku": "MUG", "quantity": 1},
                {"location_id": 8, "sku": "MUG", "quantity": 1},
            ],
            "Location not found, identities: [9,8]",
            [],
        ),
        (
            [{"location_id": 3, "sku": "MUG", "quantity": 1}],
            "Location is not active, identities: [3]",
            [],
        ),
        ([{"location_id": 1, "sku": "NOPE", "quantity": 1}], "[Item with sku NOPE not found]", []),
        (
            [{"location_id": 1, "variant_id": 999, "quantity": 1}],
            "[Item with variant_id 999 not found]",
            [],
        ),
        (
            [{"location_id": 1, "product_id": 999, "quantity": 1}],
            "[Item with product_id 999 not found]",
            [],
        ),
        (
            [{"location_id": 1, "variant_id": 106, "quantity": 1}],
            "[Item with variant_id 106 is tracked by product, please update stock by product id]",
            [],
        ),
        (
            [{"location_id": 1, "product_id": 111, "quantity": 1}],
            "[Item with product_id 111 is tracked by variant, "
            "please update stock by variant id or sku]",
            [],
        ),
        (
            [{"location_id": 1, "sku": "POSTER", "quantity": 1}],
            "[Item with sku POSTER does not have inventory tracking enabled]",
            [],
        ),
        (
            [
                {"location_id": 1, "sku": "SHIRT-S", "quantity": MAX_QUANTITY},
                {"location_id": 1, "sku": "SHIRT-M", "quantity": 1},
            ],
            "[Total stock of product with product_id 111 at location 1 "
            f"would exceed {MAX_QUANTITY}]",
            [],
        ),
    ],
)
def test_422_rejects_the_whole_batch(
    client: AppClient, bad_items: list[Any], title: str, errors: list[str]
) -> None:
    r = put(client, [GOOD, *bad_items])
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 422
    assert body["title"] == title
    assert (
        body["type"]
        == "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes"
    )
    assert set(body["errors"]) == set(errors)
    assert levels(client) == {}
    [entry] = client.get("/_sandbox/requests").json()
    assert entry["status"] == 422 and entry["applied"] is False and entry["transaction_id"] is None


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([MAX_QUANTITY, MAX_QUANTITY + 1, -MAX_QUANTITY, -MAX_QUANTITY - 1]),
    st.floats(0, 2),
    st.text(max_size=2),
    st.lists(st.integers(), max_size=1),
)
_FIELDS = st.sampled_from(["location_id", "quantity", "sku", "variant_id", "product_id", "x"])


@settings(max_examples=budget(500), suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(_FIELDS, _VALUES), st.booleans())
def test_item_fast_path_agrees_with_full_check(item: dict[str, Any], relative: bool) -> None:
    assert _item_ok(item, relative) == (not _item_shape_errors(item, 0, relative))


def test_2000_item_cap(client: AppClient) -> None:
    items = [{"location_id": 1, "sku": f"ITEM-{n:04d}", "quantity": n} for n in range(2001)]
    r = put(client, items)
    assert r.status_code == 422 and "2000" in r.json()["title"]
    assert levels(client) == {}
    r = put(client, items[:2000])
    assert r.status_code == 200
    assert len(levels(client)) == 2000
    assert client.get("/_sandbox/stats").json()["items_applied"] == 2000


def test_a_2000_item_put_is_one_request_applied_whole(client: AppClient) -> None:
    # How fast it is belongs to `make bench`; here: one request, every item applied.
    items = [{"location_id": 2, "sku": f"ITEM-{n:04d}", "quantity": n} for n in range(2000)]
    assert put(client, items).status_code == 200
    [entry] = client.get("/_sandbox/requests").json()
    assert entry["status"] == 200 and len(entry["items"]) == 2000
    assert levels(client) == {(2, f"ITEM-{n:04d}"): n for n in range(2000)}


def test_product_total_limit_counts_levels_already_stored(client: AppClient) -> None:
    assert (
        put(
            client, [{"location_id": 1, "sku": "SHIRT-S", "quantity": MAX_QUANTITY - 5}]
        ).status_code
        == 200
    )
    r = put(client, [{"location_id": 1, "sku": "SHIRT-M", "quantity": 6}])
    assert r.status_code == 422 and "product_id 111" in r.json()["title"]
    # Other locations have their own totals; lowering one variant makes room for another.
    assert put(client, [{"location_id": 2, "sku": "SHIRT-M", "quantity": 6}]).status_code == 200
    r = put(
        client,
        [
            {"location_id": 1, "sku": "SHIRT-S", "quantity": 0},
            {"location_id": 1, "sku": "SHIRT-M", "quantity": MAX_QUANTITY},
        ],
    )
    assert r.status_code == 200
    assert levels(client)[(1, "SHIRT-M")] == MAX_QUANTITY


def test_title_names_only_the_first_offender(client: AppClient) -> None:
    r = put(
        client,
        [
            GOOD,
            {"location_id": 1, "sku": "FIRST-BAD", "quantity": 1},
            {"location_id": 1, "sku": "SECOND-BAD", "quantity": 1},
        ],
    )
    assert r.json()["title"] == "[Item with sku FIRST-BAD not found]"
    r = put(client, [GOOD, {"location_id": 1, "sku": "MUG"}, {"location_id": 1, "quantity": 1}])
    assert list(r.json()["errors"]) == ["items.1.quantity"]


def test_vague_422_names_nothing(catalog_path: Path) -> None:
    with make_client(catalog_path, vague_422=True) as c:
        for bad in (
            {"location_id": 1, "sku": "NOPE", "quantity": 1},
            {"location_id": 1, "variant_id": 106, "quantity": 1},
            {"location_id": 9, "sku": "MUG", "quantity": 1},
            {"location_id": 1, "sku": "MUG", "quantity": -1},
        ):
            body = put(c, [GOOD, bad]).json()
            assert body["status"] == 422
            assert (
                "NOPE" not in body["title"]
                and "106" not in body["title"]
                and "9" not in body["title"]
            )
            assert body["errors"] == {}
        assert levels(c) == {}


# ---- rate limit and faults -----------------------------------------------------------------


def test_quota_429_then_recovery_next_window(catalog_path: Path) -> None:
    with make_client(catalog_path, quota=3, window_ms=400) as c:
        # Start at the beginning of a fresh window so the burst below fits in one.
        first = c.get(ITEMS, headers=AUTH)
        time.sleep(int(first.headers["x-rate-limit-time-reset-ms"]) / 1000 + 0.01)
        lefts = []
        for _ in range(3):
            r = put(c, [GOOD])
            assert r.status_code == 200
            lefts.append(int(r.headers["x-rate-limit-requests-left"]))
        assert lefts == [2, 1, 0]
        assert c.get("/_sandbox/stats").status_code == 200  # introspection is not counted
        r = put(c, [{"location_id": 1, "sku": "MUG", "quantity": 1}])
        assert r.status_code == 429
        assert r.headers["x-rate-limit-requests-quota"] == "3"
        assert r.headers["x-rate-limit-requests-left"] == "0"
        assert r.headers["x-rate-limit-time-window-ms"] == "400"
        reset_ms = int(r.headers["x-rate-limit-time-reset-ms"])
        assert 0 < reset_ms <= 400
        assert r.headers["x-retry-after"] == "1"
        assert levels(c) == {(1, "MUG"): 9}
        time.sleep(reset_ms / 1000 + 0.01)
        r = put(c, [{"location_id": 1, "sku": "MUG", "quantity": 2}])
        assert r.status_code == 200
        assert r.headers["x-rate-limit-requests-left"] == "2"
        assert levels(c) == {(1, "MUG"): 2}


def test_unlimited_quota_still_sends_headers(client: AppClient) -> None:
    r = client.get(ITEMS, headers=AUTH)
    assert r.headers["x-rate-limit-requests-quota"] == "1000000"
    assert r.headers["x-rate-limit-requests-left"] == "999999"
    assert r.headers["x-rate-limit-time-window-ms"] == "30000"


def test_bare_429_has_no_rate_headers_and_applies_nothing(catalog_path: Path) -> None:
    with make_client(catalog_path, bare_429_rate=1.0) as c:
        r = put(c, [GOOD])
        assert r.status_code == 429
        assert not any(h in r.headers for h in (*RATE_HEADERS, "x-retry-after"))
        assert c.get(ITEMS, headers=AUTH).status_code == 429
        assert levels(c) == {}


def test_5xx_faults_apply_nothing_and_are_seeded(catalog_path: Path) -> None:
    with make_client(catalog_path, error_rate=1.0, seed=1) as c:
        statuses = {put(c, [GOOD]).status_code for _ in range(30)}
        assert statuses == {500, 502, 503}
        assert levels(c) == {}
        assert c.get("/_sandbox/stats").json()["items_applied"] == 0

    def run(seed: int) -> list[int]:
        with make_client(catalog_path, error_rate=0.5, seed=seed) as c:
            return [put(c, [GOOD]).status_code for _ in range(20)]

    first = run(7)
    assert first == run(7)
    assert 200 in first and any(s >= 500 for s in first)


def test_dropped_put_is_applied_in_process(catalog_path: Path) -> None:
    with make_client(catalog_path, drop_rate=1.0) as c:
        with pytest.raises(DroppedConnection):
            put(c, [GOOD])
        assert levels(c) == {(1, "MUG"): 9}
        [entry] = c.get("/_sandbox/requests").json()
        assert entry["applied"] is True and entry["dropped"] is True and entry["status"] == 0
        assert entry["transaction_id"]
        assert c.get(ITEMS, headers=AUTH).status_code == 200  # reads are never dropped


def test_apply_delay_hides_writes_from_reads_for_a_while(catalog_path: Path) -> None:
    with make_client(catalog_path, apply_delay_ms=200) as c:
        assert put(c, [GOOD]).status_code == 200
        assert levels(c) == {(1, "MUG"): 9}
        assert onhand(c, "MUG") == 0
        time.sleep(0.25)
        assert onhand(c, "MUG") == 9


def test_latency_overlaps_concurrent_requests(catalog_path: Path) -> None:
    app = create_app(SandboxConfig(catalog_path=catalog_path, latency_ms=200))

    async def main() -> tuple[list[int], float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as ac:
            start = time.monotonic()
            replies = await asyncio.gather(
                *(ac.put(ABSOLUTE, json={"items": [GOOD]}, headers=AUTH) for _ in range(8)),
                ac.get(ITEMS, headers=AUTH),
            )
            return [r.status_code for r in replies], time.monotonic() - start

    statuses, elapsed = asyncio.run(main())
    assert statuses == [200] * 9
    assert elapsed >= 0.2  # the latency was applied (a floor: no load makes it shorter)
    # ... to the nine requests at once, not one after another: all nine were in flight
    # together (max_in_flight below), which no wall-clock bound can show reliably.
    with AppClient(app) as c:
        stats = c.get("/_sandbox/stats").json()
        assert stats["requests"] == 9
        assert stats["max_in_flight"] == 9
        assert stats["item_overlaps"] == 7  # every PUT after the first found MUG@1 in flight
        assert stats["items_applied"] == 8
        assert stats["by_status"] == {"200": 9}

        c.post("/_sandbox/reset")
        assert c.get("/_sandbox/stats").json() == {
            "requests": 0,
            "by_status": {},
            "items_applied": 0,
            "max_in_flight": 0,
            "item_overlaps": 0,
        }
        assert c.get("/_sandbox/requests").json() == []
        assert levels(c) == {(1, "MUG"): 9}
        c.post("/_sandbox/reset?levels=1")
        assert levels(c) == {}


# ---- CLI and real process --------------------------------------------------------------------


def test_cli_refuses_a_missing_catalog(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        sandbox_command, ["--catalog", str(tmp_path / "nope.csv"), "--port", "0"]
    )
    assert result.exit_code == 1
    assert "nope.csv" in result.output


def start_sandbox(
    catalog: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable,
        "-c",
        "from invsync.surfaces.cli_sandbox import sandbox; sandbox()",
        "--port",
        "0",
        "--catalog",
        str(catalog),
        *args,
    ]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    for name in ("INVSYNC_SANDBOX_TOKEN", "BIGCOMMERCE_ACCESS_TOKEN", "BIGCOMMERCE_STORE_HASH"):
        if env is None or name not in env:
            full_env.pop(name, None)
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    if not ready:
        stop(proc)
        pytest.fail("sandbox did not start")
    line = proc.stdout.readline().strip()
    prefix = "invsync sandbox listening on "
    if not line.startswith(prefix):
        stop(proc)
        pytest.fail(f"unexpected first line {line!r}")
    url = line[len(prefix) :].split(" ")[0]
    return proc, url


def stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture
def small_catalog(tmp_path: Path) -> Path:
    path = tmp_path / "small.csv"
    path.write_text(CATALOG)
    return path


def test_real_process_serves_drops_and_stops_cleanly(small_catalog: Path) -> None:
    proc, url = start_sandbox(
        small_catalog,
        "--store-hash",
        "abc123",
        "--drop-rate",
        "0.5",
        "--seed",
        "3",
        env={"INVSYNC_SANDBOX_TOKEN": "s3cret-token", "BIGCOMMERCE_ACCESS_TOKEN": "other"},
    )
    try:
        assert url.startswith("http://127.0.0.1:")
        headers = {"X-Auth-Token": "s3cret-token"}
        path = "/stores/abc123/v3/inventory/adjustments/absolute"
        with httpx.Client(base_url=url, trust_env=False, timeout=5) as http:
            assert (
                http.get(
                    "/stores/abc123/v3/inventory/items", headers={"X-Auth-Token": "other"}
                ).status_code
                == 401
            )
            outcomes: list[int | str] = []
            for n in range(12):
                item = {"location_id": 1, "sku": "MUG", "quantity": n}
                try:
                    r = http.put(path, json={"items": [item]}, headers=headers)
                    outcomes.append(r.status_code)
                except httpx.RemoteProtocolError:
                    outcomes.append("dropped")
                # Applied whether answered or not.
                assert http.get("/_sandbox/levels").json()[0]["quantity"] == n
            assert 200 in outcomes and "dropped" in outcomes
            log = http.get("/_sandbox/requests").json()
            puts = [e for e in log if e["method"] == "PUT"]
            assert [e["dropped"] for e in puts] == [o == "dropped" for o in outcomes]
            assert all(e["applied"] for e in puts)
            # A dropped connection does not disturb the next request.
            r = http.get("/stores/abc123/v3/inventory/items?sku:in=MUG", headers=headers)
            assert r.json()["data"][0]["locations"][0]["total_inventory_onhand"] == 11
    finally:
        code = stop(proc)
    assert code == 0
    assert proc.stderr is not None and proc.stdout is not None
    output = proc.stdout.read() + proc.stderr.read()
    assert "s3cret" not in output
    assert "Traceback" not in output and "ASGI" not in output


def test_real_process_handles_concurrent_load(small_catalog: Path) -> None:
    proc, url = start_sandbox(small_catalog, "--latency-ms", "50")
    try:

        def one(n: int) -> int:
            with httpx.Client(base_url=url, trust_env=False, timeout=5) as http:
                item = {"location_id": 1 + n % 2, "sku": "SHIRT-M", "quantity": n}
                return http.put(ABSOLUTE, json={"items": [item]}, headers=AUTH).status_code

        # Concurrency is proven by the sandbox's own count of requests in flight at once,
        # not by a wall-clock bound (which a loaded machine breaks).
        with ThreadPoolExecutor(max_workers=10) as pool:
            statuses = list(pool.map(one, range(60)))
        assert statuses == [200] * 60
        stats = httpx.get(f"{url}/_sandbox/stats", trust_env=False).json()
        assert stats["requests"] == 60 and stats["max_in_flight"] >= 5
    finally:
        assert stop(proc) == 0


def test_admin_faults_change_at_run_time_and_bad_settings_change_nothing(
    catalog_path: Path,
) -> None:
    with make_client(catalog_path, seed=3) as c:
        assert c.get("/_sandbox/faults").json()["error_rate"] == 0.0
        assert c.post("/_sandbox/faults", json={"error_rate": 1.0}).status_code == 200
        assert put(c, [{"location_id": 1, "sku": "MUG", "quantity": 1}]).status_code in (
            500, 502, 503)
        for bad in ({"error_rate": 2}, {"nope": 1}, {"latency_ms": -1}, {"vague_422": 1}, []):
            assert c.post("/_sandbox/faults", json=bad).status_code == 400, bad
        assert c.get("/_sandbox/faults").json()["error_rate"] == 1.0
        c.post("/_sandbox/faults", json={"error_rate": 0})
        assert put(c, [{"location_id": 1, "sku": "MUG", "quantity": 1}]).status_code == 200


def test_admin_levels_are_a_manual_edit_seen_by_reads_at_once(catalog_path: Path) -> None:
    with make_client(catalog_path, apply_delay_ms=60_000) as c:
        r = c.post("/_sandbox/levels", json=[{"location_id": 2, "sku": "MUG", "quantity": 7},
                                             {"location_id": 1, "variant_id": 201, "quantity": 3}])
        assert r.status_code == 200 and len(r.json()) == 2
        data = c.get(f"{ITEMS}?sku:in=MUG,SHIRT-S&location_id:in=1,2", headers=AUTH).json()
        seen = {(d["identity"]["sku"], loc["location_id"]): loc["total_inventory_onhand"]
                for d in data["data"] for loc in d["locations"]}
        assert seen == {("MUG", 1): 0, ("MUG", 2): 7, ("SHIRT-S", 1): 3, ("SHIRT-S", 2): 0}
        for bad in ({"location_id": 9, "sku": "MUG", "quantity": 1},
                    {"location_id": 1, "sku": "NOPE", "quantity": 1},
                    {"location_id": 1, "sku": "MUG", "quantity": -1}):
            assert c.post("/_sandbox/levels", json=bad).status_code == 400, bad
        assert c.get("/_sandbox/stats").json()["requests"] == 1  # admin calls are not logged


# ---- a full reset: one process serves many tests in turn -------------------------------------


def _dirty(c: AppClient) -> None:
    """Change everything a test can change in a store: levels (a PUT and a manual edit),
    fault settings, orders, the request log."""
    assert put(c, [GOOD, {"location_id": 2, "sku": "SHIRT-S", "quantity": 4}]).status_code == 200
    assert c.post("/_sandbox/levels", json=[{"location_id": 1, "sku": "SHIRT-M",
                                              "quantity": 6}]).status_code == 200
    assert c.post("/_sandbox/orders", json={"items": [{"sku": "MUG", "quantity": 2}]}
                  ).status_code == 200
    assert c.post("/_sandbox/faults", json={"error_rate": 0.0, "latency_ms": 5, "drop_rate": 0.5,
                                            "vague_422": True, "apply_delay_ms": 60_000,
                                            "bare_429_rate": 0.25}).status_code == 200


def test_full_reset_puts_the_store_back_as_it_started(catalog_path: Path) -> None:
    with make_client(catalog_path, error_rate=0.5, seed=11) as fresh:
        startup_faults = fresh.get("/_sandbox/faults").json()
        first = [put(fresh, [GOOD]).status_code for _ in range(12)]
    assert 200 in first and any(s >= 500 for s in first)  # the seed decides which fail
    with make_client(catalog_path, error_rate=0.5, seed=11) as c:
        c.post("/_sandbox/faults", json={"error_rate": 0.0})
        _dirty(c)
        assert levels(c) and c.get("/_sandbox/orders").json() and c.get("/_sandbox/requests").json()
        assert c.post("/_sandbox/reset?all=1").status_code == 200

        assert c.get("/_sandbox/faults").json() == startup_faults  # not zeros: the startup flags
        assert levels(c) == {}
        assert c.get("/_sandbox/orders").json() == []
        assert c.get("/_sandbox/requests").json() == []
        assert c.get("/_sandbox/stats").json() == {"requests": 0, "by_status": {},
                                                   "items_applied": 0, "max_in_flight": 0,
                                                   "item_overlaps": 0}
        # The random faults start again from the seed: the same answers as a new process.
        assert [put(c, [GOOD]).status_code for _ in range(12)] == first
        # No apply delay left over: a read sees a write at once.
        c.post("/_sandbox/faults", json={"error_rate": 0.0})
        assert put(c, [GOOD]).status_code == 200 and onhand(c, "MUG") == 9
        # A new order numbering: the first order after a reset is order 100 again.
        assert c.post("/_sandbox/orders", json={"items": [{"sku": "MUG", "quantity": 1}]}
                      ).json()["id"] == 100


def test_full_reset_starts_a_new_quota_window(catalog_path: Path) -> None:
    with make_client(catalog_path, quota=2, window_ms=600_000) as c:
        assert [c.get(ITEMS, headers=AUTH).status_code for _ in range(3)] == [200, 200, 429]
        c.post("/_sandbox/reset")  # the log only: the window's count stands
        assert c.get(ITEMS, headers=AUTH).status_code == 429
        c.post("/_sandbox/reset?all=1")
        r = c.get(ITEMS, headers=AUTH)
        assert r.status_code == 200 and r.headers["x-rate-limit-requests-left"] == "1"


def test_a_request_in_flight_across_a_full_reset_changes_nothing_after_it(
        catalog_path: Path) -> None:
    app = create_app(SandboxConfig(catalog_path=catalog_path))

    async def main() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as ac:
            await ac.post("/_sandbox/faults", json={"latency_ms": 400})

            async def reset_while_in_flight() -> int:
                while not any(e["status"] is None
                              for e in (await ac.get("/_sandbox/requests")).json()):
                    await asyncio.sleep(0.005)
                return (await ac.post("/_sandbox/reset?all=1")).status_code

            late, reset = await asyncio.gather(
                ac.put(ABSOLUTE, json={"items": [GOOD]}, headers=AUTH), reset_while_in_flight())
            return late.status_code, reset

    late, reset = asyncio.run(main())
    assert (late, reset) == (503, 200)  # answered as by a store that restarted under it
    with AppClient(app) as c:
        assert levels(c) == {}  # the late PUT applied nothing to the store after the reset
        assert c.get("/_sandbox/stats").json()["requests"] == 0
        assert c.get("/_sandbox/stats").json()["max_in_flight"] == 0
        assert put(c, [GOOD]).status_code == 200  # in-flight bookkeeping is not left negative
        assert c.get("/_sandbox/stats").json()["max_in_flight"] == 1
