"""Train the starter model that ships in models/, so a new install classifies from its first run.

    python scripts/train_starter.py ../shared/data/labeled/dev.jsonl --models-dir models

Keeps the examples labeled with one of --labels (default: the four default sections), measures on
the newest 20% by date, then refits on every example (there is no live model to compare with) and
saves a new version, promoted to CURRENT. Its metadata.json says what it was trained on: the file
name, counts per label, the training-set hash, the date and the holdout scores.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from aggregator.classify.registry import MODEL_FILE, Registry
from aggregator.classify.train import read_labeled_jsonl, train_section_model
from aggregator.errors import AggregatorError

DEFAULT_LABELS = ("Trends", "State of the Art", "Miscellaneous", "Releases")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("labeled", type=Path, help="labeled JSON-lines file")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="models folder (default: models)")
    parser.add_argument("--labels", nargs="+", default=list(DEFAULT_LABELS), help="sections to train on")
    args = parser.parse_args(argv)
    try:
        return _train(args.labeled, args.models_dir, tuple(args.labels))
    except AggregatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _train(labeled: Path, models_dir: Path, labels: tuple[str, ...]) -> int:
    examples = read_labeled_jsonl(labeled)
    kept = [ex for ex in examples if ex.label in labels]
    print(f"{labeled.name}: {len(examples)} examples, {len(kept)} with one of {', '.join(labels)}")
    result = train_section_model(kept, labels, live=None, refit_on_all=True)
    registry = Registry(models_dir)
    version = registry.save(result, promote=True, note=f"starter model trained on {labeled.name}")
    size = (models_dir / version / MODEL_FILE).stat().st_size
    print(f"saved {version} to {models_dir} ({size / 1e6:.2f} MB), now live")
    print("counts: " + ", ".join(f"{label} {n}" for label, n in result.counts.items()))
    print(
        f"holdout (newest {result.n_holdout} by date, before the refit on all): "
        f"macro-F1 {result.metrics['macro_f1']:.3f}, accuracy {result.metrics['accuracy']:.3f}"
    )
    for label, scores in result.metrics["per_class"].items():
        print(f"  {label}: F1 {scores['f1']:.3f} (support {scores['support']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
