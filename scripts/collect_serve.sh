# Sourced by the collect_*.sh scripts: start `serve` on port $PORT for the traces file $OUT, with its own
# store next to it (OUT minus .jsonl, plus .db; its log, plus .serve.log), so its per-slice estimates
# (GET /sentinel/v1/slices) hold this collection's requests only; stopped when the script exits.
mkdir -p "$(dirname "$OUT")"
.venv/bin/entropy-sentinel serve --port "$PORT" --store "${OUT%.jsonl}.db" > "${OUT%.jsonl}.serve.log" 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null; wait $SERVE 2>/dev/null' EXIT
for _ in $(seq 1 240); do curl -sf "http://127.0.0.1:$PORT/sentinel/healthz" >/dev/null && break; sleep 0.5; done
