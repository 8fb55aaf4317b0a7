"""The peer of the sync benchmarks: the script a merchant's developer would write by hand.

    python bench/naive.py stock.csv     (env BIGCOMMERCE_API_URL, _STORE_HASH, _ACCESS_TOKEN)

Read the CSV (``sku,location_id,quantity``), PUT 2000 items at a time to
``/v3/inventory/adjustments/absolute``, one request after another, with httpx and no
retries, no journal, no snapshot, no report: the least work a sync can do. Exits 1 on
the first answer that is not 2xx.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time

import httpx

BATCH = 2000


def main(path: str) -> int:
    base = os.environ.get("BIGCOMMERCE_API_URL", "https://api.bigcommerce.com").rstrip("/")
    url = f"{base}/stores/{os.environ['BIGCOMMERCE_STORE_HASH']}/v3/inventory/adjustments/absolute"
    headers = {"X-Auth-Token": os.environ["BIGCOMMERCE_ACCESS_TOKEN"],
               "Accept": "application/json", "Content-Type": "application/json"}
    with open(path, newline="", encoding="utf-8") as fh:
        items = [{"location_id": int(r["location_id"]), "sku": r["sku"],
                  "quantity": int(r["quantity"])} for r in csv.DictReader(fh)]
    started = time.perf_counter()
    with httpx.Client(headers=headers, timeout=60) as client:
        for start in range(0, len(items), BATCH):
            response = client.put(url, json={"items": items[start:start + BATCH]})
            if not response.is_success:
                print(f"HTTP {response.status_code}: {response.text[:200]}", file=sys.stderr)
                return 1
    print(json.dumps({"items": len(items), "requests": -(-len(items) // BATCH),
                      "send_s": round(time.perf_counter() - started, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
