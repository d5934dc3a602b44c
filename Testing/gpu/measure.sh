#!/usr/bin/env bash
# One call on a GPU machine: the engine and UA-MT's own code side by side; results in docs/benchmarks/gpu/.
#
#   Testing/gpu/measure.sh [UA-MT-CHECKOUT] [measure.py options, e.g. --data LA-DATASET]
#
# Stops by itself within MEASURE_SECONDS (default 450) and keeps what it measured: results.jsonl gets a
# line per measurement as soon as it exists, results.md is rewritten after each. Wheels in .whl/ (for a
# machine without internet: see docs/benchmarks/gpu/README.md) are installed into a private folder first.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
total="${MEASURE_SECONDS:-450}"
start=$SECONDS
if ls "$root"/.whl/*.whl >/dev/null 2>&1; then
  site="${TMPDIR:-/tmp}/semiseg-measure-site"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$root"/.whl/*.whl || { echo "measure.sh: could not install the wheels in .whl/" >&2; exit 2; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root/SemiSegTogether${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
reference=()
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then reference=(--reference "$1"); shift; fi
left=$((total - (SECONDS - start)))
# measure.py plans within --budget; timeout is the hard stop if one measurement overruns.
timeout -k 5 "$left" "$python" "$here/measure.py" --budget "$((left - 20))" ${reference[@]+"${reference[@]}"} "$@"
code=$?
[ $code -eq 124 ] && echo "measure.sh: stopped after $total s; the results so far are kept" >&2
exit $code
