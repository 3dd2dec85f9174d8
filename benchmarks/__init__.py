"""The project's benchmarks. Not part of the installed packages (pyproject installs launcher,
recsys_core and jobs only): they import the product, the product never imports them. Run them
from the repository root; each writes under results/benchmarks/ (or the folder given) and its
Markdown names the machine it ran on.

gpu_epoch        Seconds per training epoch (eager loop, CUDA-graph step, compiled encoder),
                 sequences/s, full-ranking evaluation time, peak GPU memory and utilisation,
                 against the floor of the output layer; a check of the graph against the
                 eager step and a torch.profiler summary. All seven trained models, one
                 process each.
                 `python -m benchmarks.gpu_epoch --out-dir results/benchmarks`
                 -> gpu_epoch.csv, gpu_epoch.md, gpu_runs.jsonl, gpu_profiles.txt
                 (CPU smoke run: --device cpu --datasets synthetic --max-len 20
                 --embedding-dim 16 --epochs 1)
long_sequences   Seconds and peak GPU memory per training epoch at max_len 512, 1,024 and
                 2,048 on synthetic data: mamba4rec, sasmamba, sasrec, xlstm; a row that runs
                 out of memory is recorded as OOM.
                 `python -m benchmarks.long_sequences --out-dir results/benchmarks/long_sequences`
                 -> long_sequences.csv, long_sequences.md
                 (CPU smoke run, tiny sizes: --device cpu)
scaling          One cell on 1 and on G GPUs through the launcher's own path (jobs.train_cell,
                 accelerate launch), and one checkpoint evaluated on 1 and on G processes.
                 `python -m benchmarks.scaling --out results/benchmarks/scaling --gpus 1 2`
                 -> scaling.csv, scaling.md, eval_equality.json, runs/
                 (CPU processes: --set '{"device": "cpu", ...}', as tests/test_train.py runs it)
rnn_precision    cuDNN's GRU/LSTM recurrence alone at the ML-1M training shape, forward and
                 backward, in bf16/fp16 autocast, fp32 with and without TF32 (CUDA only).
                 `python -m benchmarks.rnn_precision --out results/benchmarks/rnn_precision.json`
launcher_overhead  Planning a 10,000-cell grid; sbatch and sacct calls and wall time to submit
                 and to query 1,000 cells on the SLURM cluster SLURM_CONF names.
                 `python -m benchmarks.launcher_overhead [--skip-slurm]`
                 -> results/benchmarks/launcher.json, launcher.md
aggregate_speed  `python -m launcher aggregate` over a synthetic finished sweep of 10,000 cells,
                 cold and warm, with and without plots.
                 `python -m benchmarks.aggregate_speed [--cells 10000]`
                 -> results/benchmarks/aggregate.json, aggregate.md
grid_throughput  A grid from the launcher command to its last result.json: a process per cell
                 against persistent workers (and SLURM packs): wall time, cells/min, the share
                 of the slots' time not spent training, per-cell start-up and setup, same
                 metrics; `--profile`: one process's per-cell setup on the CPU, phase by phase.
                 `python -m benchmarks.grid_throughput --cells-per-gpu 6 --profile`
                 -> results/benchmarks/grid_throughput.md, grid_throughput.csv,
                 grid_setup_profile.md, grid_setup_profile.csv
                 (CPU smoke run: --smoke --out /tmp/gt; a cell's phases outside training,
                 launcher to exit, on a slow machine: --epochs 1 --name NAME)
compile_reuse    What compiling a cell's encoder costs (`compile_encoder: true`): on empty
                 caches, in a later cell of the same worker, in a later process on the first
                 sweep's caches (two local sweeps of one grid).
                 `python -m benchmarks.compile_reuse` -> results/benchmarks/compile_reuse/
                 (CPU smoke run: --smoke --out /tmp/cr)
compile_subprocesses  Trains one cell in this process and lists every process its run starts
                 (compilers, Inductor's checks, workers), when and from where.
                 `python -m benchmarks.compile_subprocesses SWEEP/cells/CELL`
triton_key       Triton's once-per-process cache key, hashed before an import or in a thread
                 beside it (what a GPU cell's setup does), fresh processes.
                 `python -m benchmarks.triton_key` -> results/benchmarks/triton_key/
triton_cold      The project's Triton kernels (fused loss, rank counts) at the Beauty cell's
                 shape in a fresh process, on an empty and on a full Triton cache (CUDA only).
                 `python -m benchmarks.triton_cold` -> results/benchmarks/triton_cold/
sasrec_encoder   SASRec's encoder of `original` blocks before session 28 (nn.MultiheadAttention's
                 call, nn.Embedding's positions) and now (batch-first attention, positions as
                 a matmul, weights cast once), at the Beauty cell's shape: operations and
                 copies dispatched by one forward and backward; on CUDA the step's kernels,
                 their time, the step's GPU time.  `python -m benchmarks.sasrec_encoder` -> results/benchmarks/sasrec_encoder/
sampling         `python -m recsys_core.data sample` on a synthetic Music4All-Onion-shaped log
                 of 12.5, 25 and 50 M rows (Parquet, generated in chunks under /tmp): rows/s,
                 peak RSS, output size.
                 `python -m benchmarks.sampling [--rows 12.5e6 25e6 50e6]`
                 -> results/benchmarks/sampling.md, sampling.csv
resume_check     A cell killed with SIGKILL and resumed from its checkpoint against the same
                 cell uninterrupted (and run twice), per model: every metric and epoch loss
                 compared exactly; on the GPU, the CUDA-graph step that captures again.
                 `python -m benchmarks.resume_check --out results/benchmarks/resume_check_h200`
                 -> resume_check.json, resume_check.md, resume_check.csv
                 (CPU smoke run: --device cpu --epochs 4 --models gru4rec sasrec)
cost_from_history  RQ3's cost table from a sweep's epoch records (history.parquet): the steady
                 (median) and first epoch, the time to the best epoch as run and at the
                 steady epoch, wall, metrics, per model against SASRec; for results written
                 before the trainer recorded `epoch_time_median_s` and `time_to_best_s`.
                 `python -m benchmarks.cost_from_history SWEEP --out DIR` -> DIR/NAME.md, .csv
study_cost_estimate  RQ3 until the study's cost phase runs: each model's exclusive seconds per
                 epoch on an H200 (gpu_epoch's runs) × its best epochs in the study's ML-1M
                 cells (CPU only; reads committed files).
                 `python -m benchmarks.study_cost_estimate` -> results/study/cost_estimate.md

Shared by them: timing.py (wall clock, CUDA-synchronised, CUDA events), report.py (the CSV and
Markdown tables), run_setup.py (the one place a run's setup is built, as the trainer builds
it); gpu_profile.py and graph_check.py are gpu_epoch's parts. GPU utilisation is sampled by
recsys_core.telemetry.GpuTelemetry.sampler.
"""
