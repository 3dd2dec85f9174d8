#!/usr/bin/env bash
# One device call of the study (issue 16): the study sweep carried in .study/study grows and
# its unfinished cells run, all sharing one GPU as NVIDIA MPS clients, within BUDGET seconds;
# then its results come back in at most 8 files of 16 MiB, 64 MiB together (the device tool's
# limits). What sessions 9-10's calls taught is built in:
# - one launcher at a time on the GPU (three launchers of 8-12 cells each ran 28 cells at once
#   and 25 of them out of memory): RESUME_WHERE's cells first, then each of EXTEND's datasets,
#   then RERUN's;
# - the results are packed as soon as training stops, before the analyses, which can outlast
#   the call (session 10's last call lost 12 finished cells that way), and again after them;
# - unfinished cells' checkpoints come back, the most training per byte first, as many as the
#   call's 64 MiB leave, or up to RESUME_MAX_MB (pack; jobs/resume_pick.py).
# Run from the repository root with .study/study, .whl (jobs/device_wheels.sh) and the datasets'
# .data folders carried, BUDGET a little under the call's own limit (the device tool's limit_s:
# its timeout, or less when less device time is left after the machine's start-up):
#   BUDGET=540 CELLS_PER_GPU=16 RESUME_WHERE="dataset=video-sasrec" EXTEND="yelp-s3rec" \
#     bash jobs/study_call.sh
# A call that only trains amazon-beauty's seeds 42/123 again for their analyses:
#   STUDY=results/study/sweep RESUME_WHERE=none RERUN=amazon-beauty BUDGET=560 \
#     CELLS_PER_GPU=16 bash jobs/study_call.sh
# Back here: tar xzf back.tgz; tar xzf o/study.tgz -C <dir>; cat resume.tgz.part-* | tar xz -C <dir>.
# Environment: BUDGET (seconds the call may take, start-up included; default 540),
# CELLS_PER_GPU (16), RESUME_WHERE (--where clauses for `resume`, space-separated KEY=V1,V2;
# empty: every unfinished cell; "none": no resume), EXTEND (datasets to add with
# `sweep study --extend`, space-separated), ANALYSES (datasets to analyse; default: those
# with a cell that finished in this call), RESUME_MAX_MB (default: what the call's 64 MiB
# leave after the rest of its return, jobs/resume_pick.py), STUDY (the sweep to start
# from, default .study/study), WORK (where it runs, default /tmp/study), CONTINUE=1 (start from
# the sweep a previous call left in WORK on this machine, if there is one), RERUN (datasets
# whose seeds SEEDS, default 42,123, are trained again into WORK/rerun-D and analysed: the
# checkpoints of cells an earlier call's machine took with it; MODELS=a,b for some models;
# GRID, default study), GRIDS (grids such as study-dims run into WORK/NAME before RERUN, the
# finished cells of STUDY copied, GRID_WHERE's --where clauses applied to each; a continued
# call resumes a grid's cut cells first; GRIDS_AT_ONCE=1: all of them at once; RERUN_AT_ONCE=1:
# RERUN's datasets at once, each with CELLS places: the long-tail reruns' cells peak at 1.4-2.3
# GB and their datasets' 8 cells a seed fit the GPU together).
set -u
S=$(date +%s)
BUDGET=${BUDGET:-540}
CELLS=${CELLS_PER_GPU:-16}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD WANDB_MODE=disabled RECSYS_DATA_MIRROR=${RECSYS_DATA_MIRROR:-$PWD/.data} \
  PYTHONUNBUFFERED=1 WORK=${WORK:-/tmp/study} PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export RETURN_DIR=$OUT   # what the device brings back: the resume parts get what it leaves
O=$OUT/o     # if the call is cut, what is 2 folders down comes back: call.log, study.log,
L=$O/logs    # study.tgz and the resume parts (at most 8 files); the other logs go in back.tgz
mkdir -p "$L" "$WORK"
export OUT=$O
left() { echo $(( BUDGET - ($(date +%s) - S) )); }
log() { echo "[$(date +%T) +$(( $(date +%s) - S ))s] $*" | tee -a "$O/call.log"; }
pack() { bash jobs/study_gpu.sh study-aggregate pack; }
# "cell_dir dataset" of each COMPLETED cell of the sweep in $WORK/study
completed_cells() { python3 -m jobs.finished "$WORK/study"; }
finished_datasets() {
  completed_cells | grep -vxF -f "$WORK/completed-before" | cut -d' ' -f2 | sort -u | tr '\n' ' '
}
log "start: budget $BUDGET s, $CELLS cells per GPU"
# CONTINUE=1: calls made back to back find the machine still warm, with the previous call's
# sweep and every checkpoint in $WORK; carry on from those (a cut cell resumes from its last
# epoch whatever its size) instead of the carried copy, which lacks what that call did.
if [ "${CONTINUE:-0}" = 1 ] && [ -f "$WORK/study/manifest.json" ]; then
  log "continuing the sweep the previous call left in $WORK/study"
else
  [ "${CONTINUE:-0}" = 1 ] && log "nothing to continue in $WORK/study (a fresh machine): starting from ${STUDY:-.study/study}"
  rm -rf "$WORK/study"
  cp -r "${STUDY:-.study/study}" "$WORK/study"
fi

completed_cells >"$WORK/completed-before"
export CUDA_MPS_PIPE_DIRECTORY=${CUDA_MPS_PIPE_DIRECTORY:-/tmp/mps-study}
export CUDA_MPS_LOG_DIRECTORY=$CUDA_MPS_PIPE_DIRECTORY
mkdir -p "$CUDA_MPS_PIPE_DIRECTORY"
# A daemon already listening (an earlier call on this warm machine, or one beside this call)
# is used and left running: `quit` is only for the daemon this call started (session 22's
# call beside another said "no MPS daemon" here, then sent the other's daemon `quit`).
mps_started=0
if echo get_server_list | nvidia-cuda-mps-control >/dev/null 2>&1; then
  log "MPS: the daemon already listening on $CUDA_MPS_PIPE_DIRECTORY (left running)"
elif nvidia-cuda-mps-control -d 2>/dev/null; then
  mps_started=1
else
  log "no MPS daemon: cells sharing a GPU take turns on it"
fi
# Training stops RESERVE (90) s before the budget: packing takes ~10 s, the analyses get the
# rest (a call that analyses nothing, such as one that only runs GRIDS, can reserve 30).
train_until=$(( BUDGET - ${RESERVE:-90} ))
if [ "${RESUME_WHERE:-}" != none ] && [ $(( train_until - ($(date +%s) - S) )) -gt 30 ]; then
  where=()
  for clause in ${RESUME_WHERE:-}; do where+=(--where "$clause"); done
  timeout -s INT $(( train_until - ($(date +%s) - S) )) python3 -m launcher resume "$WORK/study" \
    --executor local --cells-per-gpu "$CELLS" --mps "${where[@]}" >>"$L/resume.log" 2>&1
  log "resume: exit $?"
fi
for ds in ${EXTEND:-}; do
  t=$(( train_until - ($(date +%s) - S) ))
  [ "$t" -gt 30 ] || { log "no time left for $ds"; break; }
  timeout -s INT "$t" python3 -m launcher sweep study --where "dataset=$ds" --extend \
    --executor local --cells-per-gpu "$CELLS" --mps --out "$WORK/study" >>"$L/extend-$ds.log" 2>&1
  log "extend $ds: exit $?"
done
# Other grids (RQ2's study-dims, study-long, study-lengths) into $WORK/NAME, the study sweep's
# finished cells copied (--reuse): a continued call first resumes what the last one cut.
# GRIDS_AT_ONCE=1 runs the grids' launchers side by side (each with CELLS places) instead of
# one after the other: for grids of a few long cells each, whose sum still fits the GPU.
# Side by side, each launcher plans its share of the GPU's memory (launcher/executors/memory.py
# sees only its own cells).
memory=()
if [ "${GRIDS_AT_ONCE:-0}" = 1 ] && [ "$(echo ${GRIDS:-} | wc -w)" -gt 1 ]; then
  total=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i 0 2>/dev/null)
  case $total in    # MiB; not a number: no nvidia-smi, and no memory limit
    ''|*[!0-9]*) ;;
    *) memory=(--gpu-memory-gb $(( total / $(echo $GRIDS | wc -w) / 1024 ))) ;;
  esac
fi
run_grid() {
  local spec=$1 g name t where=()
  g=${spec%%:*}
  name=$(basename "$g" .yaml)
  for clause in ${GRID_WHERE:-}; do where+=(--where "$clause"); done
  [ "$spec" = "$g" ] || where+=(--where "${spec#*:}")
  t=$(( train_until - ($(date +%s) - S) ))
  [ "$t" -gt 30 ] || { log "no time left for grid $name"; return; }
  log "grid $name: started"
  if [ -f "$WORK/$name/manifest.json" ]; then
    timeout -s INT "$t" python3 -m launcher resume "$WORK/$name" --executor local \
      --cells-per-gpu "$CELLS" --mps "${where[@]}" "${memory[@]}" >>"$L/grid-$name.log" 2>&1
    log "grid $name, resume: exit $?"
    t=$(( train_until - ($(date +%s) - S) ))
    [ "$t" -gt 30 ] || { log "no time left for grid $name"; return; }
  fi
  timeout -s INT "$t" python3 -m launcher sweep "$g" --reuse "${STUDY:-.study/study}" --extend \
    "${where[@]}" "${memory[@]}" --executor local --cells-per-gpu "$CELLS" --mps --out "$WORK/$name" \
    >>"$L/grid-$name.log" 2>&1
  log "grid $name: exit $?"
}
for spec in ${GRIDS:-}; do
  if [ "${GRIDS_AT_ONCE:-0}" = 1 ]; then run_grid "$spec" & else run_grid "$spec"; fi
done
wait
rerun() {
  local ds=$1 t
  t=$(( train_until - ($(date +%s) - S) ))
  [ "$t" -gt 30 ] || { log "no time left to rerun $ds"; return; }
  timeout -s INT "$t" env MPS=1 CELLS_PER_GPU="$CELLS" bash jobs/study_gpu.sh "rerun-$ds" \
    >>"$L/rerun-$ds.log" 2>&1
  log "rerun $ds: exit $?"
}
for ds in ${RERUN:-}; do
  if [ "${RERUN_AT_ONCE:-0}" = 1 ]; then rerun "$ds" & else rerun "$ds"; fi
done
wait
pack
log "packed (training over)"
# Analyses: ANALYSES, or else the datasets with a cell that finished in this call (their
# checkpoints are on this machine only: session 12 lost amazon-beauty's when a call whose
# RESUME_WHERE named no dataset finished its cells and analysed nothing).
analyses=${ANALYSES:-$(finished_datasets)}
log "analyses: ${analyses:-none}"
for ds in $analyses; do
  [ "$(left)" -gt 45 ] || break
  timeout $(( $(left) - 15 )) bash jobs/study_gpu.sh "study-analyses-$ds" >"$L/an-$ds.log" 2>&1 &
done
for ds in ${RERUN:-}; do
  [ "$(left)" -gt 45 ] || break
  timeout $(( $(left) - 15 )) env SWEEP="rerun-$ds" bash jobs/study_gpu.sh "study-analyses-$ds" \
    >"$L/an-rerun-$ds.log" 2>&1 &
done
wait
[ "$mps_started" = 1 ] && echo quit | nvidia-cuda-mps-control 2>/dev/null
# Again with the analyses, if there is time for it (a cut pack would spoil the first one).
[ "$(left)" -gt 25 ] && pack && log "packed again, with the analyses"
log end
cd "$OUT/.." && mv o/resume.tgz.part-* . 2>/dev/null
tar czf back.tgz o && rm -rf o
ls -la
