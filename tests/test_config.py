"""feeds.yaml: validated on load, one-line errors naming file, line and key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from aggregator.config import load_settings, parse_interval
from aggregator.errors import ConfigError

GOOD = """\
database: sqlite:///data/agg.db
categories: [Trends, State of the Art, Miscellaneous, Releases]
fetch: {timeout: 5, max_bytes: 1000000, concurrency: 4, per_host: 1, allow_private_addresses: true}
arxiv: {api_url: "http://127.0.0.1:9/api/query", delay_seconds: 0.1, page_size: 10}
sources:
  - {name: hf-blog, kind: feed, url: "https://huggingface.co/blog/feed.xml", interval: 6h}
  - {name: transformers, kind: github, repo: huggingface/transformers}
  - {name: arxiv-nlp, kind: arxiv, query: "cat:cs.CL", max_results: 50, default_category: State of the Art}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_config_resolves_sources_and_paths(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), env={})
    names = [s.name for s in settings.sources]
    assert names == ["hf-blog", "transformers", "arxiv-nlp"]
    github = settings.source("transformers")
    assert github.url == "https://github.com/huggingface/transformers/releases.atom"
    arxiv = settings.source("arxiv-nlp")
    assert arxiv.url == "http://127.0.0.1:9/api/query" and arxiv.query == "cat:cs.CL"
    assert settings.source("hf-blog").interval == timedelta(hours=6)
    # a relative SQLite path is relative to the config file, not to the working directory
    assert settings.database_url == f"sqlite:///{tmp_path.resolve()}/data/agg.db"
    assert settings.models_dir == tmp_path.resolve() / "models"


def test_environment_overrides_database_and_models(tmp_path: Path) -> None:
    env = {"AGGREGATOR_DATABASE_URL": "postgresql+psycopg://u@h/db", "AGGREGATOR_MODELS_DIR": "/srv/models"}
    settings = load_settings(write(tmp_path, GOOD), env=env)
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.models_dir == Path("/srv/models")


def test_unknown_key_names_file_line_key_and_suggests(tmp_path: Path) -> None:
    text = GOOD.replace("interval: 6h}", "intervl: 6h}")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env={})
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}/feeds.yaml:6: sources[0].intervl: unknown key")
    assert "did you mean 'interval'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("change", "line", "expected"),
    [
        (("concurrency: 4", "concurrency: 0"), 3, "fetch.concurrency: Input should be greater than or equal to 1"),
        (("kind: github, repo: huggingface/transformers", "kind: github"), 7, "a github source needs 'repo'"),
        (("interval: 6h", "interval: soon"), 6, "is not an interval"),
        (("https://huggingface.co/blog/feed.xml", "file:///etc/passwd"), 6, "is not an http(s) URL"),
        (("kind: feed", "kind: podcast"), 6, "sources[0].kind"),
        (("fetch:", 'schedule: {nightly: "0 25 * * *"}\nfetch:'), 3, "schedule.nightly"),
        (("fetch:", "schedule: {timezone: Mars/Olympus}\nfetch:"), 3, "is not a known time zone"),
        (("fetch:", "backoff: {max_interval: forever}\nfetch:"), 3, "is not an interval"),
    ],
)
def test_invalid_values_are_one_line_with_line_number(
    tmp_path: Path, change: tuple[str, str], line: int, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, GOOD.replace(*change)), env={})
    message = str(caught.value)
    assert f"feeds.yaml:{line}:" in message and expected in message and "\n" not in message


def test_arxiv_delay_below_three_seconds_is_refused_for_real_servers(tmp_path: Path) -> None:
    text = GOOD.replace('"http://127.0.0.1:9/api/query"', "https://export.arxiv.org/api/query")
    with pytest.raises(ConfigError, match="delay_seconds must be at least 3"):
        load_settings(write(tmp_path, text), env={})


def test_duplicate_source_names_and_unknown_default_category(tmp_path: Path) -> None:
    text = GOOD + '  - {name: hf-blog, kind: feed, url: "https://example.org/feed"}\n'
    with pytest.raises(ConfigError, match="source names must be unique: hf-blog"):
        load_settings(write(tmp_path, text), env={})
    text = GOOD.replace("default_category: State of the Art", "default_category: Gossip")
    with pytest.raises(ConfigError, match="'Gossip' is not in categories"):
        load_settings(write(tmp_path, text), env={})


def test_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"feeds.yaml:3: not valid YAML"):
        load_settings(write(tmp_path, "sources:\n  - {name: x, kind: feed\n"), env={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml", env={})


def test_unknown_source_name_lists_known_ones(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), env={})
    with pytest.raises(ConfigError, match="no source named 'hf' \\(known: hf-blog, transformers, arxiv-nlp\\)"):
        settings.source("hf")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("6h", 21600), ("1d", 86400), (45, 45), ("1.5h", 5400)]
)
def test_intervals(text: str | int, seconds: int) -> None:
    assert parse_interval(text) == timedelta(seconds=seconds)


def test_shipped_feeds_yaml_is_valid() -> None:
    settings = load_settings(Path(__file__).parents[1] / "feeds.yaml", env={})
    kinds = [s.kind for s in settings.sources]
    assert kinds.count("feed") >= 10 and kinds.count("github") >= 10 and kinds.count("arxiv") >= 4
