"""The results file: one JSON document per run of ``compare``, ``tune`` or ``verify``.

Reports read results files only, so a report can be made on any machine from any GPU's results.
Files are written atomically (temporary file, fsync, rename) so an interrupted run never leaves a
half-written file, and read back with checks that name the file and the reason on any problem.

Layout::

    {"schema": "dnprof-results", "schema_version": 1, "kind": "compare" | "tune" | "verify",
     "command": "dnprof compare ...", "fingerprint": {...}, "rows": [ResultRow, ...]}
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

SCHEMA_NAME = "dnprof-results"
SCHEMA_VERSION = 1
KINDS = ("compare", "tune", "verify")
MODES = ("fwd", "fwdbwd")
#: Row status values: measured, failed its check against float64 (never timed), or could not run.
STATUSES = ("ok", "failed-verification", "error", "oom", "compile-error", "unavailable")
#: What a provider computes, which decides its reference.
COMPUTES = ("deltanet", "attention", "gla")


class ResultsFileError(ValueError):
    """A results file that is missing, unreadable, not dnprof's, or of a newer schema."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class ResultRow:
    """One measurement: a provider (and variant) at one shape, mode and dtype."""

    provider: str
    computes: str
    mode: str
    B: int
    T: int
    H: int
    K: int
    V: int
    dtype: str
    status: str
    device: str = "cuda"
    variant: str | None = None
    config: dict[str, Any] | None = None
    config_source: str | None = None  # tuned | shipped | default | explicit
    message: str | None = None
    ms: float | None = None
    ms_p20: float | None = None
    ms_p80: float | None = None
    tokens_per_s: float | None = None
    tflops: float | None = None
    peak_mem_mb: float | None = None
    roofline_ms: float | None = None
    errors: dict[str, float] = field(default_factory=dict)
    tolerance: float | None = None
    verify_T: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {self.status!r}")
        if self.computes not in COMPUTES:
            raise ValueError(f"computes: expected one of {COMPUTES}, got {self.computes!r}")
        if self.status == "ok" and (self.ms is None or not self.ms > 0):
            raise ValueError(f"ms: a row with status 'ok' needs a positive time, got {self.ms!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResultRow":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown row fields {unknown}")
        return cls(**data)


@dataclass
class ResultsFile:
    """A run's rows, the command that produced them and the machine fingerprint."""

    kind: str
    command: str
    fingerprint: dict[str, Any]
    rows: list[ResultRow] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_NAME,
            "schema_version": self.schema_version,
            "kind": self.kind,
            "command": self.command,
            "fingerprint": self.fingerprint,
            "rows": [r.to_dict() for r in self.rows],
        }


def _current_umask() -> int:
    """The process umask (read by setting and restoring it: POSIX has no plain getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_results(path: str | os.PathLike, results: ResultsFile) -> Path:
    """Write a results file atomically and return its path."""
    if results.kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {results.kind!r}")
    atomic_write_text(path, json.dumps(results.to_dict(), indent=1, allow_nan=True) + "\n")
    return Path(path)


def load_results(path: str | os.PathLike) -> ResultsFile:
    """Read and check one results file; any problem raises ResultsFileError naming file and reason."""
    path = Path(path)
    if not path.exists():
        raise ResultsFileError(path, "no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ResultsFileError(path, "not a text file, so not a dnprof results file") from None
    except json.JSONDecodeError as exc:
        raise ResultsFileError(path, f"not valid JSON ({exc.msg} at line {exc.lineno}), so not a dnprof results file") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_NAME:
        raise ResultsFileError(path, f"not a dnprof results file (no \"schema\": \"{SCHEMA_NAME}\")")
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise ResultsFileError(path, "schema_version is missing or not an integer")
    if version > SCHEMA_VERSION:
        raise ResultsFileError(
            path, f"schema version {version} is newer than this dnprof reads ({SCHEMA_VERSION}): upgrade dnprof"
        )
    kind = data.get("kind")
    if kind not in KINDS:
        raise ResultsFileError(path, f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(data.get("fingerprint"), dict):
        raise ResultsFileError(path, "fingerprint is missing")
    raw_rows = data.get("rows")
    if not isinstance(raw_rows, list):
        raise ResultsFileError(path, "rows must be a list")
    rows = []
    for i, raw in enumerate(raw_rows):
        if not isinstance(raw, dict):
            raise ResultsFileError(path, f"row {i} is not an object")
        try:
            rows.append(ResultRow.from_dict(raw))
        except (TypeError, ValueError) as exc:
            raise ResultsFileError(path, f"row {i}: {exc}") from None
    return ResultsFile(kind=kind, command=str(data.get("command", "")), fingerprint=data["fingerprint"],
                       rows=rows, schema_version=version)


def find_results_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively, ``*.json``) into a sorted list of results files."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ResultsFileError(p, "no such file or folder")
        if p.is_dir():
            files = sorted(f for f in p.rglob("*.json") if not f.name.startswith("."))
            if not files:
                raise ResultsFileError(p, "folder holds no results files (*.json)")
            found.extend(files)
        else:
            found.append(p)
    return found
