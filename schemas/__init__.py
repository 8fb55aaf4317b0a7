"""The contracts the outside world reads: JSON Schema, Table Schema and OpenAPI files.

Installed as ``invsync.contracts``; :func:`load` returns one by file name.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def load(name: str) -> Any:
    """The parsed contract file ``name`` (for example ``"report.schema.json"``)."""
    return json.loads(resources.files(__name__).joinpath(name).read_text(encoding="utf-8"))
