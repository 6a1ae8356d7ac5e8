#!/usr/bin/env bash
# The main job: set up, index the bundled sample documents (examples/docs) and search them.
#
#   bash scripts/demo.sh                   # default model MrLight/dse-qwen2-2b-mrl-v1 (from the hub)
#   bash scripts/demo.sh /path/to/snapshot # a local copy of a model (any supported family)
#
# Where the hub cannot be reached and no model was given, the index step says so in one line;
# the demo then builds an offline random-weight tiny model so that the whole pipeline still
# runs end to end (its rankings are meaningless: random weights).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MODEL="${1:-MrLight/dse-qwen2-2b-mrl-v1}"
OUT="${DSE_DEMO_OUT:-out/demo}"
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== rendering examples/docs to $OUT/pages"
uv run --frozen dse render examples/docs --out "$OUT/pages" || [ $? -eq 1 ]

echo "== indexing examples/docs into $OUT/collection with $MODEL"
set +e
uv run --frozen dse index examples/docs --collection "$OUT/collection" --model "$MODEL"
status=$?
set -e
if [ $status -eq 3 ] && [ $# -eq 0 ]; then
  echo "== the hub is unreachable: continuing with an offline random-weight tiny model (rankings are meaningless)"
  rm -rf "$OUT/collection"
  uv run --frozen python -m dse.testing.tiny dse-qwen2 "$OUT/tiny-dse-qwen2"
  MODEL="$OUT/tiny-dse-qwen2"
  uv run --frozen dse index examples/docs --collection "$OUT/collection" --model "$MODEL"
elif [ $status -ne 0 ] && [ $status -ne 1 ]; then
  exit $status
fi

for q in "revenue by region table" "battery pricing" "how does a wind turbine work" "annual leave days"; do
  echo "== dse search \"$q\""
  uv run --frozen dse search --collection "$OUT/collection" "$q" -k 3
done
uv run --frozen dse stats --collection "$OUT/collection"
