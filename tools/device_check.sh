#!/usr/bin/env bash
# Issue 15's GPU measurements in one call on the lent H200 (Python 3.12, CUDA 13, PyTorch 2.11, JAX 0.11,
# no internet). Prepare here first with tools/device_prepare.sh (wheels the image lacks, the benchmark
# facesets), then, in ONE device call (about 9 minutes of its 10; the figures land in $OUT):
#
#   run(command="bash tools/device_check.sh train", timeout_s=600,
#       carry=[".whl/train", "build/bench/train/src", "build/bench/train/dst"])
#
# `scan` measures tools/bench_scan.py --device cuda once the scan stack's wheels (.whl/scan, too big for
# one call: send its parts in earlier calls, a warm machine keeps them) and the sample photos are there:
#
#   run(command="bash tools/device_check.sh scan", timeout_s=600, carry=[".whl/scan-1", "samples"]) ...
#
# Writes $OUT/device_train.json (every figure, the targets checked) and $OUT/device_check.log.
set -uo pipefail
PYTHON="${PYTHON:-python3}"  # the device image's python3 holds torch and jax
cd "$(dirname "$0")/.."
OUT="${OUT:-build/device}"
mkdir -p "$OUT"
what="${1:-train}"
site=/tmp/facesmith-site
mkdir -p "$site"
wheels=/tmp/facesmith-wheels
mkdir -p "$wheels"
# whole wheels as they came; wheels sent in parts (split -b, possibly over several calls' folders) joined
find .whl -name '*.whl' -exec cp -n {} "$wheels/" \; 2>/dev/null
for name in $(find .whl -name '*.whl.part-*' -printf '%f\n' 2>/dev/null | sed 's/\.part-..$//' | sort -u); do
  find .whl -name "$name.part-*" -printf '%f %p\n' | sort | cut -d' ' -f2 | xargs cat > "$wheels/$name"
done
want="$wheels"/*.whl
[ "$what" = train ] && want=$(ls "$wheels"/{keras,namex,optree,duckdb}-*.whl 2>/dev/null)
[ "$what" = smoke ] || "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
  $want >>"$OUT/device_check.log" 2>&1 || echo "wheel install failed" | tee -a "$OUT/device_check.log"
if [ "$what" = smoke ]; then export PYTHONPATH="$PWD"; else export PYTHONPATH="$site:$PWD"; fi
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
# a machine-local XLA cache: the bench runs of one model share their compilation
export JAX_COMPILATION_CACHE_DIR=/tmp/facesmith-jax-cache
{ nvidia-smi; "$PYTHON" -c "import torch, jax, keras; print('torch', torch.__version__, 'jax', jax.__version__, 'keras', keras.__version__, jax.devices())"; } \
  >>"$OUT/device_check.log" 2>&1
case "$what" in
  train) "$PYTHON" tools/device_check.py --out "$OUT" --only train --budget 540 ;;
  scan) "$PYTHON" tools/device_check.py --out "$OUT" --only scan --budget 540 ;;
  smoke) "$PYTHON" tools/device_check.py --out "$OUT" --only train --cpu-smoke --budget 1500 ;;
  *) echo "usage: $0 train|scan|smoke"; exit 2 ;;
esac
