#!/bin/sh
# Classification throughput and peak memory of `factory-pipeline classify`
# on synthetic job logs of 64 MiB, 256 MiB and 1 GiB (generated in a
# temporary folder by bench/pipeline_gen_log.py, deleted after), pinned to
# one core (taskset -c 0). Throughput is given per CPU second (user + sys:
# what one core does, whatever else runs on the machine) and per wall
# second. Peak RSS must stay flat as the log grows (the reader streams).
# Writes bench/results/pipeline.json.
#   bench/pipeline_throughput.sh [SIZES_MB]   (default "64 256 1024")
cd "$(dirname "$0")/.." || exit 2
BIN_DIR=${FACTORY_BIN_DIR:-bin}
EXE=$BIN_DIR/factory-pipeline
SIZES=${1:-64 256 1024}
[ -x "$EXE" ] || { echo "pipeline_throughput: $EXE not built (make)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "pipeline_throughput: /usr/bin/time is missing (apt-get install time)" >&2; exit 2; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/factory-pipeline-bench.XXXXXX") || exit 2
trap 'rm -rf "$TMP"' EXIT INT TERM
PIN=""
command -v taskset >/dev/null 2>&1 && PIN="taskset -c 0"
ROWS=$TMP/rows.txt
: > "$ROWS"
for mb in $SIZES; do
	log=$TMP/job-$mb.log
	bytes=$(/usr/bin/python3 bench/pipeline_gen_log.py "$log" "$mb") || exit 1
	# warm the page cache so the first run does not measure the disk
	cat "$log" > /dev/null
	best=""
	for run in 1 2 3; do
		$PIN /usr/bin/time -f '%e %U %S %M' -o "$TMP/time" "$EXE" --report-dir "$TMP/report" \
			--log-level error classify "$log" > "$TMP/out.json" || { echo "classify failed" >&2; exit 1; }
		t=$(cat "$TMP/time")
		# keep the run with the least CPU time
		cpu=$(echo "$t" | awk '{print $2 + $3}')
		if [ -z "$best" ] || [ "$(echo "$cpu $bestcpu" | awk '{print ($1 < $2)}')" = 1 ]; then
			best=$t
			bestcpu=$cpu
		fi
	done
	class=$(/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["class"], d["error_lines"][0], d["error_lines"][1], d["lines"])' "$TMP/out.json")
	echo "$mb $bytes $best $class" >> "$ROWS"
	rm -f "$log"
done
/usr/bin/python3 - "$ROWS" <<'PY'
import json, os, platform, sys
rows = []
for line in open(sys.argv[1]):
    mb, size, wall, user, sys_, rss_kb, klass, first, last, lines = line.split()
    size = int(size); cpu = float(user) + float(sys_); wall = float(wall)
    rows.append({"size_mb": int(mb), "bytes": size, "lines": int(lines), "wall_s": wall, "cpu_s": round(cpu, 2),
                 "mb_per_cpu_s": round(size / 1e6 / cpu, 1) if cpu else None,
                 "mb_per_wall_s": round(size / 1e6 / wall, 1) if wall else None,
                 "peak_rss_kb": int(rss_kb), "class": klass, "error_lines": [int(first), int(last)]})
res = {
    "benchmark": "pipeline_throughput",
    "what": "factory-pipeline classify on synthetic GitLab job logs (bench/pipeline_gen_log.py), one core "
            "(taskset -c 0), best of 3 runs by CPU time; MB = 10^6 bytes",
    "command": "sh bench/pipeline_throughput.sh",
    "target_mb_per_s": 300,
    "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), "kernel": platform.release()},
    "runs": rows,
    "peak_rss_kb_min": min(r["peak_rss_kb"] for r in rows),
    "peak_rss_kb_max": max(r["peak_rss_kb"] for r in rows),
}
os.makedirs("bench/results", exist_ok=True)
with open("bench/results/pipeline.json", "w") as f:
    json.dump(res, f, indent=2)
    f.write("\n")
for r in rows:
    print("  %5d MiB: %7.1f MB/s per CPU second, %7.1f MB/s wall, peak RSS %d KiB, %s at lines %s"
          % (r["size_mb"], r["mb_per_cpu_s"], r["mb_per_wall_s"], r["peak_rss_kb"], r["class"], r["error_lines"]))
PY
