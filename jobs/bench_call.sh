#!/usr/bin/env bash
# One device call of benchmarks: each command given runs in turn from the repository root,
# with the project's wheels (.whl, from jobs/device_wheels.sh) and a dataset mirror carried.
# What they wrote comes back in three files (the device tool brings back at most 8, 64 MiB in
# all). Session 27's call scripts lived in an ignored folder and were lost with its machine.
#   bash jobs/bench_call.sh "python -m benchmarks.sasrec_encoder" \
#     "python -m benchmarks.beauty_cell_profile bf16"
# Carry .whl and the mirror (.study/bmirror, or RECSYS_DATA_MIRROR). For figures before and
# after a change, make a tree of the earlier commit here (git archive C | tar -x -C
# .study/base), carry it, and run it as, e.g.,
#   "cd .study/base && PYTHONPATH=/tmp/site:\$PWD python -m benchmarks.X"
# Back, under $OUT:
#   calls.tsv    each command, its exit status and seconds;
#   logs.tgz     each command's output (01.log, 02.log, ...);
#   results.tgz  the files the commands wrote under BACK (default: results .study/base/results),
#                md, csv, txt, json, jsonl and yaml under 4 MB each.
# BUDGET (seconds, default 560) bounds the call: a command gets what is left, then an INT.
# Python's bytecode goes to PYTHONPYCACHEPREFIX (default /tmp/bench-pycache): see below.
set -u
S=$(date +%s)
BUDGET=${BUDGET:-560}
: "${OUT:?OUT: the folder whose files come back}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl 2>/dev/null || echo "bench_call: the wheels did not install"
fi
if ! command -v python >/dev/null; then     # an image with python3 alone: commands say python
  mkdir -p /tmp/bench-bin && ln -sf "$(command -v python3)" /tmp/bench-bin/python
  export PATH=/tmp/bench-bin:$PATH
fi
export PYTHONPATH=/tmp/site:$PWD WANDB_MODE=${WANDB_MODE:-disabled} PYTHONUNBUFFERED=1 \
  RECSYS_DATA_MIRROR=${RECSYS_DATA_MIRROR:-$PWD/.study/bmirror}
# The device's image has no bytecode (PYTHONDONTWRITEBYTECODE): each process would compile what
# it imports from source (torch and its dynamo: 9.4 s of a 27.7 s cell, results/benchmarks/
# grid_throughput_h100/). The commands keep theirs in one folder, as a pip install leaves a
# stack; a first command that imports the stack fills it (session 27's calls did the same).
if [ -z "${PYTHONPYCACHEPREFIX:-}" ]; then
  export PYTHONPYCACHEPREFIX=/tmp/bench-pycache
  unset PYTHONDONTWRITEBYTECODE
fi
LOGS=$(mktemp -d)
stamp=$LOGS/.started
touch "$stamp"
mkdir -p "$OUT"
printf 'n\tstatus\tseconds\tcommand\n' >"$OUT/calls.tsv"
n=0
for cmd in "$@"; do
  n=$((n + 1))
  log=$LOGS/$(printf %02d "$n").log
  left=$((BUDGET - ($(date +%s) - S)))
  if [ "$left" -le 5 ]; then
    printf '%d\tnot run\t0\t%s\n' "$n" "$cmd" >>"$OUT/calls.tsv"
    continue
  fi
  t=$(date +%s)
  timeout -s INT "$left" bash -c "$cmd" >"$log" 2>&1
  status=$?
  printf '%d\t%d\t%d\t%s\n' "$n" "$status" $(($(date +%s) - t)) "$cmd" >>"$OUT/calls.tsv"
  echo "== $n: exit $status after $(($(date +%s) - t)) s: $cmd"
  tail -n 4 "$log"
done
back=()
for dir in ${BACK:-results .study/base/results}; do [ -d "$dir" ] && back+=("$dir"); done
if [ ${#back[@]} -gt 0 ]; then
  find "${back[@]}" -type f -newer "$stamp" -size -4M \( -name '*.md' -o -name '*.csv' \
    -o -name '*.txt' -o -name '*.json' -o -name '*.jsonl' -o -name '*.yaml' \) >"$LOGS/back.list"
fi
tar czf "$OUT/results.tgz" -T "${LOGS}/back.list" 2>/dev/null || tar czf "$OUT/results.tgz" -T /dev/null
tar czf "$OUT/logs.tgz" -C "$LOGS" --exclude .started --exclude back.list .
rm -rf "$LOGS"
echo "bench_call: $n commands in $(($(date +%s) - S)) s; $(tar tzf "$OUT/results.tgz" | wc -l) result files"
