#!/usr/bin/env bash
# The page-flusher bench row: O_DIRECT flush throughput at depth 8 with 128 KiB and 1 MiB pages
# through `ferrite-io flush` (io_uring engine, sync none, so it matches fio's plain sequential
# write), against fio's sequential O_DIRECT io_uring write with fixed buffers, same block size,
# depth and size, interleaved run by run. Both write a fresh 1 GiB file preallocated with
# fallocate (ext4 then converts unwritten extents as writes complete, which costs ~40% against
# overwriting old blocks; the flusher's log is preallocated, so fio's file is too).
#
#   bash benches/flush_vs_fio.sh [runs]      # default 3 runs of each; writes
#                                            # benches/results/flush-vs-fio.md
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
if ! command -v fio >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio >/dev/null
fi
dir=target/fio
mkdir -p "$dir" benches/results
cargo build --release --quiet
out=$dir/flush-vs-fio.jsonl
: >"$out"
for run in $(seq "$runs"); do
    for bs in 128k 1m; do
        rm -f "$dir/fio-fresh.bin"
        fio --name=fresh --filename="$dir/fio-fresh.bin" --size=1G --rw=write --bs="$bs" --direct=1 \
            --iodepth=8 --ioengine=io_uring --fixedbufs=1 --fallocate=native --output-format=json 2>/dev/null |
            python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]['write']; print(json.dumps({'who':'fio','bs':'$bs','mb':j['bw_bytes']/1e6}))" >>"$out"
        rm -f "$dir/fio-fresh.bin"
        size=$([[ $bs == 128k ]] && echo 128KiB || echo 1MiB)
        ./target/release/ferrite-io flush --engine uring --direct --sync none --depth 8 --page-size "$size" \
            --size 1GiB --reads 100 --dir "$dir" --json |
            python3 -c "import json,sys; j=json.loads(sys.stdin.read()); print(json.dumps({'who':'ours','bs':'$bs','mb':j['mb_per_sec']}))" >>"$out"
    done
done
python3 - "$out" "$runs" <<'PY'
import json, statistics, sys, platform, os
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda who, bs: statistics.median(r["mb"] for r in rows if r["who"] == who and r["bs"] == bs)
lines = [
    "# Page flusher vs fio: O_DIRECT sequential writes, depth 8, fresh preallocated 1 GiB file",
    "",
    f"kernel {platform.release()}, {os.cpu_count()} CPUs, medians of {sys.argv[2]} interleaved runs;"
    " command: `bash benches/flush_vs_fio.sh`",
    "",
    "| page | ferrite-io flush (uring, O_DIRECT, sync none) | fio io_uring fixedbufs | ratio |",
    "|---|---:|---:|---:|",
]
for bs, label in [("128k", "128 KiB"), ("1m", "1 MiB")]:
    ours, fio = med("ours", bs), med("fio", bs)
    lines.append(f"| {label} | {ours:.0f} MB/s | {fio:.0f} MB/s | {ours / fio:.2f}x |")
text = "\n".join(lines) + "\n"
open("benches/results/flush-vs-fio.md", "w").write(text)
print(text)
PY
