"""Configuration: one TOML file read into frozen dataclasses.

The file is loaded once, by the CLI, and the resulting `Config` is passed down explicitly.
Every key is checked: an unknown key or a wrong value raises `ConfigError` naming the key,
so the program stops at start instead of misbehaving later.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.config_sections import (
    DEFAULT_SEARCH_MODEL,
    ROLES,
    ApiConfig,
    CaptionConfig,
    DatabaseConfig,
    LogConfig,
    PathsConfig,
    PipelineConfig,
    S3Config,
    SearchConfig,
    StorageConfig,
    ThumbnailsConfig,
    WatchConfig,
)
from models.formats import FORMATS

CONFIG_ENV = "HTX_CONFIG"
# Overrides database.url: a PostgreSQL password need not sit in a world-readable file.
DATABASE_URL_ENV = "HTX_DATABASE_URL"
# Override api.read_token and api.upload_token, for the same reason.
READ_TOKEN_ENV = "HTX_READ_TOKEN"
UPLOAD_TOKEN_ENV = "HTX_UPLOAD_TOKEN"
# The object store's credentials (storage.s3), else the standard AWS variables.
S3_CREDENTIAL_ENVS = (
    ("access_key_id", ("HTX_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")),
    ("secret_access_key", ("HTX_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")),
)
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")
DEFAULT_CONFIG_NAME = "config.toml"
# A token is all that stands between the network and the images: a short one is guessed.
MIN_TOKEN_CHARS = 16


class ConfigError(Exception):
    """A configuration problem a person has to fix; the message names the key."""


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = PathsConfig()
    database: DatabaseConfig = DatabaseConfig()
    watch: WatchConfig = WatchConfig()
    pipeline: PipelineConfig = PipelineConfig()
    thumbnails: ThumbnailsConfig = ThumbnailsConfig()
    caption: CaptionConfig = CaptionConfig()
    search: SearchConfig = SearchConfig()
    api: ApiConfig = ApiConfig()
    storage: StorageConfig = StorageConfig()
    log: LogConfig = LogConfig()
    # The folder relative paths are resolved against, and the file it came from (None: defaults).
    base_dir: Path = field(default_factory=Path.cwd, compare=False)
    source: Path | None = field(default=None, compare=False)

    @property
    def data_dir(self) -> Path:
        return self._resolve(self.paths.data_dir)

    @property
    def inbox_dir(self) -> Path:
        return self._resolve(self.paths.inbox) if self.paths.inbox else self.data_dir / "inbox"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def work_dir(self) -> Path:
        """Where objects of a store that is not this machine's are fetched to be read."""
        return self.data_dir / "work"

    @property
    def trash_dir(self) -> Path | None:
        """Where the originals of deleted images go; None: they are removed."""
        return self._resolve(self.paths.trash) if self.paths.trash else None

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.data_dir / 'htx.db'}"

    def _resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()


def _check_value(key: str, spec: dataclasses.Field[Any], expected: Any, value: Any) -> Any:
    """Return `value` converted to the `expected` type, or raise ConfigError naming `key`."""
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
    elif expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
    elif expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
    elif expected is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
    elif typing.get_origin(expected) is tuple:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        value = tuple(value)
    choices = spec.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}, got {value!r}")
    minimum = spec.metadata.get("minimum")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}: must be at least {minimum}, got {value!r}")
    return value


_SECTIONS: dict[str, type] = {
    spec.name: typing.get_type_hints(Config)[spec.name]
    for spec in dataclasses.fields(Config)
    if spec.name not in ("base_dir", "source")
}


def _build_section(name: str, table: Any, section_type: type | None = None) -> Any:
    section_type = section_type or _SECTIONS[name]
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected a table [{name}], got {table!r}")
    fields = {spec.name: spec for spec in dataclasses.fields(section_type)}
    hints = typing.get_type_hints(section_type)
    values = {}
    for key, value in table.items():
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{name}.{key}: unknown key (known keys in [{name}]: {known})")
        if dataclasses.is_dataclass(hints[key]):  # a table inside the table: [storage.s3]
            values[key] = _build_section(f"{name}.{key}", value, hints[key])
        else:
            values[key] = _check_value(f"{name}.{key}", fields[key], hints[key], value)
    return section_type(**values)


def _check_relations(config: Config) -> None:
    if config.thumbnails.small > config.thumbnails.medium:
        raise ConfigError("thumbnails.small: must not be larger than thumbnails.medium")
    if config.thumbnails.quality > 100:
        raise ConfigError(f"thumbnails.quality: must be at most 100, got {config.thumbnails.quality}")
    roles = config.pipeline.roles
    if not roles or not set(roles) <= set(ROLES):
        raise ConfigError(f"pipeline.roles: a list of some of {', '.join(ROLES)}, got {list(roles)!r}")
    formats = config.pipeline.formats
    if not formats or not set(formats) <= set(FORMATS):
        raise ConfigError(f"pipeline.formats: a list of one or more of {', '.join(FORMATS)}, got {list(formats)!r}")
    scheme = config.database.url.partition(":")[0].partition("+")[0]
    if config.database.url and (scheme not in DATABASE_SCHEMES or "://" not in config.database.url):
        raise ConfigError(
            "database.url: expected sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE, "
            f"got a URL starting {config.database.url[:12]!r}"
        )
    for key, variable in (("read_token", READ_TOKEN_ENV), ("upload_token", UPLOAD_TOKEN_ENV)):
        token = getattr(config.api, key)
        if token and len(token) < MIN_TOKEN_CHARS:  # the token itself is never shown
            raise ConfigError(
                f"api.{key} (or ${variable}): must be at least {MIN_TOKEN_CHARS} characters, got {len(token)}; "
                'make one with: python3 -c "import secrets; print(secrets.token_urlsafe(24))"'
            )
    if config.storage.backend == "s3":
        s3 = config.storage.s3
        if not s3.bucket:
            raise ConfigError('storage.s3.bucket: the bucket to keep the images in, when storage.backend is "s3"')
        if s3.endpoint and not s3.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"storage.s3.endpoint: expected http://HOST:PORT or https://HOST, got {s3.endpoint!r}")
        if s3.endpoint.startswith("http://") and not s3.allow_http:
            raise ConfigError("storage.s3.allow_http: must be true for an http:// endpoint (credentials go in the clear)")
        if bool(s3.access_key_id) != bool(s3.secret_access_key):
            raise ConfigError("storage.s3: set both the access key id and the secret access key ($HTX_S3_ACCESS_KEY_ID, $HTX_S3_SECRET_ACCESS_KEY), or neither")
    if config.api.port > 65535:
        raise ConfigError(f"api.port: must be at most 65535, got {config.api.port}")
    device = config.caption.device
    if device not in ("auto", "cpu", "cuda") and not (
        device.startswith("cuda:") and device[5:].isdigit()
    ):
        raise ConfigError(f"caption.device: must be auto, cpu, cuda or cuda:N, got {device!r}")
    if not config.search.model.strip():
        raise ConfigError('search.model: must be a hub id, a folder, or "none"')
    if config.search.min_score > 1:
        raise ConfigError(f"search.min_score: a cosine similarity, at most 1, got {config.search.min_score}")
    if not config.caption.model.strip():
        raise ConfigError('caption.model: must be a hub id, a folder, or "none"')
    if config.caption.quantize == "int8" and config.caption.dtype not in ("auto", "float32"):
        raise ConfigError(
            f"caption.quantize: int8 quantises float32 weights; set caption.dtype to auto or float32, not {config.caption.dtype!r}"
        )
    if config.caption.runtime == "openvino":
        # What only the torch runtime does; auto picks torch for these instead.
        if config.caption.device.startswith("cuda"):
            raise ConfigError("caption.runtime: openvino runs on the CPU; set caption.device to auto or cpu, or caption.runtime to torch or auto")
        if config.caption.quantize != "none":
            raise ConfigError("caption.runtime: int8 is the torch runtime's quantisation; set caption.quantize to none, or caption.runtime to torch or auto")
        if config.caption.num_beams > 1:
            raise ConfigError("caption.runtime: openvino decodes greedily; set caption.num_beams to 1, or caption.runtime to torch or auto")


def parse(data: dict[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    """Build a Config from already-parsed TOML data."""
    sections = {}
    for name, table in data.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{name}: unknown section (known: {', '.join(_SECTIONS)})")
        sections[name] = _build_section(name, table)
    config = Config(**sections, base_dir=base_dir, source=source)
    _check_relations(config)
    return config


def find_config_file(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The file to load: `--config`, else $HTX_CONFIG, else ./config.toml if present."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return local if local.is_file() else None


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the configuration named by `path` (see `find_config_file`), or the defaults;
    $HTX_DATABASE_URL, $HTX_READ_TOKEN and $HTX_UPLOAD_TOKEN, when set, replace database.url,
    api.read_token and api.upload_token."""
    data, base_dir, source = _read(path)
    for section_name, key, variable in (
        ("database", "url", DATABASE_URL_ENV),
        ("api", "read_token", READ_TOKEN_ENV),
        ("api", "upload_token", UPLOAD_TOKEN_ENV),
    ):
        value = os.environ.get(variable)
        section = data.get(section_name, {})
        if value and isinstance(section, dict):
            data = data | {section_name: section | {key: value}}
    data = _with_s3_credentials(data)
    try:
        return parse(data, base_dir=base_dir, source=source)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}" if source else str(error)) from None


def _with_s3_credentials(data: dict[str, Any]) -> dict[str, Any]:
    """storage.s3's credentials from the environment, where it has them: they stay out of files."""
    storage = data.get("storage", {})
    s3 = storage.get("s3", {}) if isinstance(storage, dict) else None
    if not isinstance(s3, dict):
        return data
    for key, variables in S3_CREDENTIAL_ENVS:
        value = next((os.environ[variable] for variable in variables if os.environ.get(variable)), "")
        if value:
            s3 = s3 | {key: value}
    return data | {"storage": storage | {"s3": s3}}


def _read(path: str | os.PathLike[str] | None) -> tuple[dict[str, Any], Path, Path | None]:
    """The TOML data of the file to load, the folder its relative paths start from, its path."""
    config_file = find_config_file(path)
    if config_file is None:
        return {}, Path.cwd(), None
    try:
        with open(config_file, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_file}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{config_file}: not valid TOML: {error}") from None
    resolved = config_file.resolve()
    return data, resolved.parent, resolved


def as_dict(config: Config) -> dict[str, dict[str, Any]]:
    """The effective settings, section by section, as plain TOML-friendly values."""
    return {name: _plain(dataclasses.asdict(getattr(config, name))) for name in _SECTIONS}


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _plain(value) if isinstance(value, dict) else list(value) if isinstance(value, tuple) else value
        for key, value in values.items()
    }


def replace(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy of `config` with some keys of some sections changed, e.g. for tests and tools."""
    changes = {
        name: dataclasses.replace(getattr(config, name), **values) for name, values in sections.items()
    }
    return dataclasses.replace(config, **changes)


__all__ = [
    "DEFAULT_SEARCH_MODEL",
    "ROLES",
    "ApiConfig",
    "CaptionConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "LogConfig",
    "PathsConfig",
    "PipelineConfig",
    "S3Config",
    "SearchConfig",
    "StorageConfig",
    "ThumbnailsConfig",
    "WatchConfig",
    "as_dict",
    "load",
    "parse",
    "replace",
]
