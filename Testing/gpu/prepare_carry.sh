#!/usr/bin/env bash
# Here, with internet: gather what a GPU machine without internet needs for Testing/gpu/measure.sh.
#
#   Testing/gpu/prepare_carry.sh UA-MT-CHECKOUT [LA-DATASET]
#
# Writes (all ignored by git, never committed):
#   .whl/          wheels missing on the GPU machine: monai, SimpleITK, tensorboardX (Python 3.12, x86-64)
#   .uamt/code/    UA-MT's code/ folder (without its data/ and model/ folders, which the script does not use)
#   .la-subset/    optional: 1 labeled, 1 unlabeled and 1 test case of LA-DATASET (more would not fit)
# and prints the size that will travel (the device tool takes 64 MiB in all, the repository included).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-python3}"
[ $# -ge 1 ] || { echo "usage: $0 UA-MT-CHECKOUT [LA-DATASET]" >&2; exit 2; }
checkout="$1"
[ -f "$checkout/code/train_LA_meanteacher_certainty_unlabel.py" ] || {
  echo "$0: $checkout/code/train_LA_meanteacher_certainty_unlabel.py not found (a checkout of github yulequan/UA-MT?)" >&2; exit 2; }
cd "$root"
# The versions of the lock file (constraints.txt), so that the GPU run uses what CI tests.
pin() { grep -i "^$1==" constraints.txt | head -1; }
mkdir -p .whl
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "$(pin monai)" "$(pin simpleitk)" "tensorboardX==2.6.5"
rm -rf .uamt && mkdir -p .uamt && cp -r "$checkout/code" .uamt/code && rm -rf .uamt/code/__pycache__
if [ $# -ge 2 ]; then
  PYTHONPATH="$root/SemiSegTogether" "$python" - "$2" .la-subset <<'PY'
import json, shutil, sys
from pathlib import Path
from semiseg.datasets import load_dataset
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
ds = load_dataset(src)
shutil.rmtree(dst, ignore_errors=True)
spec = {"name": ds.name, "labels": ds.labels, "training": [], "unlabeled": [], "test": []}
for split, cases in (("training", ds.training[:1]), ("unlabeled", ds.unlabeled[:1]), ("test", ds.test[:1])):
    for case in cases:
        entry = {}
        for key in ("image", "label"):
            path = getattr(case, key)
            if path is not None:
                (dst / path.parent.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dst / path.parent.name / path.name)
                entry[key] = f"{path.parent.name}/{path.name}"
        spec[split].append(entry)
(dst / "dataset.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
PY
fi
for d in .whl .uamt .la-subset; do [ -e "$d" ] && du -sh "$d"; done
echo "repository files: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes"
echo "run on the GPU machine: bash Testing/gpu/measure.sh .uamt$( [ $# -ge 2 ] && echo ' --data .la-subset')"
echo "(carry: .whl .uamt$( [ $# -ge 2 ] && echo ' .la-subset'))"
