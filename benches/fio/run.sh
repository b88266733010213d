#!/usr/bin/env bash
# fio baseline for ferrite-io's benches (independent of Rust). See benches/fio/README.md.
#
#   bash benches/fio/run.sh            # 2 reps x 5 s (+1 s ramp) per variant, ~4 min (227 s measured)
#   bash benches/fio/run.sh --quick    # 1 rep  x 2 s, no ramp, ~45 s (44 s measured)
#
# Environment overrides:
#   FIO_REPS, FIO_RUNTIME, FIO_RAMP   repetitions, seconds per run, seconds of ramp
#   FIO_ONLY="randread-qd1 seqwrite-128k-qd8"   run only these jobs (space separated)
#   FIO_DIR   where the data file and raw per-run JSON go (default <repo>/target/fio; not tmpfs)
#   FIO_HOST  name used in the results file name (default: short hostname, else "local")
#   FIO_TAG   suffix for the results file name (default: "quick" with --quick, "partial"
#             with FIO_ONLY, else none)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
cd "$REPO" # every path below is relative to the repo root, so the recorded commands are exact

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h | --help) sed -n '2,13p' "$SCRIPT_DIR/run.sh" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument '$arg' (only --quick)" >&2; exit 2 ;;
    esac
done

if [[ $QUICK == 1 ]]; then
    REPS=${FIO_REPS:-1} RUNTIME=${FIO_RUNTIME:-2} RAMP=${FIO_RAMP:-0} TAG=${FIO_TAG-quick}
else
    REPS=${FIO_REPS:-2} RUNTIME=${FIO_RUNTIME:-5} RAMP=${FIO_RAMP:-1} TAG=${FIO_TAG-}
fi
SIZE_MIB=256
SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))

# Paths relative to the repo root when possible (they end up in the recorded commands).
FIO_DIR_ABS=${FIO_DIR:-$REPO/target/fio}
mkdir -p "$FIO_DIR_ABS"
FIO_DIR_ABS=$(cd "$FIO_DIR_ABS" && pwd)
DIR=${FIO_DIR_ABS#"$REPO"/}
DATA=$DIR/data.bin
RUNS=$DIR/runs
RESULTS=benches/results
JOBDIR=${SCRIPT_DIR#"$REPO"/}

HOST=$(hostname -s 2>/dev/null || true)
HOST=${FIO_HOST:-${HOST:-local}}
HOST=$(printf '%s' "$HOST" | tr -c 'A-Za-z0-9._-' '_')
# A FIO_ONLY subset must not overwrite the full results unless FIO_TAG says so.
if [[ -n ${FIO_ONLY:-} && -z ${FIO_TAG+set} ]]; then TAG=${TAG:+$TAG-}partial; fi
OUT=$RESULTS/fio-$HOST${TAG:+-$TAG}

# --- 1. fio ------------------------------------------------------------------------------
if ! command -v fio >/dev/null 2>&1; then
    echo "fio not found; installing it from apt" >&2
    SUDO=
    [[ $(id -u) == 0 ]] || SUDO=sudo
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio >/dev/null
fi
command -v python3 >/dev/null 2>&1 || { echo "run.sh: python3 is required to parse fio's JSON" >&2; exit 1; }
PY=$(python3 -c 'import sys; print(sys.executable)') # skip version-manager shims (~0.3 s each)
FIO_VERSION=$(fio --version)
echo "$FIO_VERSION"
if ! fio --enghelp=io_uring 2>/dev/null | grep -q fixedbufs; then
    echo "run.sh: this fio has no io_uring engine with fixedbufs" >&2
    exit 1
fi

# --- 2. data file ------------------------------------------------------------------------
fstype=$(stat -f -c %T "$DIR")
if [[ $fstype == tmpfs || $fstype == ramfs ]]; then
    echo "run.sh: $DIR is on $fstype; O_DIRECT needs a real filesystem (set FIO_DIR)" >&2
    exit 1
fi
allocated() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1"))); }
if [[ -f $DATA && $(stat -c %s "$DATA") == "$SIZE_BYTES" && $(allocated "$DATA") -ge $SIZE_BYTES ]]; then
    echo "reusing $DATA ($SIZE_MIB MiB, fully allocated)"
else
    echo "writing $DATA ($SIZE_MIB MiB of random data, real blocks)"
    rm -f "$DATA" "$DATA.tmp"
    dd if=/dev/urandom of="$DATA.tmp" bs=1M count=$SIZE_MIB conv=fsync status=none
    mv "$DATA.tmp" "$DATA"
fi
rm -rf "$RUNS"
mkdir -p "$RUNS" "$RESULTS"

# --- 3. jobs -----------------------------------------------------------------------------
# job file (without .fio) : section : Rust bench row it is the baseline for
PLAN=(
    "randread-qd1:io_uring:direct_randread_qd1"
    "randread-qd1:io_uring-fixedbufs:direct_randread_qd1"
    "randread-qd1:psync:direct_randread_qd1"
    "randread-qd8:io_uring:direct_randread_qd8"
    "randread-qd8:io_uring-fixedbufs:direct_randread_qd8"
    "randread-qd32:io_uring:direct_randread_qd32"
    "randread-qd32:io_uring-fixedbufs:direct_randread_qd32"
    "randread-qd32:psync-32jobs:direct_randread_qd32"
    "seqwrite-128k-qd8:io_uring-fixedbufs:direct_seqwrite_128k_qd8"
    "seqwrite-1m-qd8:io_uring-fixedbufs:-"
    "cached-read-4k-qd1:io_uring:cached_read_4k"
    "cached-read-4k-qd1:psync:cached_read_4k"
    "buffered-write-4k-qd1:io_uring:buffered_write_4k"
    "buffered-write-4k-qd1:psync:buffered_write_4k"
    "buffered-write-4k-qd1:psync-prewarmed:buffered_write_4k"
    "fdatasync:io_uring:fdatasync_4k"
    "fdatasync:psync:fdatasync_4k"
)
if [[ -n ${FIO_ONLY:-} ]]; then
    kept=()
    for entry in "${PLAN[@]}"; do
        for want in $FIO_ONLY; do [[ ${entry%%:*} == "$want" ]] && kept+=("$entry"); done
    done
    [[ ${#kept[@]} -gt 0 ]] || { echo "run.sh: FIO_ONLY='$FIO_ONLY' matches no job" >&2; exit 2; }
    PLAN=("${kept[@]}")
fi

n=${#PLAN[@]}
est=$((n * REPS * (RUNTIME + RAMP)))
echo "plan: $n variants x $REPS rep(s) x (${RUNTIME}s + ${RAMP}s ramp) = ~${est}s of I/O, plus fio start-up"
echo "started $(date -Is), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
MANIFEST=$RUNS/manifest.tsv
: >"$MANIFEST"

export FIO_FILE=$DATA FIO_SIZE=${SIZE_MIB}M FIO_RUNTIME=$RUNTIME FIO_RAMP=$RAMP
# Reps are the outer loop so that background noise is spread over all variants.
for ((rep = 1; rep <= REPS; rep++)); do
    for entry in "${PLAN[@]}"; do
        IFS=: read -r job section row <<<"$entry"
        jobfile=$JOBDIR/$job.fio
        out=$RUNS/$job--$section--$rep.json
        cmd="FIO_FILE=$FIO_FILE FIO_SIZE=$FIO_SIZE FIO_RUNTIME=$RUNTIME FIO_RAMP=$RAMP fio --output-format=json --section=$section $jobfile"
        printf '[rep %d/%d] %-22s %-20s ' "$rep" "$REPS" "$job" "$section"
        # Same start state for every run: no dirty pages left by an earlier buffered job
        # (they would flush mid-run) and none of the file in the page cache (jobs that
        # want it cached read it in themselves with pre_read=1, which yields the large
        # folios that sequential readahead produces).
        sync "$DATA"
        dd if="$DATA" iflag=nocache count=0 status=none
        if ! fio --output-format=json --output="$out" --section="$section" "$jobfile" 2>"$out.err"; then
            echo "FAILED"
            cat "$out.err" >&2
            exit 1
        fi
        "$PY" - "$out" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
d = j["read"] if j["read"]["total_ios"] else j["write"]
print(f'{d["iops"]:>10.0f} IOPS  {d["bw_bytes"] / 1e6:8.1f} MB/s  clat p50 {d["clat_ns"]["percentile"]["50.000000"] / 1e3:8.1f} us')
PY
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$job" "$section" "$row" "$rep" "$out" "$cmd" >>"$MANIFEST"
    done
done
END=$(date +%s)
WALL=$((END - START))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 4. results --------------------------------------------------------------------------
DEV=$(df --output=source "$DATA" | tail -n 1)
DEVNAME=$(basename "$(readlink -f "$DEV")")
SCHED=$(cat "/sys/block/$DEVNAME/queue/scheduler" 2>/dev/null || echo "?")
SCHED=$(sed -n 's/.*\[\(.*\)\].*/\1/p' <<<"$SCHED")
SCHED=${SCHED:-?}
export FIO_VERSION WALL LOAD_START LOAD_END DEV SCHED REPS RUNTIME RAMP QUICK HOST MANIFEST OUT DATA
KERNEL=$(uname -r) NPROC=$(nproc) DATE=$(date -Is)
FSTYPE=$(findmnt -no FSTYPE -T "$DIR" 2>/dev/null || stat -f -c %T "$DIR")
export KERNEL NPROC DATE FSTYPE
"$PY" - <<'PY'
import json, os, statistics

E = os.environ
runs = {}
order = []
for line in open(E["MANIFEST"]):
    job, section, row, rep, path, cmd = line.rstrip("\n").split("\t")
    key = (job, section)
    if key not in runs:
        runs[key] = {"job": job, "variant": section, "rust_row": None if row == "-" else row,
                     "command": cmd, "reps": []}
        order.append(key)
    doc = json.load(open(path))
    j = doc["jobs"][0]
    if "fio_cli" not in runs[key]:
        # the same job as one self-contained command line (env vars already expanded by fio)
        opts = {**doc.get("global options", {}), **j["job options"]}
        opts.pop("stonewall", None)
        runs[key]["fio_cli"] = " ".join(["fio", f"--name={section}"] +
            [f"--{k}" if v in ("", None) else f"--{k}={v}" for k, v in opts.items()])
    ddir = "read" if j["read"]["total_ios"] else "write"
    d = j[ddir]
    pct = lambda lat, p: lat["percentile"][p] / 1e3 if lat.get("percentile") else None
    s = j["sync"]
    runs[key]["reps"].append({
        "rep": int(rep), "ddir": ddir,
        "iops": d["iops"], "mb_s": d["bw_bytes"] / 1e6,
        "clat_p50_us": pct(d["clat_ns"], "50.000000"), "clat_p99_us": pct(d["clat_ns"], "99.000000"),
        "lat_p50_us": pct(d["lat_ns"], "50.000000"), "lat_p99_us": pct(d["lat_ns"], "99.000000"),
        "slat_mean_us": d["slat_ns"]["mean"] / 1e3,
        # fio 3.33 leaves sync.total_ios at 0; sync.lat_ns.N is the number of syncs
        "syncs": s["lat_ns"]["N"],
        "sync_p50_us": pct(s["lat_ns"], "50.000000") if s["lat_ns"]["N"] else None,
        "sync_p99_us": pct(s["lat_ns"], "99.000000") if s["lat_ns"]["N"] else None,
        "sync_mean_us": s["lat_ns"]["mean"] / 1e3 if s["lat_ns"]["N"] else None,
        "cpu_pct": j["usr_cpu"] + j["sys_cpu"],
    })

METRICS = ["iops", "mb_s", "clat_p50_us", "clat_p99_us", "lat_p50_us", "lat_p99_us",
           "slat_mean_us", "syncs", "sync_p50_us", "sync_p99_us", "sync_mean_us", "cpu_pct"]
rows = []
for key in order:
    r = runs[key]
    med = {}
    for m in METRICS:
        vals = [x[m] for x in r["reps"] if x[m] is not None]
        med[m] = statistics.median(vals) if vals else None
    iops = [x["iops"] for x in r["reps"]]
    med["iops_spread_pct"] = ((max(iops) - min(iops)) / med["iops"] * 100
                              if len(iops) > 1 and med["iops"] else None)
    r["median"] = med
    rows.append(r)

meta = {
    "fio_version": E["FIO_VERSION"], "kernel": E["KERNEL"], "nproc": int(E["NPROC"]),
    "host": E["HOST"], "date": E["DATE"], "device": E["DEV"], "scheduler": E["SCHED"],
    "filesystem": E["FSTYPE"], "data_file": E["DATA"], "data_file_mib": 256,
    "reps": int(E["REPS"]), "runtime_s": float(E["RUNTIME"]), "ramp_s": float(E["RAMP"]),
    "quick": E["QUICK"] == "1", "wall_s": int(E["WALL"]),
    "loadavg_start": E["LOAD_START"], "loadavg_end": E["LOAD_END"],
    "aggregate": "median over reps of each metric separately; MB/s is 10^6 bytes/s",
}
json.dump({"meta": meta, "rows": rows}, open(E["OUT"] + ".json", "w"), indent=2)

def f(v, nd=1):
    if v is None:
        return "-"
    return f"{v:,.0f}" if nd == 0 else f"{v:,.{nd}f}"

prefix = f"FIO_FILE={E['DATA']} FIO_SIZE=256M FIO_RUNTIME={E['RUNTIME']} FIO_RAMP={E['RAMP']} fio --output-format=json"
L = []
L.append(f"# fio baseline ({meta['host']})\n")
L.append(f"{meta['date']} · {meta['fio_version']} · Linux {meta['kernel']} · {meta['nproc']} vCPU · "
         f"{meta['filesystem']} on {meta['device']} (scheduler: {meta['scheduler']}) · "
         f"{meta['reps']} rep(s) × {E['RUNTIME']} s (+{E['RAMP']} s ramp), median · "
         f"wall {meta['wall_s']} s · loadavg {meta['loadavg_start']} → {meta['loadavg_end']}\n")
L.append("Latencies in µs. clat = completion latency as fio defines it (for io_uring it excludes the "
         "submit syscall, see `lat`); lat p50 = slat + clat, the fair io_uring-vs-psync per-op number; "
         "sync = the fdatasync latency. spread = (max − min) / median of IOPS over reps.\n")
L.append(f"Commands run from the repo root as `{prefix} <cmd column>`.\n")
hdr = ["Rust row", "fio job", "variant", "IOPS", "MB/s", "clat p50", "clat p99", "lat p50",
       "sync p50", "sync p99", "spread %", "cmd"]
L.append("| " + " | ".join(hdr) + " |")
L.append("|" + "|".join(["---"] * 3 + ["---:"] * 8 + ["---"]) + "|")
for r in rows:
    m = r["median"]
    tail = r["command"].split(" fio --output-format=json ", 1)[1]
    L.append("| " + " | ".join([
        f"`{r['rust_row']}`" if r["rust_row"] else "(page-flusher baseline)", r["job"], r["variant"],
        f(m["iops"], 0), f(m["mb_s"]), f(m["clat_p50_us"]), f(m["clat_p99_us"]), f(m["lat_p50_us"]),
        f(m["sync_p50_us"]), f(m["sync_p99_us"]), f(m["iops_spread_pct"]), f"`{tail}`"]) + " |")
md = "\n".join(L) + "\n"
open(E["OUT"] + ".md", "w").write(md)
print()
print(md)
print(f"wrote {E['OUT']}.md and {E['OUT']}.json")
PY
echo "wall time: ${WALL}s (I/O phase), finished $(date -Is)"
