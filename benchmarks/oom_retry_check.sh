#!/usr/bin/env bash
# The local executor's OOM retry on a real GPU (issue 17): one cell's peak memory alone, then a
# process that fills the GPU but for room for about 2.5 such cells, then 8 cells at 4 per GPU,
# in workers and with a process per cell. Expected: real torch OOMs recognised ("out of GPU
# memory on GPU 0 shared by N cells; places now ..."), every cell COMPLETED, the retried ones
# with oom_retries >= 1. If no OOM happens, lower KEEP (cells' worth of memory left free).
# Run from the repository root on a GPU machine:  OUT=DIR bash benchmarks/oom_retry_check.sh
set -u
PY=${PYTHON:-python3}; W=${WORK:-/tmp/oomchk}; KEEP=${KEEP:-2.5}
mkdir -p "$W" "$OUT"; G=$W/g.json
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} PYTHONUNBUFFERED=1
cat > "$G" <<'GRID'
{"name": "oom-check", "fixed": {"model": "sasrec", "dataset": "synthetic",
 "synthetic": {"n_users": 4000, "n_items": 100000, "n_interactions": 200000, "seed": 3},
 "max_len": 50, "embedding_dim": 64, "num_heads": 2, "num_blocks": 2, "batch_size": 256,
 "eval_batch_size": 2048, "epochs": 2, "wandb_mode": "disabled"},
 "grid": {"seed": [1, 2, 3, 4, 5, 6, 7, 8, 9]}, "resources": {"gpus": 1}}
GRID
$PY -m launcher sweep "$G" --executor local --where seed=9 --out "$W/alone" >"$OUT/alone.log" 2>&1
PEAK=$($PY -c "import json,glob; print(int(max(json.load(open(f))['peak_gpu_mem_mb'] for f in glob.glob('$W/alone/cells/*/result.json'))))")
$PY -c "import torch,time; free,_=torch.cuda.mem_get_info(); keep=int($KEEP*($PEAK+700)*2**20); x=torch.empty(free-keep, dtype=torch.uint8, device='cuda'); open('$W/hog.ready','w').write(f'{free-keep} {keep}'); time.sleep(3600)" &
HOG=$!
while [ ! -e "$W/hog.ready" ]; do sleep 1; done
echo "peak ${PEAK} MiB; hog, kept free (bytes): $(cat "$W/hog.ready")" >"$OUT/summary.txt"
$PY -m launcher sweep "$G" --executor local --where seed=1,2,3,4,5,6,7,8 --cells-per-gpu 4 \
  --out "$W/workers" >"$OUT/workers.log" 2>&1
$PY -m launcher sweep "$G" --executor local --where seed=1,2,3,4,5,6,7,8 --cells-per-gpu 4 \
  --process-per-cell --out "$W/ppc" >"$OUT/ppc.log" 2>&1
kill $HOG
for s in workers ppc; do
  $PY -m launcher status "$W/$s" >>"$OUT/summary.txt" 2>&1
  $PY -c "import json,glob,sys; [print(sys.argv[1], r['seed'], r['status'], r.get('oom_retries'), r.get('resumed_from_epoch'), r.get('peak_gpu_mem_mb'), (r.get('reason') or '')[:80]) for r in (json.load(open(f)) for f in sorted(glob.glob(sys.argv[1]+'/cells/*/result.json')))]" "$W/$s" >>"$OUT/summary.txt"
  cat "$W/$s"/cells/*/oom_retries.json >"$OUT/$s-oom_retries.json" 2>/dev/null
done
