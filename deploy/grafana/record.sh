#!/usr/bin/env bash
# Record the dashboard picture in the README and the Watch page: `mcdrop serve --workers 2` (calibrated digits,
# capturing the rows it abstains on) under gRPC and REST load of digits rows, scraped every 2 s by a local Prometheus
# that evaluates deploy/prometheus/mcdrop-rules.yml; drawn by render.py with the dashboard's own queries. On the way:
# a new model version at 1/5 of the time, half of the gRPC traffic switched to out-of-distribution input (noise
# images) at 2/5 — the drift, abstain and capture panels move, and McdropUncertaintyDrift fires 5 minutes later —
# and a killed worker at 3/5.
#
#   deploy/grafana/record.sh docs/images/dashboard.png       # about 12 minutes
#
# Needs Debian's prometheus (apt-get install prometheus) and the project's venv (make .venv/.installed).
set -euo pipefail
OUT=${1:?usage: record.sh OUT.png}
MINUTES=${MINUTES:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-$HERE/../../.venv/bin}
WORK=$(mktemp -d)
GRPC=18700 REST=18701 METRICS=18702 PROM=18790
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN/mcdrop" demo --workdir "$WORK/demo" --quiet > "$WORK/demo.log"        # trains, exports, calibrates digits (v1)
cat > "$WORK/prometheus.yml" <<EOF
global: {scrape_interval: 2s, evaluation_interval: 2s}
rule_files: ["$HERE/../prometheus/mcdrop-rules.yml"]
scrape_configs:
  - job_name: mcdrop
    static_configs: [{targets: ["127.0.0.1:$METRICS"]}]
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM" > "$WORK/prometheus.log" 2>&1 &
pids+=($!)
"$BIN/mcdrop" serve --repository "$WORK/demo/repository" --host 127.0.0.1 --port $GRPC --http-port $REST \
  --metrics-port $METRICS --workers 2 --poll-seconds 2 --capture-dir "$WORK/capture" --capture-when abstain \
  --capture-file-seconds 10 > "$WORK/serve.log" 2>&1 &
pids+=($!)
sleep 8

# Both loads run half a minute past the picture's end, so its stat panels show traffic, as a live dashboard would.
LOAD_MINUTES=$(python3 -c "print($MINUTES + 0.5)")
SWITCH_SECONDS=$(python3 -c "print($MINUTES * 60 * 2 / 10)")
# gRPC: batches of 8 digits rows from 3 threads (Monte Carlo, some deterministic); from SWITCH_SECONDS on, every
# other batch is noise images (uniform pixels in the digits' 0-16 range): out of distribution.
"$BIN/python" - "$GRPC" "$LOAD_MINUTES" "$SWITCH_SECONDS" > "$WORK/grpc.log" 2>&1 <<'EOF' &
import sys, threading, time
import numpy as np
from sklearn.datasets import load_digits
from mcdrop.serving.client import Client, RpcFailed
rows = load_digits().data.astype(np.float32)
port, minutes, switch = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
begun = time.time()
counts = {"ok": 0, "failed": 0}
def load(index: int) -> None:
    rng = np.random.default_rng(index)
    while time.time() < begun + minutes * 60:
        ood = time.time() > begun + switch and rng.random() < 0.5
        x = rng.uniform(0, 16, (8, 64)).astype(np.float32) if ood else rows[rng.integers(0, len(rows), 8)]
        try:
            with Client(f"127.0.0.1:{port}", timeout=30) as client:
                if rng.random() < 0.1:
                    client.predict("digits", x, mode="deterministic")
                else:
                    client.predict("digits", x, samples=50)
            counts["ok"] += 1
        except RpcFailed:  # its worker was killed
            counts["failed"] += 1
        time.sleep(0.02)
threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(f"gRPC requests: {counts}")
EOF
pids+=($!)
# REST: JSON and one-pass requests back to back, and a malformed one every 50th.
"$BIN/python" - "$REST" "$LOAD_MINUTES" > "$WORK/rest.log" 2>&1 <<'EOF' &
import json, sys, time, http.client
from sklearn.datasets import load_digits
import random
digits = load_digits().data.tolist()
port, minutes = int(sys.argv[1]), float(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
deadline, i, dropped = time.time() + minutes * 60, 0, 0
while time.time() < deadline:
    i += 1
    mode = {"mode": "moments"} if i % 3 == 0 else {"mc_samples": 100}
    rows = random.sample(digits, 4)
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

tenth=$(python3 -c "print(int($MINUTES * 60 / 10))")
sleep "$tenth"
cp -r "$WORK/demo/repository/digits/1" "$WORK/staged-v2"                 # a new version: loaded, v1 kept
mv "$WORK/staged-v2" "$WORK/demo/repository/digits/2"                      # (a rename: never seen half-copied)
sleep "$((tenth * 5))"                                    # out-of-distribution traffic from 2/10 on
worker=$(pgrep -P "${pids[1]}" -f spawn_main | head -n 1)
kill -KILL "$worker"                                     # one worker dies; the supervisor restarts it
sleep "$((tenth * 4))"
"$BIN/python" "$HERE/render.py" --prometheus "http://127.0.0.1:$PROM" --minutes "$(python3 -c "print($MINUTES + 0.3)")" \
  --rate-interval 10s --out "$OUT"
python3 - "http://127.0.0.1:$PROM/api/v1/alerts" <<'EOF'
import json, sys, urllib.request
alerts = json.load(urllib.request.urlopen(sys.argv[1]))["data"]["alerts"]
print("alerts:", [(a["labels"]["alertname"], a["state"]) for a in alerts])
EOF
wait "${pids[2]}" "${pids[3]}" || true
tail -n 3 "$WORK/grpc.log" "$WORK/rest.log"
echo "captured files: $(find "$WORK/capture" -name '*.parquet' | wc -l)"
