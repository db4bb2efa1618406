"""Health you can see: one dict that `aggregator status`, `status --json` and the web page share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aggregator.config import Settings
from aggregator.errors import ConfigError, ModelError
from aggregator.storage import Storage
from aggregator.types import StoredItem

NEXT_POLLS_SHOWN = 5


def item_json(stored: StoredItem) -> dict[str, Any]:
    """One stored item as JSON (the shape of `aggregator items --json`)."""
    item = stored.item
    return {
        "id": stored.id,
        "key": item.key,
        "title": item.title,
        "url": item.url,
        "source": item.source,
        "kind": item.kind,
        "published": item.published.isoformat() if item.published else None,
        "first_seen": stored.first_seen.isoformat(),
        "authors": list(item.authors),
        "summary": item.summary_text,
        "arxiv_id": item.arxiv_id,
        "arxiv_version": item.arxiv_version,
        "repo": item.repo,
        "version": item.version,
        "prerelease": item.prerelease,
        "cluster_id": stored.cluster_id,
    }


def collect(settings: Settings, storage: Storage, now: datetime) -> dict[str, Any]:
    # Reads only (the review page asks for this after every decision): sources in feeds.yaml that no
    # run has mirrored yet have no row, are not failing, and are due now.
    configured = {s.name for s in settings.sources}
    sources = [row for row in storage.source_rows() if row["name"] in configured]
    return {
        "now": now.isoformat(),
        "config": str(settings.path),
        "items": storage.item_count(),
        "runs": [_run_json(run) for run in storage.recent_runs(5)],
        "sources": {
            "total": len(configured),
            "failing": [s for s in sources if s["error_count"]],
            "paused": [s["name"] for s in sources if s["paused"]],
        },
        "queue": storage.queue_counts(),
        "model": _model_status(settings),
        "decisions_since_model": _decisions_since_model(settings, storage),
        "next_jobs": _next_jobs(settings, now, sources),
    }


def describe(data: dict[str, Any]) -> list[str]:
    """The same as readable lines for a terminal."""
    lines = [f"items stored: {data['items']}"]
    runs = data["runs"]
    if runs:
        lines.append("last runs:")
        for run in runs:
            lines.append(
                f"  {run['started'][:19].replace('T', ' ')}  {run['kind']:8} {run['seconds']:7.1f} s  "
                f"{run['new']} new, {run['updated']} updated, {run['failed']}/{run['sources']} sources failed"
            )
    else:
        lines.append("no runs yet: try `aggregator run`")
    src = data["sources"]
    lines.append(f"sources: {src['total']}, failing {len(src['failing'])}, paused {len(src['paused'])}")
    for s in src["failing"]:
        paused = " (paused)" if s["paused"] else ""
        since = f"last success {s['last_success'][:16].replace('T', ' ')}" if s["last_success"] else "never succeeded"
        lines.append(f"  {s['name']}: {s['error_count']} consecutive errors{paused}, {since}: {s['last_error']}")
    queue = data["queue"]
    lines.append("queue: " + (", ".join(f"{k}: {v}" for k, v in queue.items()) or "empty"))
    model = data["model"]
    if model.get("version"):
        score = model.get("macro_f1")
        lines.append(f"model: {model['version']}" + (f" (holdout macro-F1 {score:.3f})" if score is not None else ""))
    else:
        lines.append(f"model: {model.get('note', 'none')}")
    lines.append(f"decisions since the live model: {data['decisions_since_model']}")
    for job in data["next_jobs"]:
        lines.append(f"next {job['job']}: {_when(job['at'], data['now'])}")
    return lines


def _when(at: str, now: str) -> str:
    """An ISO time as a short UTC time, "due now" when it has come; other text as it is."""
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return at
    if moment <= datetime.fromisoformat(now):
        return "due now"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _run_json(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": run["kind"],
        "started": run["started"].isoformat(),
        "finished": run["finished"].isoformat(),
        "seconds": (run["finished"] - run["started"]).total_seconds(),
        "new": run["new"],
        "updated": run["updated"],
        "sources": run["sources"],
        "failed": run["failed"],
    }


def _live_model(settings: Settings) -> tuple[str | None, Any]:
    """(live version, its registry info) or (None, None)."""
    from aggregator.classify.registry import Registry

    registry = Registry(settings.models_dir)
    live = registry.live_version()
    if live is None:
        return None, None
    return live, next((v for v in registry.versions() if v.version == live), None)


def _model_status(settings: Settings) -> dict[str, Any]:
    try:
        live, info = _live_model(settings)
    except ModelError as exc:
        return {"version": None, "note": str(exc)}
    if live is None:
        return {"version": None, "note": "no model: items are stored unclassified"}
    metrics = getattr(info, "metrics", None) or {}
    return {"version": live, "macro_f1": metrics.get("macro_f1"), "accuracy": metrics.get("accuracy")}


def _decisions_since_model(settings: Settings, storage: Storage) -> int:
    try:
        _, info = _live_model(settings)
    except ModelError:
        info = None
    return storage.decision_count(since=getattr(info, "created", None))


def _next_jobs(settings: Settings, now: datetime, sources: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The nightly run, then the next few source polls (paused and disabled sources wait for
    `sources resume` or feeds.yaml, so they have none)."""
    from aggregator.scheduler import nightly_trigger, source_job_id

    try:
        fire = nightly_trigger(settings, jitter=False).get_next_fire_time(None, now)
        jobs = [{"job": "nightly", "at": fire.isoformat() if fire else "never"}]
    except ConfigError as exc:
        jobs = [{"job": "nightly", "at": f"not scheduled: {exc}"}]
    enabled = {s.name for s in settings.sources if s.enabled}
    known = {row["name"] for row in sources}
    polls = sorted(
        [(max(datetime.fromisoformat(row["next_check"]) if row["next_check"] else now, now), row["name"])
         for row in sources if row["name"] in enabled and not row["paused"]]
        + [(now, name) for name in enabled - known]
    )  # fmt: skip
    jobs += [{"job": source_job_id(name), "at": at.isoformat()} for at, name in polls[:NEXT_POLLS_SHOWN]]
    return jobs
