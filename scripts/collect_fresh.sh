#!/usr/bin/env bash
# Collects the fresh out-of-sample traces (issue 9): the tasks of data/tasks/ (scripts/make_fresh_tasks.py)
# through `serve` in front of the embedded llama-server + Gemma 3 270M, each asked twice: with the
# packaged prompts by item kind (generic exemplars, as a user who writes none) and with
# data/prompts/fresh-io.yaml (another wrapper, task-specific exemplars). Resumable (items already in
# the output are skipped); the proxy keeps its own store next to the output. ~2-3 min a slice on 2 cores.
#   bash scripts/collect_fresh.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-data/traces/gemma-3-270m-fresh.jsonl}
TASKS=${SENTINEL_FRESH_TASKS:-"next_number continent_of_country comparative ing_form country_of_capital digits_of_words \
  superlative third_person words_of_number letters_in_word"}
PORT=${SENTINEL_FRESH_PORT:-18481}
source scripts/collect_serve.sh   # serve on $PORT with its own store beside $OUT
for t in $TASKS; do
  for prompts in packaged fresh-io; do
    extra=()
    [ "$prompts" = fresh-io ] && extra=(--prompts data/prompts/fresh-io.yaml)
    .venv/bin/entropy-sentinel collect --proxy "http://127.0.0.1:$PORT" --benchmark "data/tasks/$t.jsonl" \
      --concurrency 4 --slice source=fresh --slice prompts="$prompts" "${extra[@]}" --out "$OUT"
  done
  gzip -9 -n -k -f "$OUT"   # a committed piece after every task
done
