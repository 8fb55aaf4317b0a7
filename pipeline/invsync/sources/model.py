"""The pydantic model of a config file's ``[sources.NAME]`` table (see
:mod:`invsync.sources.spec`), imported only when a config file is checked."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator

from invsync.sources.spec import _after, _duration, _source_url, _text_values

Seconds = Annotated[float, Field(ge=0, lt=10**6)]
SECONDS = Field(None, description="a number of seconds")


class SourceTable(BaseModel):
    """A ``[sources.NAME]`` table of the config: every key it may hold, typed. Unknown keys,
    text where a number goes and ``anonymous = "false"`` are refused at start."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False,
                              defer_build=True)  # built when a config file is first read

    url: Annotated[str, AfterValidator(_source_url)] = Field(
        description='"sftp://...", "s3://...", "https://..." or a path')
    pick: Literal["only", "newest", "oldest"] | None = None
    settle_s: Seconds | None = SECONDS
    settle_timeout_s: Seconds | None = SECONDS
    marker: str | None = None
    max_age: Annotated[str | float, PlainValidator(_duration)] | None = None
    on_success: Annotated[str, AfterValidator(_after(True))] | None = None
    on_failure: Annotated[str, AfterValidator(_after(False))] | None = None
    timeout_s: Annotated[float, Field(gt=0, lt=10**6)] | None = Field(
        None, description="a number of seconds above 0")
    interval_s: Seconds | None = SECONDS
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    key_file: str | None = None
    key_passphrase: str | None = None
    host_key: Annotated[str, Field(pattern="^SHA256:")] | None = Field(
        None, description='the server key\'s fingerprint as ssh-keyscan | ssh-keygen -lf - '
        'prints it: "SHA256:..."')
    known_hosts: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    anonymous: bool | None = None
    headers: Annotated[dict[str, Any], AfterValidator(_text_values)] | None = None
    ca_file: str | None = None
    verify_tls: bool | None = None
    tls: bool | None = None
