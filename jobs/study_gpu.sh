#!/usr/bin/env bash
# The study's GPU runs (issue 6) on one GPU machine, phase by phase, as they were made:
#   bash jobs/study_gpu.sh beauty-solo beauty-sasrec beauty ml100k aggregate evalcheck pack
# beauty-solo:  the amazon-beauty grid's SASRec, seed 42, alone on the GPU, timed end to end
#               (launcher → job callable in a fresh process: imports, data, training to early
#               stop, test, result files) twice: with Triton's kernel cache cold, then warm;
# beauty-sasrec: the amazon-beauty-sasrec grid (SASRec, one change at a time towards the
#               published model, 3 seeds), several cells sharing the GPU;
# beauty:       the amazon-beauty grid (5 models + pop x 3 seeds), likewise;
# beauty-fp32:  that grid with mixed_precision "no" (fp32, as the published runs trained),
#               written to $WORK/amazon-beauty-fp32.yaml from the shipped grid;
# ml100k:       the paper grid's ML-100K cells (5 models + pop x L 32/64/128 x 3 seeds);
# tune-ml1m:    issue 18: xLSTM and SASRec tuned on ML-1M, 20 trials each, the same budget
#               (grids/tune-ml1m.yaml, CELLS_PER_GPU trials at a time), the best of each
#               written to $WORK/tune-ml1m/best.yaml, the trials to $WORK/tune-ml1m-status.*;
# tune-ml1m-final: that best grid at seeds 42/123/2023 ($WORK/tune-ml1m-final; the untuned
#               xLSTM and SASRec on ML-1M are the study sweep's cells);
# resume-SWEEP: resume that sweep (cells without a COMPLETED result);
# aggregate:    status, tables and plots of every sweep present;
# evalcheck:    seed-42 checkpoints (Beauty, ML-100K L=64) evaluated on the GPU and the CPU;
# pack:         results (no checkpoints) into $OUT/study.tgz, and the checkpoints of cells
#               that did not finish into $OUT/resume.tgz.part-aa, -ab, … (15 MiB each).
# Issue 16's main grid (launcher/grids/study.yaml), grown a slice at a time in one sweep,
# $WORK/study (`sweep --extend`):
# study-DATASET: that dataset's cells (MODELS=a,b,... to run some models only; the others are
#               added by a later call);
# study-analyses-DATASET: geometry (RQ4) and long-tail (RQ2) analyses of that dataset's
#               completed cells (their checkpoints stay on the GPU machine) into
#               $WORK/study-analyses/DATASET/{geometry,longtail} (SWEEP=NAME: of $WORK/NAME);
# study-aggregate: the study sweep's tables and plots into $WORK/study-aggregate.
# rerun-DATASET: that dataset's cells of seeds SEEDS (default 42,123; MODELS=a,b for some) of
#               the grid GRID (default study) trained again into $WORK/rerun-DATASET, for the
#               checkpoints an earlier call's machine took with it; `SWEEP=rerun-DATASET
#               bash jobs/study_gpu.sh study-analyses-DATASET` analyses them into
#               $WORK/study-analyses/DATASET-rerun (study_call.sh's RERUN does both).
# cost-DATASET: RQ3's exclusive cost: that dataset's seed-42 cell of every model (MODELS=a,b for
#               some), one at a time alone on the GPU, into $WORK/cost (cells sharing a GPU
#               take turns on it, so a shared call's seconds are not a model's cost), then
#               its aggregate ($WORK/cost-aggregate: cost.md, compute.md).
# latency:      inference latency against max_len 64-1472 (D 256, 4 blocks) for the seven
#               models at the study's batch 32 and at 512, where compute dominates
#               ($WORK/latency-bB/MODEL, fitted together into $WORK/latency-bB;
#               LATENCY_BATCHES="512" for one batch);
# long-histories: training epoch time and memory at max_len 512-2048 ($WORK/long-histories);
# grid-NAME:    the shipped grid NAME (study-lengths, study-dims: RQ2; study-long) into $WORK/NAME, grown
#               like the study (DATASET=d and MODELS=a,b select cells; REUSE=SWEEP copies the
#               cells that sweep finished), then its aggregate.
# Environment: WORK (sweeps, default /tmp/study), OUT (default $WORK/out), RECSYS_DATA_MIRROR,
# CELLS_PER_GPU (default 6), PROCESS_PER_CELL=1 (the study, grid and resume phases: a process
# per cell, not persistent workers), MPS=1 (those phases with --mps: NVIDIA MPS for the run).
set -u
WORK=${WORK:-/tmp/study}
OUT=${OUT:-$WORK/out}
CELLS=${CELLS_PER_GPU:-6}
MODE=()     # PROCESS_PER_CELL=1: a fresh process per cell instead of persistent workers
[ "${PROCESS_PER_CELL:-0}" = 1 ] && MODE=(--process-per-cell)
[ "${MPS:-0}" = 1 ] && MODE+=(--mps)   # MPS=1: the cells sharing the GPU as MPS clients
export PYTHONUNBUFFERED=1
mkdir -p "$WORK" "$OUT"
PY=${PYTHON:-python3}
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/study.log"; }
ms() { date +%s%3N; }

for phase in "$@"; do
  t0=$(ms)
  case $phase in
    beauty-solo)
      for cache in cold warm; do
        t1=$(ms)
        $PY -m launcher sweep amazon-beauty --where model=sasrec --where seed=42 \
          --executor local --out "$WORK/beauty-solo-$cache" >>"$OUT/study.log" 2>&1
        log "beauty-solo ($cache Triton cache): $(( $(ms) - t1 )) ms end to end (launcher → result.json)"
      done ;;
    beauty-sasrec)
      $PY -m launcher sweep amazon-beauty-sasrec --executor local --cells-per-gpu "$CELLS" \
        --out "$WORK/amazon-beauty-sasrec" >>"$OUT/study.log" 2>&1
      log "beauty-sasrec: $(( $(ms) - t0 )) ms for the sweep" ;;
    beauty-both)   # beauty and beauty-sasrec at once, sharing the GPU (CELLS and 3 cells)
      $PY -m launcher sweep amazon-beauty-sasrec --executor local --cells-per-gpu 3 \
        --out "$WORK/amazon-beauty-sasrec" >>"$OUT/study-sasrec.log" 2>&1 &
      $PY -m launcher sweep amazon-beauty --executor local --cells-per-gpu "$CELLS" \
        --out "$WORK/amazon-beauty" >>"$OUT/study.log" 2>&1
      log "beauty: $(( $(ms) - t0 )) ms for the sweep"
      wait
      cat "$OUT/study-sasrec.log" >>"$OUT/study.log" && rm "$OUT/study-sasrec.log"
      log "beauty-sasrec: $(( $(ms) - t0 )) ms for both sweeps" ;;
    ml100k)
      $PY -m launcher sweep paper --where dataset=ml-100k --executor local \
        --cells-per-gpu "$CELLS" --out "$WORK/ml-100k" >>"$OUT/study.log" 2>&1
      log "ml100k: $(( $(ms) - t0 )) ms for the sweep" ;;
    beauty)
      $PY -m launcher sweep amazon-beauty --executor local --cells-per-gpu "$CELLS" \
        --out "$WORK/amazon-beauty" >>"$OUT/study.log" 2>&1
      log "beauty: $(( $(ms) - t0 )) ms for the sweep" ;;
    beauty-fp32)
      sed -e 's/^name: amazon-beauty$/name: amazon-beauty-fp32/' \
          -e 's/^fixed:$/fixed:\n  mixed_precision: "no"/' launcher/grids/amazon-beauty.yaml \
          >"$WORK/amazon-beauty-fp32.yaml"
      $PY -m launcher sweep "$WORK/amazon-beauty-fp32.yaml" --executor local \
        --cells-per-gpu "$CELLS" --out "$WORK/amazon-beauty-fp32" >>"$OUT/study.log" 2>&1
      log "beauty-fp32: $(( $(ms) - t0 )) ms for the sweep" ;;
    tune-ml1m)     # run again, it continues where it stopped (the same trials, nothing twice);
      # TUNE_BUDGET=S: the tuner is stopped after S seconds (SIGTERM, as Ctrl-C: its running
      # trials stop and keep their checkpoints), so that a device call can pack what it has
      tune_mps=(); [ "${MPS:-0}" = 1 ] && tune_mps=(--mps)
      timeout "${TUNE_BUDGET:-0}" $PY -m launcher tune tune-ml1m --executor local \
        --cells-per-gpu "$CELLS" "${tune_mps[@]}" --parallel "$CELLS" --out "$WORK/tune-ml1m" \
        --emit-grid "$WORK/tune-ml1m/best.yaml" >>"$OUT/study.log" 2>&1
      $PY -m launcher tune status "$WORK/tune-ml1m" >"$WORK/tune-ml1m-status.txt" 2>&1
      $PY -m launcher tune status "$WORK/tune-ml1m" --json >"$WORK/tune-ml1m-status.json"
      log "tune-ml1m: $(( $(ms) - t0 )) ms for the search" ;;
    tune-ml1m-final)
      $PY -m launcher sweep "$WORK/tune-ml1m/best.yaml" --executor local --cells-per-gpu "$CELLS" \
        "${MODE[@]}" --out "$WORK/tune-ml1m-final" >>"$OUT/study.log" 2>&1
      log "tune-ml1m-final: $(( $(ms) - t0 )) ms (the untuned cells: the study sweep's)" ;;
    study-aggregate)
      $PY -m launcher aggregate "$WORK/study" --out "$WORK/study-aggregate" >>"$OUT/study.log" 2>&1
      log "study-aggregate: $(( $(ms) - t0 )) ms" ;;
    rerun-*)
      ds=${phase#rerun-}
      only=(--where "dataset=$ds" --where "seed=${SEEDS:-42,123}")
      [ -n "${MODELS:-}" ] && only+=(--where "model=$MODELS")
      # A continued call's cut cells first (`sweep --extend` runs only the cells it adds)
      [ -f "$WORK/$phase/manifest.json" ] && $PY -m launcher resume "$WORK/$phase" "${only[@]}" \
        --executor local --cells-per-gpu "$CELLS" "${MODE[@]}" >>"$OUT/study.log" 2>&1
      $PY -m launcher sweep "${GRID:-study}" "${only[@]}" --extend --executor local \
        --cells-per-gpu "$CELLS" "${MODE[@]}" --out "$WORK/$phase" >>"$OUT/study.log" 2>&1
      log "$phase (seeds ${SEEDS:-42,123}, ${MODELS:-all models}): $(( $(ms) - t0 )) ms" ;;
    study-analyses-*)
      ds=${phase#study-analyses-}
      sweep=$WORK/${SWEEP:-study} dest=$ds
      [ "${SWEEP:-study}" = study ] || dest=$ds-${SWEEP%%-*}    # SWEEP=rerun-D: D-rerun
      runs=$($PY -m jobs.finished "$sweep" --dataset "$ds" --with-checkpoint | cut -d' ' -f1)
      [ -n "$runs" ] || { log "$phase: no completed cell with a checkpoint"; continue; }
      # The trainer records the long tail in result.json since session 11 (longtail_* fields):
      # only older runs need the longtail analysis.
      # shellcheck disable=SC2086  # one run folder per word
      lt_runs=$(for r in $runs; do grep -q '"longtail_recall@10_all"' "$r/result.json" || echo "$r"; done)
      for a in geometry longtail; do
        todo=$runs
        [ "$a" = longtail ] && todo=$lt_runs
        [ -n "$todo" ] || continue
        # shellcheck disable=SC2086  # one run folder per word
        $PY -m recsys_core.analysis $a $todo --device auto --out "$WORK/study-analyses/$dest/$a" \
          >>"$OUT/study.log" 2>&1 || log "$a $ds failed (exit $?)"
      done
      log "$phase ($(echo $runs | wc -w) runs): $(( $(ms) - t0 )) ms" ;;
    latency)     # a model at a time, so that a cut call keeps the models it measured
      for b in ${LATENCY_BATCHES:-32 512}; do
        for m in sasrec bert4rec xlstm gru4rec lstm mamba4rec sasmamba; do
          $PY -m recsys_core.analysis latency --models $m --batch "$b" --lengths 64:1536:128 \
            --device auto --out "$WORK/latency-b$b/$m" >>"$OUT/study.log" 2>&1 \
            || log "latency $m batch $b failed (exit $?)"
        done
        $PY -m recsys_core.analysis latency --tables "$WORK/latency-b$b"/*/ \
          --out "$WORK/latency-b$b" >>"$OUT/study.log" 2>&1
      done
      log "latency: $(( $(ms) - t0 )) ms" ;;
    long-histories)
      $PY -m benchmarks.long_sequences --device auto --out-dir "$WORK/long-histories" \
        >>"$OUT/study.log" 2>&1 || log "long-histories failed (exit $?)"
      log "long-histories: $(( $(ms) - t0 )) ms" ;;
    grid-*)
      name=${phase#grid-}
      only=()
      [ -n "${DATASET:-}" ] && only+=(--where "dataset=$DATASET")
      [ -n "${MODELS:-}" ] && only+=(--where "model=$MODELS")
      [ -n "${REUSE:-}" ] && only+=(--reuse "$REUSE")   # e.g. results/study/sweep's cells
      $PY -m launcher sweep "$name" "${only[@]}" --extend --executor local \
        --cells-per-gpu "$CELLS" "${MODE[@]}" --out "$WORK/$name" >>"$OUT/study.log" 2>&1
      $PY -m launcher aggregate "$WORK/$name" --out "$WORK/$name-aggregate" >>"$OUT/study.log" 2>&1
      log "$phase (${DATASET:-all datasets}, ${MODELS:-all models}): $(( $(ms) - t0 )) ms" ;;
    cost-*)
      only=()
      [ -n "${MODELS:-}" ] && only=(--where "model=$MODELS")
      $PY -m launcher sweep study --where "dataset=${phase#cost-}" --where seed=42 "${only[@]}" \
        --extend --executor local --cells-per-gpu 1 --workers 1 --out "$WORK/cost" >>"$OUT/study.log" 2>&1
      $PY -m launcher aggregate "$WORK/cost" --out "$WORK/cost-aggregate" >>"$OUT/study.log" 2>&1
      log "$phase (${MODELS:-all models}, one at a time): $(( $(ms) - t0 )) ms" ;;
    study-*)
      only=()
      [ -n "${MODELS:-}" ] && only=(--where "model=$MODELS")
      $PY -m launcher sweep study --where "dataset=${phase#study-}" "${only[@]}" --extend \
        --executor local --cells-per-gpu "$CELLS" "${MODE[@]}" --out "$WORK/study" >>"$OUT/study.log" 2>&1
      log "$phase (${MODELS:-all models}): $(( $(ms) - t0 )) ms" ;;
    resume-*)
      sweep=${phase#resume-}
      $PY -m launcher resume "$WORK/$sweep" --executor local --cells-per-gpu "$CELLS" "${MODE[@]}" \
        >>"$OUT/study.log" 2>&1
      log "$phase: $(( $(ms) - t0 )) ms" ;;
    aggregate)
      for s in ml-100k amazon-beauty amazon-beauty-fp32 amazon-beauty-sasrec beauty-solo-cold beauty-solo-warm tune-ml1m tune-ml1m-final; do
        [ -d "$WORK/$s" ] || continue
        $PY -m launcher status "$WORK/$s" >"$WORK/status-$s.txt" 2>&1
        $PY -m launcher aggregate "$WORK/$s" --out "$WORK/aggregate-$s" >>"$OUT/study.log" 2>&1
        echo "wandb offline runs in $s: $(find "$WORK/$s" -maxdepth 4 -type d -name 'offline-run-*' | wc -l)" | tee -a "$OUT/study.log"
      done
      log "aggregate: $(( $(ms) - t0 )) ms" ;;
    evalcheck)
      : >"$OUT/evalcheck.jsonl"
      for d in "$WORK"/amazon-beauty/cells/*/ "$WORK"/ml-100k/cells/*/; do
        [ -f "$d/best_model.pt" ] || continue
        name=$(basename "$d")
        grep -q '"seed": 42' "$d/cell.json" || continue
        grep -q '"max_len": 64\|amazon-beauty' "$d/cell.json" || continue
        for dev in cuda cpu; do
          m=$($PY -m recsys_core.train.eval_checkpoint "$d" --device $dev 2>/dev/null | tail -n 1)
          echo "{\"cell\": \"$name\", \"device_asked\": \"$dev\", \"metrics\": ${m:-null}}" >>"$OUT/evalcheck.jsonl"
        done
      done
      log "evalcheck: $(( $(ms) - t0 )) ms, $(wc -l <"$OUT/evalcheck.jsonl") evaluations" ;;
    pack)
      tar czf "$OUT/study.tgz" -C "$WORK" --exclude='*.pt' --exclude='*.pt.*' --exclude='.cache' --exclude='wandb' --exclude='*.out' \
        --exclude='sbatch' --exclude='out' . 2>>"$OUT/study.log"
      # The checkpoints of cells that did not finish (a call's time ran out), for `resume`:
      # the most training seconds per byte first, up to RESUME_MAX_MB (a call brings back 8
      # files of 16 MiB, 64 MiB together, at most; a cell left out restarts from its first
      # epoch, and the log names it). jobs/resume_pick.py says why.
      # Without RESUME_MAX_MB: what the call's 64 MiB leave after what RETURN_DIR (the folder
      # the device brings back; default OUT) holds.
      if [ -n "${RESUME_MAX_MB:-}" ]; then room=(--max-mb "$RESUME_MAX_MB")
      else room=(--returned "${RETURN_DIR:-$OUT}"); fi
      ckpts=$(python3 -m jobs.resume_pick "$WORK" "${room[@]}" 2>>"$OUT/study.log")
      # In parts of 15 MiB (what a device call brings back per file); here:
      # cat resume.tgz.part-* | tar xz -C .study   (then: bash jobs/study_gpu.sh resume-study)
      rm -f "$OUT"/resume.tgz.part-*
      [ -z "$ckpts" ] || tar czf - -C "$WORK" $ckpts | split -b 15M - "$OUT/resume.tgz.part-"
      log "pack: $(du -h "$OUT/study.tgz" | cut -f1), resume checkpoints: $(echo $ckpts | wc -w)" \
        "in $(ls "$OUT"/resume.tgz.part-* 2>/dev/null | wc -l) part(s)" ;;
    *) echo "unknown phase $phase (beauty-solo beauty-sasrec beauty-both beauty beauty-fp32 ml100k tune-ml1m tune-ml1m-final resume-SWEEP aggregate evalcheck pack study-DATASET study-analyses-DATASET rerun-DATASET study-aggregate cost-DATASET latency long-histories grid-NAME)" >&2; exit 2 ;;
  esac
done
