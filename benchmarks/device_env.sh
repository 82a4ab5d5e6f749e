# Source at the start of a command on a lent GPU machine (see ../shared/device/README.md), from the
# repository root: installs the carried wheels (.whl/*.whl) into /tmp/site, puts dnprof and them on
# PYTHONPATH, points Triton's cache (compiled kernels and autotuning results, fla-core's included) at
# .triton-cache and unpacks a cache carried from an earlier call (.tc/triton-cache.tgz.part*, made by
# `benchmarks/gpu_suite.sh OUT cache`). A fresh machine compiles everything again: fla-core's first
# calls at one head dim took 60-360 s each on an H200, and a carried cache takes that to seconds.
#   source benchmarks/device_env.sh && benchmarks/gpu_suite.sh "$OUT" compare-256:500 cache
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    || { echo "device_env: installing .whl/*.whl failed" >&2; return 1; }
fi
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-$PWD/.triton-cache}" TRITON_CACHE_AUTOTUNING=1 FLA_CACHE_RESULTS=1
mkdir -p "$TRITON_CACHE_DIR"
if ls .tc/triton-cache.tgz.part* > /dev/null 2>&1; then
  cat .tc/triton-cache.tgz.part* | tar xzf - -C "$(dirname "$TRITON_CACHE_DIR")" \
    || { echo "device_env: the carried Triton cache did not unpack" >&2; return 1; }
fi
