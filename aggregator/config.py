"""Load and validate feeds.yaml: the user's one config file.

Every error is one line naming the file, the line and the key, e.g.
``feeds.yaml:12: sources[3].intervl: unknown key (did you mean 'interval'?)``.
Environment overrides: AGGREGATOR_CONFIG (the file), AGGREGATOR_DATABASE_URL, AGGREGATOR_MODELS_DIR.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aggregator.errors import ConfigError
from aggregator.types import Source

DEFAULT_CONFIG = "feeds.yaml"
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DEFAULT_CATEGORIES = ("Trends", "State of the Art", "Miscellaneous", "Releases")
DEFAULT_HEADINGS = {"State of the Art": "State Of The Art", "Releases": "Latest Releases"}
ARXIV_MIN_DELAY = 3.0
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(value: str | int | float) -> timedelta:
    """'90s', '30m', '6h', '1d' or a number of seconds -> timedelta (at least one second)."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _INTERVAL.match(value)
        if not match:
            raise ValueError(f"{value!r} is not an interval like 30m, 6h or 1d")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 1:
        raise ValueError("an interval must be at least 1 second")
    return timedelta(seconds=seconds)


def _valid_interval(value: str | int) -> str | int:
    parse_interval(value)  # raises ValueError naming the value
    return value


Interval = Annotated[str | int, AfterValidator(_valid_interval)]  # "90s", "30m", "6h", "1d" or seconds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FetchSettings(_Strict):
    timeout: float = Field(20.0, gt=0, description="total deadline per request, seconds")
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(20.0, gt=0)
    max_bytes: int = Field(15_000_000, gt=0, description="body cap after decompression")
    max_redirects: int = Field(5, ge=0, le=10)
    concurrency: int = Field(16, ge=1, le=512)
    per_host: int = Field(2, ge=1, le=64)
    allow_private_addresses: bool = False


class ArxivSettings(_Strict):
    api_url: str = "https://export.arxiv.org/api/query"
    delay_seconds: float = Field(ARXIV_MIN_DELAY, ge=0)
    page_size: int = Field(100, ge=1, le=2000)
    retries: int = Field(3, ge=0, le=10)

    @model_validator(mode="after")
    def _polite_delay(self) -> ArxivSettings:
        # arXiv asks for one request every 3 s; only a loopback test server may be hit faster.
        if self.delay_seconds < ARXIV_MIN_DELAY and not is_loopback_host(urlsplit(self.api_url).hostname or ""):
            raise ValueError(f"delay_seconds must be at least {ARXIV_MIN_DELAY:g} for {self.api_url}")
        return self


class ScheduleSettings(_Strict):
    nightly: str = "0 5 * * *"
    timezone: str = "UTC"
    jitter_seconds: int = Field(60, ge=0)
    misfire_grace: Interval = "6h"
    retrain_min_decisions: int = Field(20, ge=1)

    @field_validator("nightly")
    @classmethod
    def _cron_line(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 5:
            raise ValueError(f"{value!r} is not a cron line of 5 fields (minute hour day month weekday)")
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger.from_crontab(value)  # raises ValueError naming the bad field
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a known time zone (e.g. UTC, Europe/Paris)") from None
        return value


class BackoffSettings(_Strict):
    max_interval: Interval = "7d"
    pause_after: int = Field(10, ge=1, description="consecutive errors before a source is paused")


class ClassifierSettings(_Strict):
    relevance_min_per_class: int = Field(50, ge=1)


class ExportSettings(_Strict):
    summary_chars: int = Field(400, ge=40)
    bom: bool = False


class DedupeSettings(_Strict):
    enabled: bool = True
    threshold: float | None = Field(None, gt=0, le=1)
    window: Interval = "7d"


class Editor(_Strict):
    name: str = Field(min_length=1)
    password_hash: str = Field(min_length=1)


class ReviewSettings(_Strict):
    editors: list[Editor] = Field(default_factory=list)
    page_size: int = Field(50, ge=1, le=500)


class SourceSettings(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    kind: Literal["feed", "github", "arxiv"]
    url: str | None = None
    repo: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+$")
    query: str | None = None
    max_results: int = Field(200, ge=1, le=10_000)
    interval: Interval = "6h"
    enabled: bool = True
    default_category: str | None = None

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> SourceSettings:
        needs = {"feed": ("url",), "github": ("repo",), "arxiv": ("query",)}[self.kind]
        for name in needs:
            if getattr(self, name) is None:
                raise ValueError(f"a {self.kind} source needs '{name}'")
        return self


class SettingsModel(_Strict):
    database: str = "sqlite:///aggregator.db"
    models_dir: str = "models"
    export_dir: str = "exports"
    categories: list[str] = Field(default_factory=lambda: list(DEFAULT_CATEGORIES), min_length=2)
    headings: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_HEADINGS))
    aliases: dict[str, str] = Field(default_factory=dict)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    arxiv: ArxivSettings = Field(default_factory=ArxivSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    backoff: BackoffSettings = Field(default_factory=BackoffSettings)
    classifier: ClassifierSettings = Field(default_factory=ClassifierSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    dedupe: DedupeSettings = Field(default_factory=DedupeSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    sources: list[SourceSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> SettingsModel:
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("categories repeat a name")
        names = [s.name for s in self.sources]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"source names must be unique: {', '.join(repeated)}")
        for source in self.sources:
            if source.default_category and source.default_category not in self.categories:
                raise ValueError(
                    f"source {source.name}: default_category {source.default_category!r} is not in categories"
                )
        return self


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated configuration with paths resolved and sources turned into value types."""

    path: Path
    model: SettingsModel
    database_url: str
    models_dir: Path
    export_dir: Path
    sources: tuple[Source, ...]

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.model.categories)

    def source(self, name: str) -> Source:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"{self.path}: no source named {name!r} (known: {known})")

    def heading(self, category: str) -> str:
        return self.model.headings.get(category, category)


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--config, else AGGREGATOR_CONFIG, else ./feeds.yaml."""
    return Path(explicit or os.environ.get("AGGREGATOR_CONFIG") or DEFAULT_CONFIG)


def load_settings(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Settings:
    """Read, validate and resolve feeds.yaml. Raises ConfigError with one line naming file, line, key."""
    env = os.environ if env is None else env
    file = config_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found (use --config or AGGREGATOR_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read config: {exc}") from None
    return settings_from_text(text, file, env=env)


def settings_from_text(text: str, file: Path, *, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    data, lines = _load_yaml(text, file)
    try:
        model = SettingsModel.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file, lines)) from None
    return _resolve(model, file, env)


def _load_yaml(text: str, file: Path) -> tuple[Any, dict[tuple[str | int, ...], int]]:
    try:
        # One pass of libyaml when it is there: the node tree gives the lines, then the data.
        loader = _YamlLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{file}{line}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}:1: the top level must be a mapping of keys (database, sources, ...)")
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _index_lines(node, (), lines)
    return data, lines


def _index_lines(node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, child in enumerate(node.value):
            _index_lines(child, (*path, index), out)


def _describe(exc: ValidationError, file: Path, lines: Mapping[tuple[str | int, ...], int]) -> str:
    """The first validation error as one line: file:line: key: reason."""
    errors = exc.errors()
    # A typo'd key also makes the real key "missing": name the typo, it is the cause.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and "[" in part))
    line = _nearest_line(loc, lines)
    key = _format_loc(loc) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key" + _suggestion(loc)
    elif error["type"] == "missing":
        message = "required key is missing"
    more = len(errors) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more and error["type"] != "extra_forbidden" else ""
    return f"{file}:{line}: {key}: {message}{tail}"


def _nearest_line(loc: tuple[str | int, ...], lines: Mapping[tuple[str | int, ...], int]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _format_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _suggestion(loc: tuple[str | int, ...]) -> str:
    if not loc or not isinstance(loc[-1], str):
        return ""
    parent: type[BaseModel] | None = SettingsModel
    for part in loc[:-1]:
        if isinstance(part, int) or parent is None:
            continue
        field = parent.model_fields.get(part)
        parent = _model_of(field.annotation) if field else None
    if parent is None:
        return ""
    close = difflib.get_close_matches(loc[-1], list(parent.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _resolve(model: SettingsModel, file: Path, env: Mapping[str, str]) -> Settings:
    base = file.resolve().parent
    database = env.get("AGGREGATOR_DATABASE_URL") or model.database
    models_dir = Path(env.get("AGGREGATOR_MODELS_DIR") or model.models_dir)
    export_dir = Path(model.export_dir)
    return Settings(
        path=file,
        model=model,
        database_url=_resolve_sqlite_path(database, base),
        models_dir=models_dir if models_dir.is_absolute() else base / models_dir,
        export_dir=export_dir if export_dir.is_absolute() else base / export_dir,
        sources=tuple(_source(s, model.arxiv) for s in model.sources),
    )


def _resolve_sqlite_path(url: str, base: Path) -> str:
    """A relative SQLite path is relative to feeds.yaml, not to wherever cron happens to start."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////"):
        rest = url[len(prefix) :]
        if rest and not rest.startswith(":memory:") and not Path(rest).is_absolute():
            return prefix + str(base / rest)
    return url


def _source(s: SourceSettings, arxiv: ArxivSettings) -> Source:
    if s.kind == "github":
        url = s.url or f"https://github.com/{s.repo}/releases.atom"
    elif s.kind == "arxiv":
        url = s.url or arxiv.api_url
    else:
        url = s.url or ""
    return Source(
        name=s.name,
        kind=s.kind,
        url=url,
        interval=parse_interval(s.interval),
        enabled=s.enabled,
        query=s.query,
        repo=s.repo,
        max_results=s.max_results,
        default_category=s.default_category,
    )


def is_loopback_host(host: str) -> bool:
    """localhost or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
