"""A settings model's validation error as the exit-64 message that names the key.

pydantic's own text ("1 validation error for ...", a URL, the input) is not for an
operator: one line names the file, the key as the config file writes it and what is
allowed, and never repeats a secret's value.
"""

from __future__ import annotations

from typing import Any

from invsync.errors import UsageError

HIDDEN_VALUES = frozenset({"access_token", "password", "key_passphrase", "secret_access_key",
                           "session_token", "headers", "url", "urls", "report_base_url",
                           "hooks"})
"""Config keys whose values a message never repeats (tokens, passwords, webhook URLs)."""

_PHRASES = {
    "int_type": "a whole number", "int_parsing": "a whole number",
    "int_from_float": "a whole number", "float_type": "a number", "float_parsing": "a number",
    "finite_number": "a finite number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "text (in quotes)",
    "model_type": "a table", "model_attributes_type": "a table", "dict_type": "a table",
    "list_type": "a list", "dataclass_type": "a table",
}


def usage_error_from(exc: Any, model: Any, *, file: Any = None,
                     prefix: tuple[str, ...] = ()) -> UsageError:
    """The :class:`UsageError` (exit 64) for a pydantic ``ValidationError`` of ``model``:
    one line naming the file, the key as ``section.key`` and what is allowed (a field's
    ``description`` says that best), never a validation dump nor a secret's value."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    if first["type"] == "extra_forbidden":
        parent = loc[:-1]
        keys = sorted(str(e["loc"][-1]) for e in errors
                      if e["type"] == "extra_forbidden" and tuple(e["loc"][:-1]) == parent)
        message = _unknown(model, prefix, parent, keys)
    else:
        name = _dotted(prefix + loc)
        allowed = _allowed(first, _field(model, loc))
        if first["type"] == "missing":
            message = f"{_dotted(prefix + loc[:-1]) or 'top level'}: give {loc[-1]}" + \
                (f" ({allowed})" if allowed else "")
        else:
            text = allowed if first["type"] == "value_error" else f"must be {allowed}"
            if first["type"] in ("model_type", "model_attributes_type", "dict_type"):
                text += f" ([{'.'.join(map(str, prefix + loc))}])"
            elif first["type"] == "list_type" and str(loc[-1]) == "hooks":
                text += f" ([[{'.'.join(map(str, prefix + loc))}]])"
            message = f"{name} {text}" if text.startswith("must ") else f"{name}: {text}"
            shown = not HIDDEN_VALUES.intersection(map(str, prefix + loc))
            if text.startswith("must be") and shown and \
                    not isinstance(first.get("input"), dict | list):
                message += f", not {first.get('input')!r}"
    where = f"config file {file}: " if file is not None else ""
    return UsageError((where + message)[:400])


def _dotted(loc: tuple[Any, ...]) -> str:
    """``loc`` as the config names it: a named table in brackets (``[sources.w]``,
    ``[profiles.night]``), then the TOML dotted key inside it (``quantity.buffer``), list
    items counted from 1 (``notify.hooks[1].url``)."""
    table: list[str] = []
    rest = ""
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if part in ("profiles", "sources") and parts and isinstance(parts[0], str):
            table += [*filter(None, rest.split(".")), str(part), parts.pop(0)]
            rest = ""
        elif isinstance(part, int):
            rest += f"[{part + 1}]"
        else:
            rest += f".{part}" if rest else str(part)
    head = f"[{'.'.join(table)}]" if table else ""
    return f"{head} {rest}" if head and rest else head or rest


def _unknown(model: Any, prefix: tuple[str, ...], parent: tuple[Any, ...],
             keys: list[str]) -> str:
    info = _field(model, parent) if parent else None
    inner = _model_in(info.annotation) if info is not None else (None if parent else model)
    known = ""
    if inner is not None:
        import difflib

        near = [f"{k} -> {m[0]}" for k in keys
                if (m := difflib.get_close_matches(k, list(inner.model_fields), 1, 0.75))]
        known = f" (did you mean: {', '.join(near)}?)" if near else ""
    full = prefix + parent
    name = _dotted(full)
    where = name if name.startswith("[") else f"[{name}]"
    if not full or (len(full) == 2 and full[0] == "profiles"):
        return f"unknown key(s) in {where if full else 'top level'}: {', '.join(keys)}{known}"
    return f"{where}: unknown key(s) {', '.join(keys)}{known}"


def _allowed(error: dict[str, Any], info: Any) -> str:
    if error["type"] == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if info is not None and info.description:
        return str(info.description)
    ctx = error.get("ctx") or {}
    bounds = {"greater_than_equal": ("ge", "{} or more"), "greater_than": ("gt", "above {}"),
              "less_than_equal": ("le", "at most {}"), "less_than": ("lt", "below {}")}
    if error["type"] in bounds:
        key, text = bounds[error["type"]]
        return text.format(ctx.get(key))
    if error["type"] == "literal_error":
        return f"one of {ctx.get('expected', '')}".replace("'", "")
    return _PHRASES.get(error["type"], str(error["msg"]).removeprefix("Input should be ").lower())


def _model_in(annotation: Any) -> Any:
    """The pydantic model ``annotation`` is (or holds in a union), else None."""
    import typing

    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None and typing.get_origin(annotation) is not dict \
                and typing.get_origin(annotation) is not list:
            return found
    return None


def _items_of(annotation: Any) -> Any:
    """What a dict or list ``annotation`` (or a union holding one) holds, else None."""
    import typing

    origin = typing.get_origin(annotation)
    if origin is dict:
        return typing.get_args(annotation)[1]
    if origin is list:
        return typing.get_args(annotation)[0]
    for arg in typing.get_args(annotation):
        found = _items_of(arg)
        if found is not None:
            return found
    return None


def _field(model: Any, loc: tuple[Any, ...]) -> Any:
    """The pydantic ``FieldInfo`` that ``loc`` points into (dict keys and list indexes
    skipped), else None."""
    annotation, info = model, None
    for part in loc:
        inner = _model_in(annotation)
        if inner is not None and isinstance(part, str) and part in inner.model_fields:
            info = inner.model_fields[part]
            annotation = info.annotation
        else:
            annotation = _items_of(annotation)
            if annotation is None:
                break
    return info
