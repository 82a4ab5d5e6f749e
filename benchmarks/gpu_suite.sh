#!/usr/bin/env bash
# dnprof's GPU checks and measurements in one run, each step under its own time limit, every
# step's full console output kept: the GPU tests, kernel breakdowns, compare and tune.
#
# Usage: benchmarks/gpu_suite.sh OUTDIR STEP[:SECONDS] ...
#   tests            python -m pytest -m gpu tests/gpu ($TESTS_K, a pytest -k expression, picks some: e.g. TESTS_K="not fla"
#                    leaves out the tests beside fla-core, whose first D = 256 fwd+bwd compile alone outlasted a
#                    265 s step on a fresh H200; run them after a compare has compiled fla-core's kernels)
#   breakdown        benchmarks/kernel_breakdown.py at D = 64, 128, 256, T = 4096 (default variants)
#   compare-D        dnprof compare at head dim D, T = 4096 and 16384, fwd and fwd+bwd, every provider
#                    ($SEQ_LENS and $PROVIDERS, comma lists, choose others: e.g. SEQ_LENS=2048,8192 or
#                    PROVIDERS=dnprof-chunk,fla-deltanet,fla-gla)
#   tune-D           dnprof tune at head dim D (fwd+bwd, chunk sizes 64 and 128; $TUNE_ARGS adds options, e.g.
#                    TUNE_ARGS="--budget 32,140s" or "--seq-len 16384 --mode fwd"), then copies the machine's tuning
#                    databases into OUTDIR as tuning-db-<gpu>.jsonl
#   warm-D           compile the baselines' kernels at head dim D ($WARM_PROVIDERS, default fla-deltanet,
#                    fla-gla,fla-recurrent) in one process each, side by side, before a compare-D step: the
#                    compiled kernels land in Triton's cache, their autotuning choices do not (they were
#                    timed beside each other), so the compare still autotunes each one alone, from compiled
#                    binaries, in seconds instead of minutes. Run one warm-D at a time: three of them side by
#                    side (nine processes on a 16-core H200 machine) left GLA's fwd+bwd compile unfinished at
#                    every head dim after 380 s, where one alone took about 130 s at D = 64. WARM_SPLIT=N runs N
#                    processes per baseline instead, each compiling a share of every autotuner's configs
#                    (benchmarks/split_autotune.py), e.g. WARM_PROVIDERS=fla-gla WARM_SPLIT=12 for GLA's fwd+bwd
#   forms-D          dnprof compare at head dim D, T = 4096 and 16384, fwd and fwd+bwd: the default beside
#                    its separate output kernel's forms (-os, -osv, -os128, -os128v, and -os/-osv at
#                    8-warp output tilings of BV 128 and the whole padded V) and fla-core
#   sweep            benchmarks/recurrence_sweep.py: the serial kernels' tilings at D = 64, 128, 256
#   sweep-waves      the same at T = 8192, where BV = 64 gives 128 programs (one wave on 132 SMs) and BV = 32
#                    two: the loops that store states and the reverse one at D = 256, 128 and 64
#                    (docs/performance.md, change 39: what set auto's BV = 64 threshold)
#   cache            pack Triton's cache ($TRITON_CACHE_DIR, set by benchmarks/device_env.sh) into
#                    OUTDIR/triton-cache.tgz.partaa, ab, ... (15 MiB each, under the 16 MiB a returned file may
#                    have); copy them to .tc/ and carry .tc to the next call, where device_env.sh unpacks them
#   bundle           pack everything in OUTDIR but the cache parts into OUTDIR/bundle-N.tgz (the first N free) and
#                    remove what it packed: a lent machine returns at most 8 files, and a warm-D step with
#                    WARM_SPLIT alone writes more logs than that. Last step of a call, or before cache
# e.g. benchmarks/gpu_suite.sh out tests:240 compare-128:300 tune-256:300 bundle
# A step that reaches its limit is reported with exit code 124 and the next step runs; results files
# already written by a cut compare stay valid (rows are written as they finish). Prints one line per
# step (name, exit code, seconds) and writes OUTDIR/summary.txt; nothing else is printed, so the
# summary stays readable when only the end of the output is kept.
set -uo pipefail
out="${1:?usage: benchmarks/gpu_suite.sh OUTDIR STEP[:SECONDS] ...}"
shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"

# one step's summary line: name, exit code, seconds since t0, a note
step_line() {
  printf '%-14s rc=%-3s %4ss  %s\n' "$1" "$2" "$((SECONDS - $3))" "$4"
}

run_step() {
  local name="$1" limit="$2"
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  step_line "$name" "$rc" "$t0" "$(tail -n 1 "$out/$name.log" | cut -c1-100)" \
    | tee -a "$out/summary.txt"
}

# after tune-D: the machine's tuning databases as they stand (every record, failures included) into OUTDIR as
# tuning-db-<file>, so they come back with the results; none there is no error
copy_tuning_dbs() {
  local tdir db
  tdir=$("$py" -c "from dnprof.variants.db import tuning_dir; print(tuning_dir())" 2>/dev/null) || return 0
  for db in "$tdir"/*.jsonl; do
    if [ -f "$db" ]; then cp "$db" "$out/tuning-db-$(basename "$db")"; fi
  done
  return 0
}

# bundle: OUTDIR's files and folders, the cache parts and earlier bundles left out, into the first free
# bundle-N.tgz, written under a temporary name and renamed, and only then removed; its summary line goes in first
bundle_outdir() {
  local items=() f n=1 t0=$SECONDS rc
  while [ -e "$out/bundle-$n.tgz" ]; do n=$((n + 1)); done
  printf '%-14s %s\n' bundle "packing into bundle-$n.tgz" >> "$out/summary.txt"
  for f in "$out"/* "$out"/.[!.]*; do
    [ -e "$f" ] || continue
    case "${f##*/}" in triton-cache.tgz.part* | bundle-*.tgz | bundle-*.tgz.tmp) continue ;; esac
    items+=("${f##*/}")
  done
  tar czf "$out/bundle-$n.tgz.tmp" -C "$out" "${items[@]}" && mv "$out/bundle-$n.tgz.tmp" "$out/bundle-$n.tgz" \
    && (cd "$out" && rm -rf -- "${items[@]}")
  rc=$?
  step_line bundle "$rc" "$t0" "${#items[@]} entries in bundle-$n.tgz"
  return $rc
}

# warm-D: each baseline's first fwd and fwd+bwd calls, one process per provider (WARM_SPLIT=N: N per provider,
# each compiling its share of every autotuner's configs, benchmarks/split_autotune.py), side by side; nothing
# is kept but the compiled kernels (their autotuning results are not cached: they were timed side by side).
warm_baselines() {
  local d="$1" p i pids=() rc=0 scratch n="${WARM_SPLIT:-1}"
  scratch=$(mktemp -d)  # their results files: timed side by side, so not kept
  for p in ${WARM_PROVIDERS//,/ }; do
    for ((i = 0; i < n; i++)); do
      local cmd=(-m dnprof) log="$out/warm-d$d-$p.log"
      [ "$n" -gt 1 ] && cmd=(benchmarks/split_autotune.py "$i" "$n" --) log="$out/warm-d$d-$p-$i.log"
      FLA_CACHE_RESULTS=0 TRITON_CACHE_AUTOTUNING=0 "$py" "${cmd[@]}" compare --seq-len "${SEQ_LENS%%,*}" \
        --head-dim "$d" --mode fwd,fwdbwd --providers "$p" --baseline "$p" --warmup 1 --rep 1 -j 0 \
        --verify-seq-len 256 --output "$scratch/$p-$i.json" > "$log" 2>&1 &
      pids+=($!)
    done
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  rm -rf "$scratch"
  return $rc
}
export -f warm_baselines
export out py WARM_SPLIT="${WARM_SPLIT:-1}" WARM_PROVIDERS="${WARM_PROVIDERS:-fla-deltanet,fla-gla,fla-recurrent}" SEQ_LENS="${SEQ_LENS:-4096,16384}"

for spec in "$@"; do
  step="${spec%%:*}"
  limit="${spec#*:}"
  [ "$limit" = "$spec" ] && limit=300
  case "$step" in
    tests) run_step tests "$limit" "$py" -m pytest -m gpu tests/gpu -v -s -p no:cacheprovider -rfEs \
      ${TESTS_K:+-k "$TESTS_K"} ;;
    breakdown) run_step breakdown "$limit" bash -c "for d in 64 128 256; do $py benchmarks/kernel_breakdown.py \
      --head-dim \$d --seq-len 4096 --variants selected --json '$out/breakdown-d'\$d'.jsonl' || exit; done" ;;
    compare-*) d="${step#compare-}"
      run_step "$step" "$limit" "$py" -m dnprof compare --seq-len "${SEQ_LENS:-4096,16384}" --head-dim "$d" \
        --mode fwd,fwdbwd ${PROVIDERS:+--providers "$PROVIDERS"} --output "$out/compare-d$d.json" ;;
    tune-*) d="${step#tune-}"
      run_step "$step" "$limit" "$py" -m dnprof tune --head-dim "$d" --chunk-size 64,128 \
        --output "$out/tune-d$d.json" ${TUNE_ARGS:-}
      copy_tuning_dbs ;;
    warm-*) d="${step#warm-}"
      run_step "$step" "$limit" bash -c 'warm_baselines "$@"' _ "$d" ;;
    forms-*) d="${step#forms-}"
      forms=$("$py" -c "import dataclasses, sys
from dnprof.variants.chunk_config import ChunkConfig, padded_dim
d = int(sys.argv[1])
base = dataclasses.replace(ChunkConfig.default_for(d, d, 64, 'bf16', 'fwdbwd'), fuse_output=False)
wide = sorted({f'bv{min(padded_dim(d), 128)}w8', f'bv{padded_dim(d)}w8'})
forms = [(oc, v, 'main') for oc in (0, 128) for v in (False, True)] + [(0, v, t) for t in wide for v in (False, True)]
print(','.join('dnprof-chunk-' + dataclasses.replace(base, output_chunk=oc, output_vloop=v, output_tiling=t)
               .validate(d, d).name for oc, v, t in forms))" "$d") || { echo "forms-$d: bad head dim" >&2; exit 2; }
      echo "$forms" > "$out/forms-d$d.providers"
      run_step "$step" "$limit" "$py" -m dnprof compare --seq-len 4096,16384 --head-dim "$d" --mode fwd,fwdbwd \
        --providers "dnprof-chunk,$forms,fla-deltanet" --output "$out/forms-d$d.json" ;;
    sweep) run_step sweep "$limit" "$py" benchmarks/recurrence_sweep.py --head-dim 64,128,256 \
      --seq-len 4096,16384 --warps 4,8 --stages 2,3 --json "$out/sweep.jsonl" ;;
    sweep-waves) run_step sweep-waves "$limit" bash -c "set -e
      $py benchmarks/recurrence_sweep.py --head-dim 256 --seq-len 8192 --kernels fwd_state_os,bwd_dh --bk 128,256 \
        --bv 32,64 --warps 4 --stages 2,3 --tma 1 --json '$out/sweep-waves.jsonl'
      $py benchmarks/recurrence_sweep.py --head-dim 128 --seq-len 8192 --kernels fwd_state_os,bwd_dh --bk 128 \
        --bv 32,64 --warps 4 --stages 2,3 --tma 1 --json '$out/sweep-waves.jsonl'
      $py benchmarks/recurrence_sweep.py --head-dim 64 --seq-len 8192 --kernels fwd_state_ofs,bwd_dh --bk 64 \
        --bv 32,64 --warps 4 --stages 2,3 --tma 1 --json '$out/sweep-waves.jsonl'" ;;
    cache) cache="${TRITON_CACHE_DIR:?cache: source benchmarks/device_env.sh first}"
      run_step cache "$limit" bash -c "tar czf - -C '$(dirname "$cache")' '$(basename "$cache")' \
        | split -b 15m - '$out/triton-cache.tgz.part' && ls -l '$out'/triton-cache.tgz.part*" ;;
    bundle) bundle_outdir ;;
    *) echo "unknown step: $step (tests, breakdown, compare-D, tune-D, warm-D, forms-D, sweep, sweep-waves, cache, bundle)" >&2; exit 2 ;;
  esac
done
