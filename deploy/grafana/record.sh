#!/usr/bin/env bash
# Record the dashboard picture in the README: `mcdrop serve --workers 2` under gRPC and REST load (with some bad
# requests, a new model version and a killed worker on the way), scraped by a local Prometheus every 2 s, drawn by
# render.py with the dashboard's own queries.
#
#   deploy/grafana/record.sh docs/images/dashboard.png       # about 7 minutes
#
# Needs Debian's prometheus (apt-get install prometheus) and the project's venv (make .venv/.installed).
set -euo pipefail
OUT=${1:?usage: record.sh OUT.png}
MINUTES=${MINUTES:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-$HERE/../../.venv/bin}
WORK=$(mktemp -d)
GRPC=18700 REST=18701 METRICS=18702 PROM=18790
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN/mcdrop" demo --workdir "$WORK/demo" --quiet > "$WORK/demo.log"        # trains and exports digits (v1)
cat > "$WORK/prometheus.yml" <<EOF
global: {scrape_interval: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: mcdrop
    static_configs: [{targets: ["127.0.0.1:$METRICS"]}]
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM" > "$WORK/prometheus.log" 2>&1 &
pids+=($!)
"$BIN/mcdrop" serve --repository "$WORK/demo/repository" --host 127.0.0.1 --port $GRPC --http-port $REST \
  --metrics-port $METRICS --workers 2 --poll-seconds 2 > "$WORK/serve.log" 2>&1 &
pids+=($!)
sleep 8

# gRPC: mcdrop soak's mixed requests (Monte Carlo, deterministic, streamed, adaptive) from 4 processes.
# Both loads run half a minute past the picture's end, so its stat panels show traffic, as a live dashboard would.
LOAD_MINUTES=$(python3 -c "print($MINUTES + 0.5)")
"$BIN/mcdrop" soak --server 127.0.0.1:$GRPC --clients 4 --minutes "$LOAD_MINUTES" > "$WORK/soak.log" 2>&1 &
pids+=($!)
# REST: JSON and one-pass requests back to back, and a malformed one every 50th.
"$BIN/python" - "$REST" "$LOAD_MINUTES" > "$WORK/rest.log" 2>&1 <<'EOF' &
import json, sys, time, http.client
from sklearn.datasets import load_digits
rows = load_digits().data[:4].tolist()
port, minutes = int(sys.argv[1]), float(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
deadline, i, dropped = time.time() + minutes * 60, 0, 0
while time.time() < deadline:
    i += 1
    mode = {"mode": "moments"} if i % 3 == 0 else {"mc_samples": 100}
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4, 64], "data": rows}], "parameters": mode}
    payload = b"{broken" if i % 50 == 0 else json.dumps(body).encode()
    try:
        conn.request("POST", "/v2/models/digits/infer", payload, {"content-type": "application/json"})
        conn.getresponse().read()
    except (ConnectionError, http.client.HTTPException):  # its worker was killed: reconnect, as clients do
        dropped += 1
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    time.sleep(0.01)
print(f"{i} REST requests, {dropped} connections dropped")
EOF
pids+=($!)

third=$(python3 -c "print(int($MINUTES * 60 / 3))")
sleep "$third"
cp -r "$WORK/demo/repository/digits/1" "$WORK/staged-v2"                 # a new version: loaded, v1 kept
mv "$WORK/staged-v2" "$WORK/demo/repository/digits/2"                      # (a rename: never seen half-copied)
sleep "$third"
worker=$(pgrep -P "${pids[1]}" -f spawn_main | head -n 1)
kill -KILL "$worker"                                     # one worker dies; the supervisor restarts it
sleep "$third"
"$BIN/python" "$HERE/render.py" --prometheus "http://127.0.0.1:$PROM" --minutes "$(python3 -c "print($MINUTES + 0.3)")" \
  --rate-interval 10s --out "$OUT"
wait "${pids[2]}" "${pids[3]}" || echo "(the soak fails on the requests the killed worker dropped: expected here)"
tail -n 3 "$WORK/soak.log" "$WORK/rest.log"
