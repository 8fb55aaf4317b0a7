"""The config file's pydantic models, and the full check of :class:`~invsync.run.config.Settings`.

Loaded only when a config file is read or a setting's value is not of its field's own type:
a run without a config file never imports pydantic (~0.07 s of every start-up).
:mod:`invsync.run.config` builds the settings; each section of the file is a model here,
composed into :class:`FileKeys` (:class:`ConfigFile` adds ``[profiles.NAME]``).
"""

from __future__ import annotations

import contextvars
import functools
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import core_schema

from invsync.config_errors import usage_error_from
from invsync.run import config
from invsync.run.brakes import BrakeLimits
from invsync.run.config import (
    SECONDS,
    SHARE,
    Settings,
    _between,
    _column_target,
    _encoding,
    _events,
    _lag_duration,
    _no_nul,
    _positive_duration,
    _time_text,
    _url,
    _urls,
)
from invsync.sources.model import SourceTable
from invsync.stages.validate import DUPLICATE_POLICIES, QuantityRules
from invsync.store.limits import MAX_ITEMS_PER_REQUEST, RetryPolicy


class Table(BaseModel):
    """A table of the config file: unknown keys and values of the wrong type are errors."""

    # defer_build: a table's validator is built when a config file is first read, not at
    # import (a run without a config file never needs it).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False,
                              defer_build=True)



Text = Annotated[str, AfterValidator(_no_nul)]
Duration = Annotated[str | float, PlainValidator(_positive_duration)]
Share = Annotated[float, Field(ge=0, le=1)]
Seconds = Annotated[float, Field(gt=0)]
Count = Annotated[int, Field(ge=0)]


def _folder(value: str) -> str:
    # An empty path is the current folder: a config meaning that writes "." or "./".
    if not value.strip():
        raise ValueError('must be a folder path (such as "/var/lib/invsync")')
    return value


Folder = Annotated[str, AfterValidator(_no_nul), AfterValidator(_folder)]


def key(allowed: str) -> Any:
    """An optional key of a table; ``allowed`` is what an error message says it must be."""
    return Field(None, description=allowed)



# Plain validators where a key takes one of two shapes: one message, no union member names.
Url = Annotated[str, AfterValidator(_url)]
Urls = Annotated[list[str], PlainValidator(_urls)]
Events = Annotated[list[str], PlainValidator(_events)]


class QuantitySection(Table):
    """``[quantity]``: rules applied to each parsed quantity."""

    text_map: dict[Text, int] | None = None
    buffer: Count | None = key("a whole number, 0 or more")
    clamp_negative: bool | None = None
    maximum: Count | None = key("a whole number, 0 or more")


class RetrySection(Table):
    """``[retry]``: how long the store's requests keep trying."""

    max_attempts: Annotated[int, Field(ge=1)] | None = key("a whole number, 1 or more")
    base_delay_s: Seconds | None = key(SECONDS)
    max_delay_s: Seconds | None = key(SECONDS)
    max_total_s: Seconds | None = key(SECONDS)
    timeout_s: Seconds | None = key(SECONDS)
    max_wait_s: Seconds | None = key(SECONDS)


class BrakesSection(Table):
    """``[brakes]``: the thresholds of the safety brakes (their overrides are flags)."""

    min_rows_ratio: Share | None = key(SHARE)
    max_zero_share: Share | None = key(SHARE)


class StoreSection(Table):
    """``[store]``: how invsync shares the store with its other apps."""

    quota_share: Annotated[float, Field(gt=0, le=1)] | None = key(
        "a share above 0 and at most 1 (such as 0.8)")


class HookTable(Table):
    """One ``[[notify.hooks]]`` receiver."""

    url: Url
    on: Events | None = None


class NotifySection(Table):
    """``[notify]``: webhooks told of a run's outcome (see :mod:`invsync.run.notify`)."""

    url: Url | None = None
    urls: Urls | None = None
    on: Events | None = None
    rejected_share: Share | None = key(SHARE)
    volume_drop: Share | None = key(SHARE)
    timeout_s: Annotated[float, Field(gt=0, le=600)] | None = key(
        "a number of seconds above 0 and at most 600")
    attempts: Annotated[int, Field(ge=1, le=10)] | None = key("a whole number from 1 to 10")
    hooks: list[HookTable] | None = key("[[notify.hooks]] tables, each with url and on")
    report_base_url: Url | None = None

    @model_validator(mode="after")
    def _has_a_receiver(self, info: ValidationInfo) -> NotifySection:
        # A profile's [profiles.NAME.notify] may set only `on`: the top level has the URL.
        # An empty [notify] table asks for nothing.
        partial = (info.context or {}).get("partial") or not self.model_fields_set
        if not partial and not (self.url or self.urls or self.hooks):
            raise ValueError('give url = "https://...", urls = [...] or [[notify.hooks]] '
                             "tables (http or https)")
        return self


class FileKeys(Table):
    """The keys of a config file's top level (and of each ``[profiles.NAME]``)."""

    store_hash: Text | None = None
    access_token: Text | None = None
    api_url: Text | None = None
    location_id: Annotated[int, AfterValidator(_between(1, 2**63 - 1))] | None = None
    reason: Text | None = None
    state_dir: Folder | None = None
    report_dir: Folder | None = None
    batch_size: Annotated[int, AfterValidator(_between(1, MAX_ITEMS_PER_REQUEST))] | None = None
    concurrency: Annotated[int, AfterValidator(_between(1, 32))] | None = None
    sheet: Text | None = None
    encoding: Annotated[str, AfterValidator(_encoding)] | None = None
    header_row: Annotated[int, Field(ge=1)] | None = key("a row number, 1 or more")
    columns: dict[Text, Annotated[str, AfterValidator(_column_target)]] | None = None
    duplicates: Literal[DUPLICATE_POLICIES] | None = None  # type: ignore[valid-type]
    quantity: QuantitySection | None = None
    retry: RetrySection | None = None
    verify_tls: bool | None = None
    zero_missing: bool | None = None
    baseline: Literal["snapshot", "live"] | None = None
    baseline_every: Duration | None = None
    verify_lag_s: Annotated[str | float, PlainValidator(_lag_duration)] | None = None
    notify: NotifySection | None = None
    sources: dict[Text, SourceTable] | None = None
    source: Text | None = None
    retention: Duration | None = None
    store: StoreSection | None = None
    store_id: Text | None = None
    as_of: Annotated[str, PlainValidator(_time_text)] | None = None
    max_as_of_age: Duration | None = None
    brakes: BrakesSection | None = None


class ConfigFile(FileKeys):
    """A whole config file: the top level's keys and its ``[profiles.NAME]`` tables."""

    profiles: dict[Text, FileKeys] | None = None



def _instance_of(cls: type) -> GetPydanticSchema:
    """A field holding an instance of ``cls`` as is (built and checked by its loader)."""
    return GetPydanticSchema(lambda _type, _handler: core_schema.is_instance_schema(cls))


Rules = Annotated[QuantityRules, _instance_of(QuantityRules)]
Brakes = Annotated[BrakeLimits, _instance_of(BrakeLimits)]
Retry = Annotated[RetryPolicy, _instance_of(RetryPolicy)]


KNOWN_KEYS = frozenset(FileKeys.model_fields)
"""The config file's keys: the fields of :class:`FileKeys`."""


def validated(model: type[BaseModel], values: Any, where: Path, *, partial: bool = False
              ) -> BaseModel:
    """``values`` checked by ``model``; :class:`UsageError` (exit 64) names the key."""
    try:
        return model.model_validate(values, context={"partial": partial})
    except ValidationError as exc:
        raise usage_error_from(exc, model, file=where) from None


# What Settings' field annotations name (they are text: from __future__ import annotations),
# put where pydantic looks them up, in the settings' own module.
vars(config).update(AfterValidator=AfterValidator, Field=Field, Rules=Rules, Brakes=Brakes,
                    Retry=Retry)
CHECKING: contextvars.ContextVar[bool] = contextvars.ContextVar("checking", default=False)
"""Set while pydantic builds a :class:`Settings` here (its own check is then this one)."""


@functools.cache
def _settings_adapter() -> TypeAdapter[Settings]:
    # What the settings were checked with as a pydantic dataclass (a stdlib dataclass's own
    # pydantic config is this attribute).
    Settings.__pydantic_config__ = ConfigDict(arbitrary_types_allowed=True)  # type: ignore[attr-defined]
    return TypeAdapter(Settings)


def checked_settings(settings: Settings) -> Settings:
    """``settings``' values checked and converted by pydantic as its field types say (a
    wrong type raises pydantic's ``ValidationError``, as the fields' constraints do)."""
    token = CHECKING.set(True)
    try:
        checked = _settings_adapter().validate_python(
            {f.name: getattr(settings, f.name) for f in fields(settings) if f.init})
    finally:
        CHECKING.reset(token)
    assert isinstance(checked, Settings)
    return checked
