"""The tuning database: one append-only JSON-lines file per GPU, reused across runs and machines.

Location: ``$DNPROF_TUNING_DIR`` or ``$XDG_CACHE_HOME/dnprof/tuning`` (``~/.cache/dnprof/tuning``),
file ``<gpu-slug>-cc<major.minor>.jsonl``; ``dnprof tune --db PATH`` picks another file.

Format (one JSON object per line)::

    {"dnprof_tuning_db": 1, "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
     "created": "2025-...", "dnprof": "0.1.0"}                                     <- header, line 1
    {"stage": "verify", "key": {...}, "candidate": "chunk:c64-...", "config": {...},
     "status": "ok", "errors": {"o": 4e-3, ...}, "tolerance": 0.01, "verify": {"B":1,"T":1024,"H":4}, ...}
    {"stage": "time", "key": {...}, "candidate": ..., "config": ..., "status": "ok",
     "round": 0, "rep_ms": 20, "ms": 1.23, "ms_p20": ..., "ms_p80": ..., "shape": {"B":..,"T":..,"H":..}}

``key`` holds everything that makes a result stale: GPU name and compute capability, the Triton
version, a hash of dnprof's kernel sources (``dnprof/kernels/*.py``), dtype, K, V, mode, the
sequence-length bucket (next power of two of T, clamped to 1024..65536) and the family. A record
whose key differs from the current one in any field is simply never matched (stale, kept on disk).

Stages: ``verify`` (the candidate's check against float64, or why it could not run: invalid,
out-of-resources, compile-error, runtime-error, out-of-memory, failed-verification), ``time`` (one
timing round), ``start`` / ``interrupted`` (a candidate in flight in the main process; a start with
no result, written by a process that died, counts as a crash, and two crashes record the candidate
as a runtime error so a resumed run never loops on a kernel that kills the process), ``reset``
(``--force``: earlier records of that key are ignored), ``baseline`` (a peer timed at the same
shape, e.g. fla-core) and ``imported`` results carry ``"imported": true``.

Every record is flushed and fsynced as it is written, so a crash or Ctrl-C loses at most the
candidate in flight. A torn last line (crash mid-write) is tolerated with a warning and cut off
before the next append; any other unreadable line, a file without the header, a newer format or
another GPU's file raises :class:`DatabaseError` naming the file, the line and the reason.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import dnprof

DB_FORMAT = 1
EXPORT_FORMAT = 1
#: Stages a record may have (see the module docstring).
STAGES = ("verify", "time", "start", "interrupted", "reset", "baseline")
#: Failure types a verify record may carry besides ``ok``.
FAILURES = ("invalid", "out-of-resources", "compile-error", "runtime-error", "out-of-memory", "failed-verification")
KEY_FIELDS = ("gpu", "compute_capability", "triton", "kernel_hash", "dtype", "K", "V", "mode", "t_bucket", "family")
T_BUCKET_MIN, T_BUCKET_MAX = 1024, 65536
#: Crashes (a start record with no result) after which a candidate is recorded as a runtime error.
MAX_CRASHES = 2


class DatabaseError(ValueError):
    """A tuning database (or export file) that cannot be used: names the file, line and reason."""

    def __init__(self, path: str | os.PathLike, line: int | None, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {reason}")


# --------------------------------------------------------------------------------------- identity
def seq_bucket(T: int) -> int:
    """The sequence-length bucket of ``T``: next power of two, clamped to 1024..65536."""
    b = 1 << max(0, int(T) - 1).bit_length()
    return max(T_BUCKET_MIN, min(T_BUCKET_MAX, b))


def dtype_name(dtype: Any) -> str:
    """``bf16`` / ``fp16`` / ``fp32`` for a torch dtype or one of those names."""
    s = str(dtype).replace("torch.", "")
    names = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "half": "fp16", "fp16": "fp16",
             "float32": "fp32", "float": "fp32", "fp32": "fp32"}
    if s not in names:
        raise ValueError(f"dtype: expected bf16, fp16 or fp32, got {dtype!r}")
    return names[s]


@functools.lru_cache(maxsize=1)
def kernel_source_hash() -> str:
    """A short sha256 over dnprof's kernel sources (``dnprof/kernels/*.py``): changes make records stale."""
    root = Path(dnprof.__file__).resolve().parent / "kernels"
    h = hashlib.sha256()
    for p in sorted(root.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def triton_version() -> str:
    """The installed Triton version (without importing it), or ``none``."""
    import importlib.metadata

    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def gpu_slug(name: str) -> str:
    """A file-name-safe lower-case form of a GPU name (``nvidia-h100-80gb-hbm3``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def tuning_dir() -> Path:
    """The folder of the per-GPU tuning databases."""
    env = os.environ.get("DNPROF_TUNING_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "dnprof" / "tuning"


def default_db_path(gpu: str, compute_capability: str) -> Path:
    """``<tuning dir>/<gpu-slug>-cc<cc>.jsonl``."""
    return tuning_dir() / f"{gpu_slug(gpu)}-cc{compute_capability}.jsonl"


@dataclass(frozen=True)
class TuneKey:
    """Everything that makes a tuning result stale; records match a key only on every field."""

    gpu: str
    compute_capability: str
    triton: str
    kernel_hash: str
    dtype: str
    K: int
    V: int
    mode: str
    t_bucket: int
    family: str

    @classmethod
    def make(cls, gpu: str, compute_capability: str, dtype: Any, K: int, V: int, mode: str, T: int,
             family: str = "chunk", triton: str | None = None, kernel_hash: str | None = None) -> "TuneKey":
        """A key for the current Triton and kernel sources (overridable) at sequence length ``T``."""
        return cls(gpu=gpu, compute_capability=str(compute_capability),
                   triton=triton_version() if triton is None else triton,
                   kernel_hash=kernel_source_hash() if kernel_hash is None else kernel_hash,
                   dtype=dtype_name(dtype), K=int(K), V=int(V), mode=mode, t_bucket=seq_bucket(T), family=family)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "TuneKey":
        """Inverse of :meth:`to_dict`; ValueError on missing or mistyped fields."""
        if not isinstance(d, dict):
            raise ValueError("key is not an object")
        missing = [f for f in KEY_FIELDS if f not in d]
        if missing:
            raise ValueError(f"key lacks {missing}")
        try:
            return cls(gpu=str(d["gpu"]), compute_capability=str(d["compute_capability"]), triton=str(d["triton"]),
                       kernel_hash=str(d["kernel_hash"]), dtype=dtype_name(d["dtype"]), K=int(d["K"]), V=int(d["V"]),
                       mode=str(d["mode"]), t_bucket=int(d["t_bucket"]), family=str(d["family"]))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"key: {exc}") from None

    def shape_part(self) -> tuple:
        """The problem part of the key (dtype, K, V, mode, bucket, family), without machine/software."""
        return (self.dtype, self.K, self.V, self.mode, self.t_bucket, self.family)


def config_id(config: dict[str, Any]) -> str:
    """Canonical JSON of a config dict: the identity of a candidate within a key."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def now_iso() -> str:
    """The current UTC time, ISO format, seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------- summaries
@dataclass
class CandidateState:
    """What the records of one key say about one candidate."""

    candidate: str
    family: str
    config: dict[str, Any]
    verify: dict[str, Any] | None = None  # the last verify record
    times: dict[int, dict[str, Any]] = field(default_factory=dict)  # round -> last time record
    crashes: int = 0
    imported: bool = False

    @property
    def failure(self) -> str | None:
        """The failure type, or None when verified (or not yet checked)."""
        if self.verify is None:
            return None
        st = self.verify.get("status")
        return None if st == "ok" else st

    @property
    def verified(self) -> bool:
        return self.verify is not None and self.verify.get("status") == "ok"

    @property
    def best_time(self) -> dict[str, Any] | None:
        """The ok time record of the deepest round (longest measurement), if any."""
        ok = {r: t for r, t in self.times.items() if t.get("status") == "ok" and t.get("ms")}
        return ok[max(ok)] if ok else None

    @property
    def timing_failure(self) -> dict[str, Any] | None:
        """The last failed time record, if the candidate failed while being timed."""
        bad = [t for t in self.times.values() if t.get("status") != "ok"]
        return bad[-1] if bad else None


def rank_candidates(states: Iterable[CandidateState]) -> list[CandidateState]:
    """Verified, timed candidates best first: deepest round reached, then median time."""
    timed = [s for s in states if s.best_time is not None and (s.verified or s.imported) and s.timing_failure is None]
    return sorted(timed, key=lambda s: (-s.best_time.get("round", 0), s.best_time["ms"]))


# --------------------------------------------------------------------------------------- database
class TuningDB:
    """A per-GPU JSON-lines tuning database: load, query per key, append durable records."""

    def __init__(self, path: str | os.PathLike, gpu: str | None = None, compute_capability: str | None = None):
        self.path = Path(path).expanduser()
        self.gpu = gpu
        self.compute_capability = None if compute_capability is None else str(compute_capability)
        self.header: dict[str, Any] | None = None
        self.records: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self._torn_tail: int | None = None  # byte offset where a torn last line starts
        self._fh = None
        self._load()

    # ------------------------------------------------------------------ reading
    def _load(self) -> None:
        if not self.path.exists():
            return
        if self.path.is_dir():
            raise DatabaseError(self.path, None, "is a folder, not a tuning database file")
        data = self.path.read_bytes()
        if not data.strip(b"\0 \t\r\n"):
            self._torn_tail = 0 if data else None
            return
        lines = data.split(b"\n")
        ends_with_newline = data.endswith(b"\n")
        if ends_with_newline:
            lines = lines[:-1]
        offset = 0
        parsed: list[tuple[int, dict[str, Any]]] = []
        for i, raw in enumerate(lines, start=1):
            start = offset
            offset += len(raw) + 1
            last = i == len(lines)
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
            except (UnicodeDecodeError, ValueError) as exc:
                if last:
                    self.warnings.append(f"{self.path}:{i}: ignoring a torn last line (a run was cut off while "
                                         f"writing it); it is removed on the next write")
                    self._torn_tail = start
                    break
                if i == 1:
                    raise DatabaseError(self.path, 1, "not a dnprof tuning database (line 1 is not the JSON header "
                                        "{\"dnprof_tuning_db\": 1, ...})") from None
                raise DatabaseError(self.path, i, f"corrupt record ({exc}); fix or delete this line, or use another --db") from None
            parsed.append((i, obj))
        if not parsed:  # only a torn header: an interrupted first write
            self._torn_tail = 0
            return
        first_line, header = parsed[0]
        if first_line != 1 or "dnprof_tuning_db" not in header:
            raise DatabaseError(self.path, first_line, "not a dnprof tuning database (no {\"dnprof_tuning_db\": 1, ...} header)")
        version = header.get("dnprof_tuning_db")
        if not isinstance(version, int) or version < 1:
            raise DatabaseError(self.path, 1, f"bad header format version {version!r}")
        if version > DB_FORMAT:
            raise DatabaseError(self.path, 1, f"format version {version} is newer than this dnprof reads ({DB_FORMAT}): upgrade dnprof")
        for fld in ("gpu", "compute_capability"):
            if not isinstance(header.get(fld), str):
                raise DatabaseError(self.path, 1, f"header lacks {fld!r}")
        if self.gpu is not None and (header["gpu"], header["compute_capability"]) != (self.gpu, self.compute_capability):
            raise DatabaseError(self.path, 1, f"is the tuning database of {header['gpu']} (cc {header['compute_capability']}), "
                                f"not of this GPU {self.gpu} (cc {self.compute_capability}); use --db to pick another file")
        self.gpu, self.compute_capability = header["gpu"], header["compute_capability"]
        self.header = header
        for i, obj in parsed[1:]:
            self._check_record(obj, i)
            self.records.append(obj)

    def _check_record(self, rec: dict[str, Any], line: int) -> None:
        stage = rec.get("stage")
        if stage not in STAGES:
            raise DatabaseError(self.path, line, f"corrupt record: stage {stage!r} is not one of {STAGES}")
        try:
            TuneKey.from_dict(rec.get("key"))
        except ValueError as exc:
            raise DatabaseError(self.path, line, f"corrupt record: {exc}") from None
        if stage in ("verify", "time", "start", "interrupted"):
            if not isinstance(rec.get("config"), dict) or not isinstance(rec.get("candidate"), str):
                raise DatabaseError(self.path, line, "corrupt record: no candidate/config")
        if stage == "time" and rec.get("status") == "ok" and not isinstance(rec.get("ms"), (int, float)):
            raise DatabaseError(self.path, line, "corrupt record: an ok time record without ms")

    def keys(self) -> list[TuneKey]:
        """Every distinct key in the file, in first-seen order."""
        seen: dict[TuneKey, None] = {}
        for rec in self.records:
            seen.setdefault(TuneKey.from_dict(rec["key"]), None)
        return list(seen)

    def records_for(self, key: TuneKey) -> list[dict[str, Any]]:
        """The records of ``key`` written after its last reset (``--force``)."""
        kd = key.to_dict()
        recs = [r for r in self.records if r["key"] == kd]
        for i in range(len(recs) - 1, -1, -1):
            if recs[i]["stage"] == "reset":
                return recs[i + 1:]
        return recs

    def candidates(self, key: TuneKey) -> dict[str, CandidateState]:
        """Per candidate (config id), the state the records of ``key`` describe."""
        states: dict[str, CandidateState] = {}
        open_starts: dict[str, int] = {}
        for rec in self.records_for(key):
            stage = rec["stage"]
            if stage in ("reset", "baseline"):
                continue
            cid = config_id(rec["config"])
            st = states.get(cid)
            if st is None:
                st = states[cid] = CandidateState(rec["candidate"], rec["key"]["family"], rec["config"])
            if stage == "start":
                open_starts[cid] = open_starts.get(cid, 0) + 1
            elif stage == "interrupted":
                open_starts[cid] = max(0, open_starts.get(cid, 0) - 1)
            else:
                if open_starts.get(cid):
                    open_starts[cid] -= 1
                if stage == "verify":
                    st.verify = rec
                else:
                    st.times[int(rec.get("round", 0))] = rec
                    st.imported = st.imported or bool(rec.get("imported"))
        for cid, n in open_starts.items():
            states[cid].crashes = n
        return states

    def best(self, key: TuneKey) -> CandidateState | None:
        """The best verified, timed candidate of ``key``, or None."""
        ranked = rank_candidates(self.candidates(key).values())
        return ranked[0] if ranked else None

    def baseline(self, key: TuneKey, provider: str, version: str | None) -> dict[str, Any] | None:
        """The last baseline record of ``provider`` (at ``version``) for ``key``."""
        found = None
        for rec in self.records_for(key):
            if rec["stage"] == "baseline" and rec.get("provider") == provider and rec.get("version") == version:
                found = rec
        return found

    # ------------------------------------------------------------------ writing
    def _open_for_append(self):
        if self._fh is not None:
            return self._fh
        if self.gpu is None or self.compute_capability is None:
            raise DatabaseError(self.path, None, "cannot create a tuning database without knowing the GPU")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "ab")
        if self._torn_tail is not None:
            fh.truncate(self._torn_tail)
            self._torn_tail = None
            fh.seek(0, os.SEEK_END)
        if fh.tell() > 0:
            with open(self.path, "rb") as rd:
                rd.seek(-1, os.SEEK_END)
                if rd.read(1) != b"\n":
                    fh.write(b"\n")
        if self.header is None:
            self.header = {"dnprof_tuning_db": DB_FORMAT, "gpu": self.gpu, "compute_capability": self.compute_capability,
                           "created": now_iso(), "dnprof": dnprof.__version__}
            self._write_line(fh, self.header, sort_keys=False)
        self._fh = fh
        return fh

    @staticmethod
    def _write_line(fh, obj: dict[str, Any], sort_keys: bool = True) -> None:
        fh.write((json.dumps(obj, sort_keys=sort_keys, allow_nan=True) + "\n").encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append one record durably (written, flushed and fsynced before returning)."""
        if record.get("stage") not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {record.get('stage')!r}")
        rec = dict(record)
        rec.setdefault("date", now_iso())
        fh = self._open_for_append()
        self._write_line(fh, rec)
        self.records.append(rec)
        return rec

    def record(self, stage: str, key: TuneKey, candidate: str | None = None, config: dict[str, Any] | None = None,
               **fields: Any) -> dict[str, Any]:
        """Append a record of ``stage`` for ``key`` (and a candidate) with extra fields."""
        rec: dict[str, Any] = {"stage": stage, "key": key.to_dict()}
        if candidate is not None:
            rec["candidate"] = candidate
            rec["config"] = config
        rec.update(fields)
        return self.append(rec)

    def reset(self, key: TuneKey) -> None:
        """Forget earlier results of ``key`` (``--force``): an appended reset record hides them."""
        self.record("reset", key)

    def close(self) -> None:
        """Close the append handle (records are already durable)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "TuningDB":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_db(path: str | os.PathLike | None, gpu: str, compute_capability: str) -> TuningDB:
    """The database at ``path`` (default: this GPU's file), checked to belong to ``gpu``."""
    p = default_db_path(gpu, compute_capability) if path is None else Path(path)
    return TuningDB(p, gpu=gpu, compute_capability=str(compute_capability))


# --------------------------------------------------------------------------------------- export
def export_entry(key: TuneKey, state: CandidateState) -> dict[str, Any]:
    """One exported entry: the key's fields, the best config and its figures."""
    t = state.best_time or {}
    entry = key.to_dict()
    entry.update({
        "dnprof": dnprof.__version__,
        "candidate": state.candidate,
        "config": state.config,
        "ms": t.get("ms"),
        "round": t.get("round", 0),
        "rep_ms": t.get("rep_ms"),
        "shape": t.get("shape"),
        "errors": (state.verify or {}).get("errors", t.get("errors", {})),
        "tolerance": (state.verify or {}).get("tolerance", t.get("tolerance")),
    })
    return entry


def export_best(dbs: Iterable[TuningDB]) -> dict[str, Any]:
    """The best record per key of every database, as an export document."""
    entries = []
    for db in dbs:
        for key in db.keys():
            best = db.best(key)
            if best is not None:
                entries.append(export_entry(key, best))
    return {"dnprof_tuned_configs": EXPORT_FORMAT, "dnprof": dnprof.__version__, "exported": now_iso(), "entries": entries}


def read_export(path: str | os.PathLike, text: str | None = None) -> list[dict[str, Any]]:
    """Read and check an export (or the shipped) file; DatabaseError naming the file and entry on problems."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8") if text is None else text
    except FileNotFoundError:
        raise DatabaseError(path, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatabaseError(path, None, f"cannot read: {exc}") from None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DatabaseError(path, exc.lineno, f"not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict) or "dnprof_tuned_configs" not in doc:
        raise DatabaseError(path, None, "not a dnprof tuned-configs file (no \"dnprof_tuned_configs\" field)")
    if not isinstance(doc["dnprof_tuned_configs"], int) or doc["dnprof_tuned_configs"] > EXPORT_FORMAT:
        raise DatabaseError(path, None, f"format {doc['dnprof_tuned_configs']!r} is not one this dnprof reads ({EXPORT_FORMAT})")
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise DatabaseError(path, None, "\"entries\" must be a list")
    out = []
    for i, e in enumerate(entries):
        try:
            if not isinstance(e, dict):
                raise ValueError("not an object")
            key = TuneKey.from_dict(e)
            if key.family not in ("chunk", "recurrent"):
                raise ValueError(f"family {key.family!r} is not chunk or recurrent")
            if not isinstance(e.get("config"), dict):
                raise ValueError("no config")
            config_from_dict(key.family, e["config"]).validate(key.K, key.V)
            if not isinstance(e.get("ms"), (int, float)) or not e["ms"] > 0:
                raise ValueError("ms must be a positive number")
        except (ValueError, TypeError) as exc:
            raise DatabaseError(path, None, f"entry {i}: {exc}") from None
        out.append(e)
    return out


def config_from_dict(family: str, d: dict[str, Any]):
    """The ChunkConfig / RecurrentConfig for ``family`` from its dict (ConfigError on bad values)."""
    if family == "chunk":
        from dnprof.variants.chunk_config import ChunkConfig

        return ChunkConfig.from_dict(d)
    if family == "recurrent":
        from dnprof.variants.recurrent_config import RecurrentConfig

        return RecurrentConfig.from_dict(d)
    raise ValueError(f"family must be chunk or recurrent, got {family!r}")


def import_entries(db: TuningDB, entries: Iterable[dict[str, Any]], source: str) -> int:
    """Append exported entries of ``db``'s GPU as imported records; returns how many were added."""
    n = 0
    for e in entries:
        key = TuneKey.from_dict(e)
        if (key.gpu, key.compute_capability) != (db.gpu, db.compute_capability):
            continue
        common = {"imported": True, "source": source}
        db.record("verify", key, e["candidate"], e["config"], status="ok", errors=e.get("errors") or {},
                  tolerance=e.get("tolerance"), **common)
        db.record("time", key, e["candidate"], e["config"], status="ok", ms=float(e["ms"]), round=int(e.get("round", 0)),
                  rep_ms=e.get("rep_ms"), shape=e.get("shape"), **common)
        n += 1
    return n


def iter_db_files(folder: Path | None = None) -> Iterator[Path]:
    """The tuning database files in the tuning folder."""
    folder = tuning_dir() if folder is None else folder
    if folder.is_dir():
        yield from sorted(folder.glob("*.jsonl"))
