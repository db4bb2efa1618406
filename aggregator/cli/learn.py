"""Classifier commands: learn import / import-archive, train, models, classify."""

from __future__ import annotations

import json
from pathlib import Path

import click

from aggregator.cli import App, fail, main, pass_app

# The classifier modules (scikit-learn) are imported inside the commands that use them, so that
# `aggregator --help` and every other command start without loading them.


@main.group()
def learn() -> None:
    """Bring in training data: labeled files and past newsletter issues."""


@learn.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_app
def learn_import(app: App, file: Path) -> None:
    """Import labeled examples from JSONL (title, summary, url, label, optional item_type, date)."""
    from aggregator.training import import_labeled_file

    report = import_labeled_file(app.storage, app.settings, file, app.now())
    for label, count in sorted(report.per_label.items()):
        click.echo(f"{label}: {count}")
    for label, count in sorted(report.outside.items()):
        click.echo(f"not a category, skipped: {label!r} ({count})")
    click.echo(f"{report.read} read, {report.added} new examples stored")


@learn.command("import-archive")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help='Print {"sections": {name: count}, "unplaced": [lines]}.')
@pass_app
def learn_import_archive(app: App, files: tuple[Path, ...], as_json: bool) -> None:
    """Import past newsletter issues (Markdown or text in the newsletter's own shape)."""
    from aggregator.training import import_archive

    result, report = import_archive(app.storage, app.settings, files, app.now())
    if as_json:
        click.echo(json.dumps({"sections": dict(result.sections), "unplaced": list(result.unplaced)}))
        return
    for section, count in result.sections.items():
        click.echo(f"{section}: {count}")
    for line in result.unplaced:
        click.echo(f"unplaced: {line}")
    click.echo(f"{len(result.examples)} items read, {report.added} new examples stored")


@main.command()
@click.option("--force", is_flag=True, help="Promote the new model even if it scores worse than the live one.")
@pass_app
def train(app: App, force: bool) -> None:
    """Train a new model version from decisions and imported examples; promote it if not worse."""
    from aggregator.training import retrain

    click.echo(retrain(app.settings, app.storage, app.now(), force=force).describe())


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per version.")
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List model versions with their holdout scores (* marks the live one)."""
    if ctx.invoked_subcommand is not None:
        return
    from aggregator.classify.registry import Registry

    app: App = ctx.obj
    versions = Registry(app.settings.models_dir).versions()
    if not versions:
        click.echo(f"no models in {app.settings.models_dir}")
    for info in versions:
        if as_json:
            record = {"version": info.version, "live": info.live, "created": info.created.isoformat(),
                      "metrics": info.metrics, "trained_on": info.trained_on, "note": info.note}  # fmt: skip
            click.echo(json.dumps(record, default=str))
            continue
        metrics = info.metrics
        marker = "*" if info.live else " "
        n_train = info.trained_on.get("n_train", "?")
        click.echo(
            f"{marker} {info.version}  macro-F1 {metrics.get('macro_f1', float('nan')):.3f}  "
            f"accuracy {metrics.get('accuracy', float('nan')):.3f}  trained on {n_train}  {info.note}".rstrip()
        )


@models.command("use")
@click.argument("version")
@pass_app
def models_use(app: App, version: str) -> None:
    """Make VERSION the live model (roll back or forward)."""
    from aggregator.classify.registry import Registry

    Registry(app.settings.models_dir).use(version)
    click.echo(f"live model: {version} (run `aggregator classify --rescore` to re-score the queue)")


@main.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rescore", is_flag=True, help="Re-classify stored items predicted by another model version.")
@pass_app
def classify(app: App, file: Path | None, rescore: bool) -> None:
    """Classify stored items that need it, or the items of FILE.jsonl (one JSON line out per line in)."""
    from aggregator.classify.features import doc_from_example
    from aggregator.classify.registry import Registry
    from aggregator.classify.stage import classify_pending
    from aggregator.training import read_items_jsonl

    if file is None:
        notes = classify_pending(app.storage, app.settings, app.now(), rescore=rescore)
        for note in notes:
            click.echo(f"note: {note}")
        click.echo("classified")
        return
    model = Registry(app.settings.models_dir).load()
    if model is None:
        fail(f"no model in {app.settings.models_dir}: run `aggregator train` first")
    examples = read_items_jsonl(file)
    docs = [doc_from_example(e) for e in examples]
    for doc, (section, confidence, terms) in zip(docs, model.predict(docs), strict=True):
        out = {"title": doc.title, "section": section, "confidence": round(confidence, 4),
               "item_type": doc.item_type, "top_terms": list(terms)}  # fmt: skip
        click.echo(json.dumps(out, ensure_ascii=False))
