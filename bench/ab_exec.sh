#!/usr/bin/env bash
# Side by side: `diatom exec CMD` on two builds and a local run of CMD,
# interleaved (local, base, new per round), medians. Each build gets its
# own central and node on loopback (ports 23036/24036 and 25036/26036).
#   bench/ab_exec.sh BASE_DIR NEW_DIR [RUNS] -- CMD [ARGS...]
# A *_DIR holds diatom, diatom-central and diatom-client (e.g. release
# binaries of two checkouts, with `make static-cli`'s target/static/diatom
# as diatom). Run as root for the nodes' full sandbox, as BENCHMARKS.md was.
# GAP_MS=N sleeps N ms before each run, so that a job's start is measured
# without the previous job's cleanup and refill (nodes make the next job's
# spares on an idle-priority thread after each job) still on the 2 CPUs;
# without it, runs follow each other back to back.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 BASE_DIR NEW_DIR [RUNS] -- CMD [ARGS...]" >&2; exit 2; }
base=$1 new=$2; shift 2
runs=41
if [ "$1" != "--" ]; then runs=$1; shift; fi
[ "$1" = "--" ] && shift
work=$(mktemp -d /tmp/diatom-ab.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
start() { # NAME DIR CENTRAL_PORT NODE_PORT
  local d=$work/$1
  mkdir -p "$d"
  "$2/diatom" keygen --out "$d/key"
  "$2/diatom-central" --bind 127.0.0.1:$3 --key "$d/key" --state-dir "$d/c" --socket "$d/sock" -q 2>"$d/c.log" &
  "$2/diatom-client" --central 127.0.0.1:$3 --bind 127.0.0.2:$4 --name "n-$1" --key "$d/key" --state-dir "$d/n" -vv 2>"$d/n.log" &
}
start base "$base" 23036 24036
start new "$new" 25036 26036
sleep 1.5
GAP_MS=${GAP_MS:-0} python3 - "$work" "$base" "$new" "$runs" "$@" <<'PY'
import os, statistics, subprocess, sys, time
work, base, new, runs, cmd = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
gap = int(os.environ["GAP_MS"]) / 1000
runs_of = {"local": cmd,
           "base": [f"{base}/diatom", "--socket", f"{work}/base/sock", "exec"] + cmd,
           "new": [f"{new}/diatom", "--socket", f"{work}/new/sock", "exec"] + cmd}
for argv in runs_of.values():  # warm the node caches
    for _ in range(3):
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
ms = {k: [] for k in runs_of}
for _ in range(runs):
    for k, argv in runs_of.items():
        time.sleep(gap)
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
        ms[k].append((time.perf_counter() - t) * 1000)
for k, v in ms.items():
    q = statistics.quantiles(v, n=4)
    print(f"{k:6s} median {statistics.median(v):7.2f} ms  p25 {q[0]:7.2f}  p75 {q[2]:7.2f}")
PY
echo "load: $(cut -d' ' -f1-3 /proc/loadavg), gap ${GAP_MS:-0} ms"
