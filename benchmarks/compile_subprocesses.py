"""Which processes a cell's run starts, when, and from where: the compilers, the checks and the
workers behind a slow `compile_encoder` (results/benchmarks/compile_reuse/).

    python -m benchmarks.compile_subprocesses SWEEP/cells/CELL     # trains the cell here

The cell trains in this process as a job does (jobs.train_cell.train); every subprocess.Popen
it makes is listed afterwards: its start (seconds since this process began), exit status,
command line and the frames that started it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import traceback

STARTED: list[subprocess.Popen] = []


def watch_popen(t0: float) -> None:
    """Record every Popen of this process (its start time, command and caller)."""
    init = subprocess.Popen.__init__

    def recorded(self, args, *rest, **kwargs):
        frames = traceback.extract_stack()[-9:-1]
        self.recorded = (time.time() - t0, str(args)[:300],
                         [f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}"
                          for f in frames])
        STARTED.append(self)
        return init(self, args, *rest, **kwargs)
    subprocess.Popen.__init__ = recorded


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    t0 = time.time()
    watch_popen(t0)
    from jobs.train_cell import train
    train(argv[0], since=t0, job={})
    result = json.loads(open(f"{argv[0]}/result.json").read())
    capture = result.get("time_capture_s")      # none where no CUDA graph ran (the CPU)
    print(f"capture {capture if capture is None else round(capture, 2)} "
          f"total {time.time() - t0:.1f}", result.get("train_step"))
    for proc in STARTED:
        start, command, frames = proc.recorded
        print(f"--- started +{start:.2f}s rc={proc.poll()}: {command}")
        for frame in frames:
            print("      ", frame)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
