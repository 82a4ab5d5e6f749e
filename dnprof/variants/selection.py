"""Which variant a kernel call uses: the user's tuned one, else the shipped one, else the default.

``select_chunk_config(K, V, T, dtype, mode)`` returns ``(config, source)`` with ``source``:

- ``"tuned"``: the best verified record in this GPU's tuning database (``dnprof tune``). Records
  count only for the same GPU name and compute capability, the same Triton version and the same
  kernel-source hash: editing ``dnprof/kernels/*.py`` makes every tuned record stale.
- ``"shipped"``: ``dnprof/data/tuned_configs.json`` (package data, the ``tune export`` format),
  measured by dnprof's maintainers. An entry counts for the same GPU name and compute capability,
  the same Triton major.minor and the same dnprof version; the kernel hash is not checked, because
  the shipped file is regenerated with each release and an editable checkout would otherwise never
  use it. Every config was verified against float64 when measured; a different Triton minor is not
  trusted because Triton's mis-compiles (see the guide) change between minors.
- ``"default"``: ``ChunkConfig.default_for(K, V, chunk_size, dtype, mode)``.

A record counts only at its own sequence bucket: the serial kernels' tiling follows the number of
programs, which the batch at that length sets, and a forward winner tuned at T = 4096 (output fused,
state held transposed) took 1.117 ms at T = 16384 on an H200 (sixth lease), against the default's 0.985 ms (fifth). The exact mode
is taken from either source before the other mode; a forward may then run the fwd+bwd winner of its
bucket (a sound forward), but fwd+bwd never runs a forward winner (one that fuses the output pays
for it in the backward: 4.04 ms fwd+bwd at D = 256, T = 4096, against the default's 3.20 ms).
A pick is per bucket, not per batch: ``chunk_delta_rule`` runs it only where the launch guard accepts it
at the call's (sequence, head) streams, else the default (:func:`dnprof.kernels.chunk.select_launchable`).
Lookups are cached per (shape, GPU) so a hot path pays once; :func:`clear_cache` forgets them
(the tuner calls it after writing). A corrupt user database only warns here (with the file and
line), so a training job falls back instead of crashing; ``dnprof tune`` reports it as an error.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import threading
import warnings
from pathlib import Path
from typing import Any

import dnprof

SOURCES = ("tuned", "shipped", "default")
_cache: dict[tuple, tuple[Any, str]] = {}
_lock = threading.Lock()
_db_cache: dict[str, Any] = {}


@functools.lru_cache(maxsize=1)
def current_gpu() -> tuple[str, str] | None:
    """(name, "major.minor") of CUDA device 0, or None without a GPU (or under the interpreter)."""
    import os

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(0)
        return props.name, f"{props.major}.{props.minor}"
    except Exception:
        return None


def clear_cache() -> None:
    """Forget cached selections and loaded databases (after tuning or importing)."""
    with _lock:
        _cache.clear()
        _db_cache.clear()
        _shipped_entries.cache_clear()


def _major_minor(version: str) -> str:
    return ".".join(str(version).split(".")[:2])


@functools.lru_cache(maxsize=4)
def _shipped_entries(path: str | None) -> tuple[dict[str, Any], ...]:
    """The shipped entries (package data or ``path``); an unreadable file warns and gives none."""
    from dnprof.variants.db import DatabaseError, read_export

    try:
        if path is None:
            res = importlib.resources.files("dnprof") / "data" / "tuned_configs.json"
            if not res.is_file():
                return ()
            return tuple(read_export("dnprof/data/tuned_configs.json", text=res.read_text(encoding="utf-8")))
        return tuple(read_export(path))
    except DatabaseError as exc:
        warnings.warn(f"dnprof: ignoring shipped tuned configs: {exc}", RuntimeWarning, stacklevel=3)
        return ()


def modes_that_serve(mode: str) -> tuple[str, ...]:
    """The record modes a call in ``mode`` may run, best first: a forward may run a fwd+bwd winner, not the reverse."""
    return ("fwd", "fwdbwd") if mode == "fwd" else ("fwdbwd",)


def _chunk_ok(config: dict[str, Any], chunk_size: int | None) -> bool:
    return chunk_size is None or config.get("chunk_size") == chunk_size


def _from_user_db(family: str, K: int, V: int, bucket: int, dtype: str, mode: str, gpu: tuple[str, str],
                  db_path: str | None, chunk_size: int | None) -> dict[str, Any] | None:
    """The best verified config tuned for exactly this shape's key (mode and bucket), or None."""
    from dnprof.variants.db import DatabaseError, TuneKey, TuningDB, default_db_path, rank_candidates

    path = Path(db_path) if db_path else default_db_path(*gpu)
    if not path.exists():
        return None
    db = _db_cache.get(str(path))
    if db is None:
        try:
            db = TuningDB(path, gpu=gpu[0], compute_capability=gpu[1])
        except DatabaseError as exc:
            warnings.warn(f"dnprof: ignoring the tuning database: {exc}", RuntimeWarning, stacklevel=4)
            db = False
        _db_cache[str(path)] = db
    if db is False:
        return None
    want = TuneKey.make(gpu[0], gpu[1], dtype, K, V, mode, bucket, family=family)
    ranked = [s for s in rank_candidates(db.candidates(want).values()) if _chunk_ok(s.config, chunk_size)]
    return ranked[0].config if ranked else None


def _from_shipped(family: str, K: int, V: int, bucket: int, dtype: str, mode: str, gpu: tuple[str, str],
                  shipped_path: str | None, chunk_size: int | None) -> dict[str, Any] | None:
    """The shipped config for exactly this GPU, shape, mode and bucket, or None."""
    from dnprof.variants.db import triton_version

    tv = _major_minor(triton_version())
    for e in _shipped_entries(shipped_path):
        if (e.get("gpu"), str(e.get("compute_capability"))) != gpu or e.get("family") != family:
            continue
        if e.get("dnprof") != dnprof.__version__ or _major_minor(e.get("triton", "")) != tv:
            continue
        if (e.get("dtype"), int(e.get("K", -1)), int(e.get("V", -1))) != (dtype, K, V):
            continue
        if not _chunk_ok(e["config"], chunk_size) or e.get("mode") != mode:
            continue
        if int(e.get("t_bucket", 0)) == bucket:
            return e["config"]
    return None


def _select(family: str, K: int, V: int, T: int, dtype: Any, mode: str, *, gpu: tuple[str, str] | None | bool = True,
            db_path: str | None = None, shipped_path: str | None = None,
            chunk_size: int | None = None) -> tuple[Any, str]:
    from dnprof.variants.db import config_from_dict, dtype_name, seq_bucket

    if gpu is True:
        gpu = current_gpu()
    dt, bucket = dtype_name(dtype), seq_bucket(T)
    ck = (family, int(K), int(V), bucket, dt, mode, gpu, db_path, shipped_path, chunk_size)
    hit = _cache.get(ck)
    if hit is not None:
        return hit
    with _lock:
        result = None
        sources = (("tuned", _from_user_db, db_path), ("shipped", _from_shipped, shipped_path))
        tries = [(m, s) for m in modes_that_serve(mode) for s in sources] if gpu else []
        for record_mode, (source, lookup, where) in tries:
            d = lookup(family, int(K), int(V), bucket, dt, record_mode, gpu, where, chunk_size)
            if d is None:
                continue
            try:
                cfg = config_from_dict(family, d)
                cfg.validate(int(K), int(V))
            except ValueError:
                continue
            result = (cfg, source)
            break
        if result is None:
            result = (_default(family, int(K), int(V), chunk_size, dt, mode), "default")
        _cache[ck] = result
        return result


def _default(family: str, K: int, V: int, chunk_size: int | None = None, dtype: Any = None,
             mode: str | None = None) -> Any:
    if family == "chunk":
        from dnprof.variants.chunk_config import ChunkConfig

        return ChunkConfig.default_for(K, V, 64 if chunk_size is None else chunk_size, dtype, mode)
    from dnprof.variants.recurrent_config import RecurrentConfig

    return RecurrentConfig.default_for(K, V)


def select_chunk_config(K: int, V: int, T: int, dtype: Any, mode: str = "fwdbwd", **where: Any) -> tuple[Any, str]:
    """The ChunkConfig for this GPU and shape, and its source: ``tuned``, ``shipped`` or ``default``.

    ``chunk_size=`` restricts the choice to that chunk size (None: any). ``where`` (tests, tools):
    ``gpu=(name, cc)`` or None, ``db_path=``, ``shipped_path=``.
    """
    return _select("chunk", K, V, T, dtype, mode, **where)


def select_recurrent_config(K: int, V: int, T: int, dtype: Any, mode: str = "fwdbwd", **where: Any) -> tuple[Any, str]:
    """The RecurrentConfig for this GPU and shape, and its source (as :func:`select_chunk_config`)."""
    return _select("recurrent", K, V, T, dtype, mode, **where)
