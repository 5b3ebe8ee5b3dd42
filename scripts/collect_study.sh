#!/usr/bin/env bash
# Re-collects the study's labelled traces: the embedded llama-server + Gemma 3 270M behind the
# proxy, one fixed prompt set, a fixed seeded subsample of each slice. Resumable (items already in
# the output are skipped). ~45 min on 2 cores for 14 slices x 300 items. The proxy keeps its own
# store next to the output (OUT minus .jsonl, plus .db), so its per-slice estimates
# (GET /sentinel/v1/slices, one slice per benchmark) hold this study's requests only.
#   bash scripts/collect_study.sh [LIMIT] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${1:-300}
OUT=${2:-data/traces/gemma-3-270m.jsonl}
SLICES=${SENTINEL_STUDY_SLICES:-"arith_1d arith_2d arith_3d svamp arc_easy sciq gsm8k math_l1 mmlu_stem mawps asdiv_a gsm_symbolic math_l2 arith_4d \
  ling_plural ling_past_tense ling_negation ling_question wikidata_language wikidata_country wikidata_other ling_pronoun \
  word_sorting_short object_counting_small periodic_elements word_unscrambling ling_singular ling_base_form"}
ALT_SLICES=${SENTINEL_STUDY_ALT_SLICES:-"ling_plural ling_past_tense ling_negation wikidata_language arith_1d"}
PORT=${SENTINEL_STUDY_PORT:-18480}
source scripts/collect_serve.sh   # serve on $PORT with its own store beside $OUT
for s in $SLICES; do
  .venv/bin/entropy-sentinel collect --proxy "http://127.0.0.1:$PORT" --benchmark "$s" --limit "$LIMIT" \
    --concurrency 4 --slice source=study --out "$OUT"
done
for s in $ALT_SLICES; do
  .venv/bin/entropy-sentinel collect --proxy "http://127.0.0.1:$PORT" --benchmark "$s" --limit "$LIMIT" \
    --concurrency 4 --slice source=study --slice prompts=alt-qa --prompts data/prompts/alt-qa.yaml --out "$OUT"
done
gzip -9 -n -k -f "$OUT"
