"""Results files into pandas: one DataFrame row per measurement, one per run, for every report."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from dnprof.bench.fingerprint import gpu_label
from dnprof.bench.results import ResultsFile, ResultsFileError, find_results_files, load_results

#: Scalar fields of a ResultRow, in the order the flat frame shows them.
ROW_FIELDS = (
    "provider", "computes", "mode", "B", "T", "H", "K", "V", "dtype", "status", "device", "variant",
    "config_source", "message", "ms", "ms_p20", "ms_p80", "tokens_per_s", "tflops", "peak_mem_mb",
    "roofline_ms", "tolerance", "verify_T",
)
#: Per-run columns repeated on each of its rows.
RUN_FIELDS = (
    "gpu", "kind", "command", "file", "sm_count", "compute_capability", "driver", "cuda", "torch",
    "triton", "dnprof_version", "git_commit", "fla_core", "date",
)
#: Error figures in the order the accuracy table shows them; other names follow, sorted.
ERROR_NAMES = ("o", "ht", "dq", "dk", "dv", "dbeta", "dh0")
#: The columns that identify one shape on one GPU: rows agreeing on all of them are compared.
SHAPE_KEY = ["gpu", "mode", "B", "T", "H", "K", "V", "dtype"]


@dataclass
class ReportData:
    """The rows of every results file read, and one row per file (the run and its fingerprint)."""

    rows: pd.DataFrame
    runs: pd.DataFrame

    @property
    def gpus(self) -> list[str]:
        """GPU labels present, in first-seen order."""
        return list(dict.fromkeys(self.runs["gpu"])) if len(self.runs) else []


def _gpu_label(fp: dict[str, Any]) -> str:
    """The fingerprint's GPU label, tolerant of a fingerprint whose gpu entry lacks a name."""
    gpu = fp.get("gpu")
    if isinstance(gpu, dict) and "name" not in gpu:
        return "unknown GPU"
    return str(gpu_label(fp))


def run_facts(path: Path, results: ResultsFile) -> dict[str, Any]:
    """The per-run columns of one results file."""
    fp = results.fingerprint
    gpu = fp.get("gpu") if isinstance(fp.get("gpu"), dict) else {}
    return {
        "gpu": _gpu_label(fp),
        "kind": results.kind,
        "command": results.command,
        "file": str(path),
        "sm_count": gpu.get("sm_count"),
        "compute_capability": gpu.get("compute_capability"),
        "driver": gpu.get("driver"),
        "cuda": fp.get("cuda"),
        "torch": fp.get("torch"),
        "triton": fp.get("triton"),
        "dnprof_version": fp.get("dnprof"),
        "git_commit": fp.get("git_commit"),
        "fla_core": fp.get("fla_core"),
        "date": fp.get("date"),
    }


def frame_from_results(files: Iterable[tuple[Path, ResultsFile]]) -> ReportData:
    """Flatten loaded results files into the rows frame and the runs frame."""
    records: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for path, results in files:
        facts = run_facts(Path(path), results)
        statuses = [r.status for r in results.rows]
        runs.append({**facts, "rows": len(statuses), "ok": statuses.count("ok"),
                     "not_ok": len(statuses) - statuses.count("ok")})
        for row in results.rows:
            rec: dict[str, Any] = {name: getattr(row, name) for name in ROW_FIELDS}
            config = dict(row.config or {})
            extra = dict(row.extra or {})
            rec["config"] = config
            rec["errors"] = dict(row.errors or {})
            rec["extra"] = extra
            rec["winner"] = bool(extra.get("winner", False))
            rec["chunk_size"] = config.get("chunk_size")
            for name, value in rec["errors"].items():
                rec[f"err_{name}"] = value
            for name, value in config.items():
                rec[f"cfg_{name}"] = value
            rec.update(facts)
            records.append(rec)
    base = [*RUN_FIELDS, *ROW_FIELDS, "winner", "chunk_size", "config", "errors", "extra"]
    rows = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=base)
    extra_cols = sorted(c for c in rows.columns if c not in base)
    err_cols = [f"err_{n}" for n in ERROR_NAMES if f"err_{n}" in extra_cols]
    err_cols += [c for c in extra_cols if c.startswith("err_") and c not in err_cols]
    cfg_cols = [c for c in extra_cols if c.startswith("cfg_")]
    rows = rows.reindex(columns=[*base, *err_cols, *cfg_cols])
    for col in ("B", "T", "H", "K", "V"):
        if len(rows):
            rows[col] = rows[col].astype("int64")
    for col in ("ms", "ms_p20", "ms_p80", "tokens_per_s", "tflops", "peak_mem_mb", "roofline_ms", "tolerance",
                *err_cols):
        rows[col] = pd.to_numeric(rows[col], errors="coerce").astype("float64")
    rows["winner"] = rows["winner"].astype(bool)
    for col in ("chunk_size", "verify_T", *cfg_cols):
        values = rows[col].dropna()
        if values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()).all():
            rows[col] = pd.to_numeric(rows[col]).astype("Int64")
    run_cols = [*RUN_FIELDS, "rows", "ok", "not_ok"]
    return ReportData(rows=rows, runs=pd.DataFrame.from_records(runs, columns=run_cols))


def load_report_data(paths: Iterable[str | os.PathLike]) -> ReportData:
    """Read results files and folders (``*.json``, recursively); any bad file raises ResultsFileError."""
    files = find_results_files(list(paths))
    if not files:
        raise ResultsFileError(".", "no results files given")
    return frame_from_results((path, load_results(path)) for path in files)


def _json_cell(value: Any) -> Any:
    """Dict cells as JSON text so the CSV stays one value per cell."""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, allow_nan=True) if value else ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value


def flat_frame(data: ReportData) -> pd.DataFrame:
    """The rows frame with its dict columns (config, errors, extra) as JSON text."""
    flat = data.rows.copy()
    for col in ("config", "errors", "extra"):
        flat[col] = flat[col].map(_json_cell)
    return flat


def to_csv(data: ReportData) -> str:
    """The flat rows frame as CSV text."""
    return flat_frame(data).to_csv(index=False)
