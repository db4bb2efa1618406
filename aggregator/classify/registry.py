"""Versioned models on disk.

    models/
      CURRENT                      the live version's name, one line
      v0001-20261126T0930/
        model.skops                the section Pipeline (skops format: no pickle)
        relevance.skops            the accept/reject Pipeline, when one was trained
        metadata.json              versions of the libraries, sha256 of each file, counts, metrics,
                                   the live model's metrics on the same holdout, what it was trained on

Safety:
- a version folder is written as a hidden temporary folder and renamed into place, and CURRENT is
  replaced by rename: a reader (or a crash) never sees half a model;
- loading checks each file's sha256 against metadata.json and refuses a mismatch;
- loading lets skops build only scikit-learn's own types plus TRUSTED_TYPES below; anything else
  in the file is refused before it is built;
- a model saved with another scikit-learn or skops version: another major version is refused;
  another minor version is loaded with a ModelVersionWarning naming both versions (scikit-learn
  keeps most estimators loadable across one minor release, and retraining fixes it for good); if
  it still fails to load, the ModelError names the version difference.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy
import scipy
import sklearn
import skops
import skops.io as skops_io
from sklearn.pipeline import Pipeline

from aggregator.classify.predict import RelevanceModel, SectionModel
from aggregator.classify.train import TrainResult
from aggregator.errors import ModelError

MODEL_FILE = "model.skops"
RELEVANCE_FILE = "relevance.skops"
METADATA_FILE = "metadata.json"
CURRENT_FILE = "CURRENT"
ABANDONED_SAVE_SECONDS = 3600
# Types outside scikit-learn/numpy/scipy that our Pipelines contain; nothing else is ever built.
TRUSTED_TYPES = (
    "aggregator.classify.features.docs_to_columns",
    "aggregator.classify.features.CompactTfidfVectorizer",
)
# Libraries whose versions must match for a saved model to be trusted to behave the same.
CHECKED_LIBRARIES = ("sklearn", "skops")

_Model = TypeVar("_Model", SectionModel, RelevanceModel)
_LOADED: dict[tuple[str, tuple[tuple[int, int], ...], str], SectionModel | RelevanceModel] = {}  # see _loaded
_LOADED_LOCK = threading.Lock()
_LOADED_MAX = 4
_VERSION_NAME = re.compile(r"^v(\d{4,})-\d{8}T\d{4}$")


class ModelVersionWarning(UserWarning):
    """A model was saved with another minor version of scikit-learn or skops."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One saved version, as `aggregator models` lists it."""

    version: str
    created: datetime
    metrics: dict[str, Any]
    live: bool
    trained_on: dict[str, Any]  # origins, counts, n_train, n_holdout, training-set hash
    live_metrics: dict[str, Any] | None = None
    has_relevance: bool = False
    note: str = ""


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "skops": skops.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }


class Registry:
    """The models folder: save, list, load and choose the live version."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)

    # --- reading -----------------------------------------------------------------------------

    def live_version(self) -> str | None:
        """The version CURRENT names, or None when there is no CURRENT (no model yet)."""
        current = self.models_dir / CURRENT_FILE
        try:
            name = current.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ModelError(f"cannot read {current}: {exc}") from exc
        if not name:
            return None
        if not (self.models_dir / name).is_dir():
            raise ModelError(f"{current} names version {name!r}, which is not in {self.models_dir}")
        return name

    def versions(self) -> list[ModelInfo]:
        """Every saved version, oldest first."""
        live = self.live_version()
        return [self._info(name, live=name == live) for name in self._version_names()]

    def load(self, version: str | None = None) -> SectionModel | None:
        """The section model of `version` (None: the live one); None when there is no model at all."""
        name = version or self.live_version()
        if name is None:
            return None
        return self._loaded(name, MODEL_FILE, SectionModel)

    def load_relevance(self, version: str | None = None) -> RelevanceModel | None:
        """The relevance model saved beside `version` (None: the live one); None when there is none."""
        name = version or self.live_version()
        if name is None or not (self._folder(name) / RELEVANCE_FILE).exists():
            return None
        return self._loaded(name, RELEVANCE_FILE, RelevanceModel)

    # --- writing -----------------------------------------------------------------------------

    def _clear_abandoned_saves(self) -> None:
        """A save killed mid-way (SIGKILL, power loss) leaves its staging folder behind; one untouched
        for an hour is no save in progress (a save takes seconds), so it goes."""
        cutoff = time.time() - ABANDONED_SAVE_SECONDS
        for folder in self.models_dir.glob(".saving-*"):
            with contextlib.suppress(OSError):  # another process may clear it at the same moment
                if folder.is_dir() and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder)

    def save(
        self,
        result: TrainResult,
        *,
        promote: bool,
        relevance: RelevanceModel | None = None,
        note: str = "",
        now: datetime | None = None,
    ) -> str:
        """Write a new version atomically and return its name; `promote` makes it live. The name
        is also stamped on result.model (and `relevance`), so their predictions carry it."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self._clear_abandoned_saves()
        created = (now or datetime.now(UTC)).astimezone(UTC)
        files = {MODEL_FILE: skops_io.dumps(result.model.pipeline)}
        if relevance is not None:
            files[RELEVANCE_FILE] = skops_io.dumps(relevance.pipeline)
        staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=self.models_dir))
        staging.chmod(0o755)  # mkdtemp makes it private; a model is read by the web server and others
        try:
            for file_name, data in files.items():
                _write_synced(staging / file_name, data)
            name = self._move_into_place(staging, files, result, created, note)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        result.model.version = name
        if relevance is not None:
            relevance.version = name
        if promote:
            self.use(name)
        return name

    def use(self, version: str) -> None:
        """Make `version` live (roll back or forward). Its files are checked before CURRENT moves."""
        if version not in self._version_names():
            known = ", ".join(self._version_names()) or "none"
            raise ModelError(f"unknown model version {version!r} (known: {known})")
        self._load_pipeline(version, MODEL_FILE)
        _replace_atomically(self.models_dir / CURRENT_FILE, (version + "\n").encode())

    # --- internals ---------------------------------------------------------------------------

    def _folder(self, version: str) -> Path:
        if not _VERSION_NAME.match(version):
            raise ModelError(f"{version!r} is not a model version name (like v0001-20261126T0930)")
        return self.models_dir / version

    def _version_names(self) -> list[str]:
        if not self.models_dir.is_dir():
            return []
        names = [p.name for p in self.models_dir.iterdir() if p.is_dir() and _VERSION_NAME.match(p.name)]
        return sorted(names, key=_version_number)

    def _next_number(self) -> int:
        return max((_version_number(name) for name in self._version_names()), default=0) + 1

    def _move_into_place(
        self, staging: Path, files: dict[str, bytes], result: TrainResult, created: datetime, note: str
    ) -> str:
        # Another trainer may take the same number between our look and our rename: try the next.
        for _ in range(100):
            name = f"v{self._next_number():04d}-{created:%Y%m%dT%H%M}"
            metadata = _metadata(name, files, result, created, note)
            _write_synced(staging / METADATA_FILE, json.dumps(metadata, indent=2).encode())
            try:
                staging.rename(self.models_dir / name)
            except OSError:
                if (self.models_dir / name).exists():
                    continue
                raise
            _sync_folder(self.models_dir)
            return name
        raise ModelError(f"could not find a free version name in {self.models_dir}")

    def _metadata(self, version: str) -> dict[str, Any]:
        path = self._folder(version) / METADATA_FILE
        try:
            metadata: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelError(f"model version {version} has no {METADATA_FILE} ({path})") from exc
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {path}: {exc}") from exc
        return metadata

    def _info(self, version: str, *, live: bool) -> ModelInfo:
        metadata = self._metadata(version)
        return ModelInfo(
            version=version,
            created=datetime.fromisoformat(metadata["created"]),
            metrics=metadata.get("metrics", {}),
            live=live,
            trained_on=metadata.get("trained_on", {}),
            live_metrics=metadata.get("live_metrics"),
            has_relevance=RELEVANCE_FILE in metadata.get("files", {}),
            note=metadata.get("note", ""),
        )

    def _loaded(self, version: str, file_name: str, make: type[_Model]) -> _Model:
        """The model in `file_name` of `version`, loaded once per process: a worker classifies batch
        after batch, and a load costs ~0.4 s. The key holds the file's size and change time, so a file
        or its metadata replaced or damaged since is loaded (and checked) again."""
        path = self._folder(version) / file_name
        try:
            files = (path.stat(), (path.parent / METADATA_FILE).stat())
            stamps = tuple((seen.st_size, seen.st_mtime_ns) for seen in files)
        except OSError as exc:
            raise ModelError(f"cannot read model file {self._display(path)}: {exc}") from exc
        key = (str(path.resolve()), stamps, make.__name__)
        with _LOADED_LOCK:
            found = _LOADED.get(key)
        if found is None:
            found = make(self._load_pipeline(version, file_name), version=version)
            with _LOADED_LOCK:
                _LOADED[key] = found
                while len(_LOADED) > _LOADED_MAX:  # the oldest goes: versions come and go
                    del _LOADED[next(iter(_LOADED))]
        assert isinstance(found, make)
        return found

    def _load_pipeline(self, version: str, file_name: str) -> Pipeline:
        metadata = self._metadata(version)
        path = self._folder(version) / file_name
        display = self._display(path)
        expected = metadata.get("files", {}).get(file_name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read model file {display}: {exc}") from exc
        if expected is None or hashlib.sha256(data).hexdigest() != expected:
            raise ModelError(f"model file {display} does not match its recorded hash; refusing to load")
        mismatch = _check_library_versions(metadata.get("libraries", {}), display)
        try:
            found_types = skops_io.get_untrusted_types(data=data)
        except Exception as exc:  # not a zip, no schema, bad JSON: reading the types is reading the file
            raise ModelError(f"cannot load model file {display}: {type(exc).__name__}: {exc}") from exc
        untrusted = [t for t in found_types if t not in TRUSTED_TYPES]
        if untrusted:
            raise ModelError(f"model file {display} contains untrusted types {untrusted}; refusing to load")
        try:
            pipeline = skops_io.loads(data, trusted=list(TRUSTED_TYPES))
        except Exception as exc:  # skops raises many kinds; all mean "this file cannot be used"
            reason = f" (saved with {mismatch})" if mismatch else ""
            raise ModelError(f"cannot load model file {display}{reason}: {exc}") from exc
        if not isinstance(pipeline, Pipeline):
            raise ModelError(f"model file {display} holds a {type(pipeline).__name__}, not a Pipeline")
        return pipeline

    def _display(self, path: Path) -> str:
        """The path as the user named the folder: "models/v0003-.../model.skops"."""
        return str(Path(self.models_dir.name) / path.relative_to(self.models_dir))


def _metadata(name: str, files: dict[str, bytes], result: TrainResult, created: datetime, note: str) -> dict[str, Any]:
    return {
        "version": name,
        "created": created.isoformat(timespec="seconds"),
        "libraries": library_versions(),
        "files": {file_name: hashlib.sha256(data).hexdigest() for file_name, data in files.items()},
        "labels": list(result.model.labels),
        "counts": result.counts,
        "trained_on": {
            "origins": result.origins,
            "counts": result.counts,
            "n_train": result.n_train,
            "n_holdout": result.n_holdout,
            "training_set_hash": result.training_set_hash,
            "refit_on_all": result.refit_on_all,
        },
        "metrics": result.metrics,
        "live_metrics": result.live_metrics,
        "live_version_at_training": result.live_version,
        "promoted_by_gate": result.promoted,
        "params": result.params,
        "note": note,
    }


def _check_library_versions(saved: dict[str, str], display: str) -> str:
    """Refuse another major version; warn about another minor one. Returns the difference, if any."""
    differences = []
    for library in CHECKED_LIBRARIES:
        then, now = saved.get(library), library_versions()[library]
        if then is None or _major_minor(then) == _major_minor(now):
            continue
        difference = f"{library} {then}, running {now}"
        if _major_minor(then)[0] != _major_minor(now)[0]:
            raise ModelError(f"model file {display} was saved with {difference}; retrain or reinstall")
        differences.append(difference)
    if differences:
        summary = "; ".join(differences)
        warnings.warn(f"model file {display} was saved with {summary}", ModelVersionWarning, stacklevel=3)
        return summary
    return ""


def _version_number(name: str) -> int:
    match = _VERSION_NAME.match(name)
    return int(match.group(1)) if match else 0


def _major_minor(version: str) -> tuple[int, int]:
    numbers = [int(n) for n in re.findall(r"\d+", version)[:2]]
    padded = [*numbers, 0, 0]
    return padded[0], padded[1]


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _replace_atomically(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        Path(temporary).chmod(0o644)  # mkstemp makes it private
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    # Make the rename itself durable; not every platform lets a folder be opened for this.
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
