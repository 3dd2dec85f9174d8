"""jobs/study_call.sh, one device call of the study, run here on the CPU with a tiny sweep: the
chosen slice of unfinished cells runs, the results come back in back.tgz, and the checkpoints of
cells still unfinished come back in resume parts: the most training per byte first, up to
RESUME_MAX_MB (the device returns 64 MiB in all), a cell whose only result is a FAILED one of
an earlier try counted unfinished (session 10 lost 11 cells' checkpoints to that)."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.conftest import REPO
from tests.test_order import grid


def study_call(tmp_path: Path, name: str, **settings: str) -> Path:
    """jobs/study_call.sh run here with OUT = tmp_path/out-NAME, WORK = tmp_path/work and the
    given settings; its back.tgz extracted into tmp_path/back-NAME, returned."""
    out = tmp_path / f"out-{name}"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "OUT": str(out), "WORK": str(tmp_path / "work"), "BUDGET": "200",
           "CELLS_PER_GPU": "2", **settings}
    call = subprocess.run(["bash", "jobs/study_call.sh"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert call.returncode == 0, call.stdout[-2000:] + call.stderr[-2000:]
    back = tmp_path / f"back-{name}"
    with tarfile.open(out / "back.tgz") as t:
        t.extractall(back, filter="data")
    return back


def test_a_call_runs_its_slice_and_brings_back_results_and_unfinished_checkpoints(tmp_path):
    study = tmp_path / "study"
    made = subprocess.run([sys.executable, "-m", "launcher", "sweep", grid(tmp_path),
                           "--executor", "dry-run", "--out", study],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    cells = {c["name"]: study / "cells" / c["id"]     # a dry-run's cells have no folder yet
             for c in json.loads((study / "manifest.json").read_text())["cells"]}
    for d in cells.values():
        d.mkdir(parents=True, exist_ok=True)
    failed_before = cells["sasrec-synthetic-L8-s1"]      # an earlier try's FAILED result
    (failed_before / "result.json").write_text(json.dumps({"status": "FAILED"}))
    (failed_before / "checkpoint.pt").write_bytes(b"c" * 300_000)
    (failed_before / "best_model.pt").write_bytes(b"b" * 100_000)
    too_big = cells["bert4rec-synthetic-L8-s1"]          # past RESUME_MAX_MB: restarts
    (too_big / "checkpoint.pt").write_bytes(os.urandom(2_000_000))
    (too_big / "checkpoint.pt.unreadable").write_bytes(b"u" * 1000)   # kept aside by a resume

    back = study_call(tmp_path, "first", STUDY=str(study), RESUME_WHERE="model=gru4rec,pop",
                      RESUME_MAX_MB="1")
    out = tmp_path / "out-first"
    log = (back / "o" / "call.log").read_text()
    assert "packed (training over)" in log and "packed again" in log
    # no ANALYSES and no dataset in RESUME_WHERE: the datasets of the cells this call finished
    # (session 12 lost amazon-beauty's checkpoints to a call that analysed nothing)
    assert "analyses: synthetic" in log
    assert "resuming 4 cell(s)" in (back / "o" / "logs" / "resume.log").read_text()
    with tarfile.open(back / "o" / "study.tgz") as t:
        assert "./study-analyses/synthetic/geometry/geometry.csv" in t.getnames()
        done = {n for n in t.getnames() if n.endswith("result.json")}
        assert not [n for n in t.getnames() if ".pt" in n]      # weights travel apart, if at all
        statuses = [json.load(t.extractfile(n))["status"] for n in sorted(done)]
    assert len(done) == 5 and statuses.count("COMPLETED") == 4    # + the FAILED one
    parts = sorted(out.glob("resume.tgz.part-*"))
    assert parts, list(out.iterdir())
    listing = subprocess.run(f"cat {' '.join(map(str, parts))} | tar tz", shell=True,
                             capture_output=True, text=True, check=True).stdout.split()
    assert sorted(listing) == sorted(f"study/cells/{failed_before.name}/{f}"
                                     for f in ("checkpoint.pt", "best_model.pt"))
    assert f"left out (restarts from scratch): study/cells/{too_big.name}/" in \
        (back / "o" / "study.log").read_text()

    # The next call, back to back on the same machine: it carries on from the sweep the first
    # left in WORK (gru4rec and pop done there), not from the stale carried copy.
    back2 = study_call(tmp_path, "again", CONTINUE="1", STUDY=str(tmp_path / "absent"),
                       ANALYSES="synthetic", RESUME_WHERE="model=gru4rec,pop,bert4rec seed=2",
                       RESUME_MAX_MB="1")
    assert "continuing the sweep the previous call left in" in (back2 / "o" / "call.log").read_text()
    assert "resuming 1 cell(s)" in (back2 / "o" / "logs" / "resume.log").read_text()
    # The analyses of the cells trained on this machine: geometry only, since their results
    # hold the long tail already (longtail_* fields).
    with tarfile.open(back2 / "o" / "study.tgz") as t:
        names = t.getnames()
    assert "./study-analyses/synthetic/geometry/geometry.csv" in names, names
    assert not any("study-analyses/synthetic/longtail" in n for n in names)


def _status(sweep: Path) -> dict[str, str]:
    proc = subprocess.run([sys.executable, "-m", "launcher", "status", sweep, "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {c["name"]: c["state"] for c in json.loads(proc.stdout)}


def test_merging_calls_keeps_each_completed_result_final_and_carries_checkpoints(tmp_path):
    """Two calls started from one sweep: the first completes a cell, the second (started from
    the stale copy) runs it again and is cut; the merge keeps the result COMPLETED (session
    11's third call did this to three Yelp cells) and the state carries the cut checkpoint."""
    import shutil
    into = tmp_path / "sweep"
    made = subprocess.run([sys.executable, "-m", "launcher", "sweep", grid(tmp_path),
                           "--executor", "dry-run", "--out", into],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    ids = {c["name"]: c["id"] for c in json.loads((into / "manifest.json").read_text())["cells"]}
    done, cut = ids["gru4rec-synthetic-L8-s1"], ids["sasrec-synthetic-L8-s1"]
    calls = [tmp_path / "call1", tmp_path / "call2"]
    for call in calls:
        shutil.copytree(into, call)
    def submit(call: Path, cell: str, at: float) -> None:
        with (call / "submissions.jsonl").open("a") as f:
            f.write(json.dumps({"cell": cell, "executor": "local", "job_id": None,
                                "time": at}) + "\n")
    submit(calls[0], done, 1000.0)
    d = calls[0] / "cells" / done
    d.mkdir(parents=True, exist_ok=True)
    (d / "result.json").write_text(json.dumps({"status": "COMPLETED", "test_recall@10": 0.5}))
    os.utime(d / "result.json", (1100.0, 1100.0))
    submit(calls[1], done, 1200.0)          # the stale rerun, cut before it finished
    submit(calls[1], cut, 1200.0)
    d = calls[1] / "cells" / cut
    d.mkdir(parents=True, exist_ok=True)
    (d / "checkpoint.pt").write_bytes(b"c" * 1000)
    (d / "best_model.pt").write_bytes(b"b" * 1000)

    state = tmp_path / "state"
    merged = subprocess.run([sys.executable, "-m", "jobs.study_merge", *calls, "--into", into,
                             "--state", state], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert merged.returncode == 0, merged.stderr
    assert "1 cell(s) COMPLETED copied" in merged.stdout
    assert "1 unfinished cell(s) carry their checkpoints" in merged.stdout
    states = _status(into)
    assert states["gru4rec-synthetic-L8-s1"] == "COMPLETED"
    assert states["sasrec-synthetic-L8-s1"] == "NOT_STARTED"
    assert json.loads((into / "cells" / done / "result.json").read_text())["test_recall@10"] == 0.5
    assert not (into / "cells" / cut / "checkpoint.pt").exists()     # never committed
    assert (state / "cells" / cut / "checkpoint.pt").read_bytes() == b"c" * 1000
    assert _status(state) == states
    kept = subprocess.run([sys.executable, "-m", "jobs.study_merge", calls[0], "--into", into,
                           "--state", state], cwd=REPO, capture_output=True, text=True,
                          timeout=120)      # a later merge without that call keeps its checkpoint
    assert kept.returncode == 0, kept.stderr
    assert (state / "cells" / cut / "checkpoint.pt").read_bytes() == b"c" * 1000
    assert not (tmp_path / "state.old").exists()

    capped = subprocess.run([sys.executable, "-m", "jobs.study_merge", *calls, "--into", into,
                             "--state", state, "--state-max-mb", "0.0015"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert capped.returncode == 0, capped.stderr
    assert "0 unfinished cell(s) carry their checkpoints; left out (past --state-max-mb): " \
        "sasrec-synthetic-L8-s1 (0.0 MB)" in capped.stdout
    assert not (state / "cells" / cut / "checkpoint.pt").exists()
    (tmp_path / "grid.yaml").write_text("name: x\n")      # a file given as a call's sweep
    a_file = subprocess.run([sys.executable, "-m", "jobs.study_merge", tmp_path / "grid.yaml",
                             "--into", into], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert a_file.returncode == 1 and "grid.yaml: not a sweep directory" in a_file.stderr
    assert "Traceback" not in a_file.stderr


def test_a_rerun_call_trains_a_datasets_cells_again_and_analyses_them(tmp_path):
    """study_call.sh RERUN=D: the checkpoints a finished call did not keep come back by
    training the chosen seeds again (jobs/study_gpu.sh rerun-D, within the call's budget);
    their analyses are written beside the study's (study-analyses/D-rerun) and packed."""
    study = tmp_path / "study"
    made = subprocess.run([sys.executable, "-m", "launcher", "sweep", grid(tmp_path),
                           "--executor", "dry-run", "--out", study],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    back = study_call(tmp_path, "rerun", STUDY=str(study), RESUME_WHERE="none",
                      RERUN="synthetic", RERUN_AT_ONCE="1", GRID=str(grid(tmp_path)), SEEDS="2",
                      MODELS="gru4rec,sasrec,pop")
    log = (back / "o" / "call.log").read_text()
    assert "rerun synthetic: exit 0" in log and "analyses: none" in log
    assert "study-analyses-synthetic (2 runs)" in (back / "o" / "logs" / "an-rerun-synthetic.log"
                                                   ).read_text()   # pop: no checkpoint
    with tarfile.open(back / "o" / "study.tgz") as t:
        names = t.getnames()
        table = t.extractfile("./study-analyses/synthetic-rerun/geometry/geometry.csv").read()
        results = [json.load(t.extractfile(n)) for n in names
                   if n.startswith("./rerun-synthetic/cells/") and n.endswith("result.json")]
    assert table.decode().count("\n") == 3 and b"gru4rec" in table and b"sasrec" in table
    assert sorted(r["model"] for r in results) == ["gru4rec", "pop", "sasrec"]
    assert all(r["status"] == "COMPLETED" and r["seed"] == 2 for r in results)
    assert not any(n.startswith("./study-analyses/synthetic/") for n in names)

    # A continued call resumes the rerun sweep's cut cells before it adds any (here none: all
    # three completed; `sweep --extend` alone would never run a cut cell again).
    again = study_call(tmp_path, "rerun-again", CONTINUE="1", RESUME_WHERE="none",
                       RERUN="synthetic", GRID=str(grid(tmp_path)), SEEDS="2",
                       MODELS="gru4rec,sasrec,pop")
    assert "rerun synthetic: exit 0" in (again / "o" / "call.log").read_text()
    assert "nothing to resume" in (again / "o" / "study.log").read_text()


def test_a_call_runs_other_grids_and_a_continued_call_grows_them(tmp_path):
    """study_call.sh GRIDS=G (RQ2's grids): G's cells chosen by GRID_WHERE run into WORK/G
    (the study sweep's finished cells copied), packed with the rest; the next call on the
    same machine (CONTINUE=1) resumes G's unfinished cells and adds those newly chosen, here by
    a clause of G's own (GRIDS="G:KEY=V")."""
    study = tmp_path / "study"
    made = subprocess.run([sys.executable, "-m", "launcher", "sweep", grid(tmp_path),
                           "--executor", "dry-run", "--out", study],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr

    def results(back: Path) -> list[dict]:
        with tarfile.open(back / "o" / "study.tgz") as t:
            return [json.load(t.extractfile(n)) for n in t.getnames()
                    if n.startswith("./g/cells/") and n.endswith("result.json")]

    back = study_call(tmp_path, "grids", STUDY=str(study), RESUME_WHERE="none",
                      GRIDS=str(grid(tmp_path)), GRID_WHERE="model=gru4rec,pop seed=1")
    assert "grid g: exit 0" in (back / "o" / "call.log").read_text()
    first = results(back)
    assert sorted(r["model"] for r in first) == ["gru4rec", "pop"]
    assert all(r["status"] == "COMPLETED" and r["seed"] == 1 for r in first)

    back2 = study_call(tmp_path, "grids-again", CONTINUE="1", STUDY=str(study),
                       RESUME_WHERE="none", GRIDS=f"{grid(tmp_path)}:model=gru4rec,pop,sasrec",
                       GRID_WHERE="seed=1")
    log = (back2 / "o" / "call.log").read_text()
    assert "grid g, resume: exit 0" in log and "grid g: exit 0" in log
    assert sorted(r["model"] for r in results(back2)) == ["gru4rec", "pop", "sasrec"]


def test_grids_at_once_run_their_launchers_side_by_side(tmp_path):
    """GRIDS_AT_ONCE=1: every grid of GRIDS starts before any of them ends, and each still
    gets its own sweep, log and results."""
    study = tmp_path / "study"
    made = subprocess.run([sys.executable, "-m", "launcher", "sweep", grid(tmp_path),
                           "--executor", "dry-run", "--out", study],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    other = tmp_path / "h.yaml"
    other.write_text(grid(tmp_path).read_text())
    back = study_call(tmp_path, "at-once", STUDY=str(study), RESUME_WHERE="none",
                      GRIDS=f"{grid(tmp_path)} {other}", GRIDS_AT_ONCE="1",
                      GRID_WHERE="model=gru4rec,pop seed=1")
    events = [line.split("] ", 1)[1] for line in (back / "o" / "call.log").read_text().splitlines()
              if "] grid " in line]
    assert sorted(events[:2]) == ["grid g: started", "grid h: started"], events
    assert sorted(events[2:]) == ["grid g: exit 0", "grid h: exit 0"], events
    with tarfile.open(back / "o" / "study.tgz") as t:
        names = t.getnames()
    for g in ("g", "h"):
        assert sum(n.startswith(f"./{g}/cells/") and n.endswith("result.json")
                   for n in names) == 2, names


def test_the_checkpoints_that_come_back_are_those_with_the_most_training_per_byte(tmp_path):
    """jobs/resume_pick (the pack's and the merge's choice): session 19 packed smallest first and
    lost a cell 204 epochs in to make room for smaller ones 17 epochs in."""
    import pandas as pd
    work = tmp_path / "work"
    def cell(name: str, ckpt_bytes: int, epoch_seconds: list[float], status: str = "") -> Path:
        d = work / "g" / "cells" / name
        d.mkdir(parents=True)
        (d / "checkpoint.pt").write_bytes(os.urandom(ckpt_bytes))
        (d / "best_model.pt").write_bytes(os.urandom(ckpt_bytes // 4))
        pd.DataFrame({"epoch": range(1, len(epoch_seconds) + 1),
                      "epoch_time_s": epoch_seconds}).to_parquet(d / "history.parquet")
        if status:
            (d / "result.json").write_text(json.dumps({"status": status}))
        return d
    cell("far", 200_000, [5.0] * 200)                 # 1,000 s of training in 250 kB
    cell("near", 40_000, [5.0] * 3)                   # 15 s in 50 kB: smaller, worth less
    cell("failed", 20_000, [5.0] * 3, "FAILED")       # an earlier try's FAILED result: unfinished
    cell("done", 20_000, [5.0] * 3, "COMPLETED")      # finished: nothing to resume
    picked = subprocess.run([sys.executable, "-m", "jobs.resume_pick", work, "--max-mb", "0.3"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert picked.returncode == 0, picked.stderr
    assert picked.stdout.split() == ["g/cells/far/checkpoint.pt", "g/cells/far/best_model.pt",
                                     "g/cells/failed/checkpoint.pt", "g/cells/failed/best_model.pt"]
    assert picked.stderr.strip() == "left out (restarts from scratch): g/cells/near/"


def test_a_call_leaves_a_daemon_it_did_not_start_running(tmp_path):
    """Session 22 ran two calls side by side on one GPU: the second found the first's MPS
    daemon, logged "no MPS daemon", and at its end sent that daemon `quit` all the same."""
    from tests.test_mps import calls, fake_control
    study = tmp_path / "study"
    made = subprocess.run([sys.executable, "-m", "launcher", "sweep", grid(tmp_path),
                           "--executor", "dry-run", "--out", study],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    bin_dir, record = fake_control(tmp_path)
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "control").write_text("")          # another call's daemon, listening
    path = f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    back = study_call(tmp_path, "beside", STUDY=str(study), RESUME_WHERE="none", PATH=path,
                      CUDA_MPS_PIPE_DIRECTORY=str(pipe))
    log = (back / "o" / "call.log").read_text()
    assert f"MPS: the daemon already listening on {pipe} (left running)" in log, log
    assert "no MPS daemon" not in log
    said = [c["stdin"].strip() or c["argv"] for c in calls(record)]
    assert "quit" not in said and ["-d"] not in said and (pipe / "control").exists()

    (pipe / "control").unlink()                # none listening: this call starts and ends one
    record.unlink()
    study_call(tmp_path, "alone", STUDY=str(study), RESUME_WHERE="none", PATH=path,
               CUDA_MPS_PIPE_DIRECTORY=str(pipe))
    said = [c["stdin"].strip() or c["argv"] for c in calls(record)]
    assert said[:2] == ["get_server_list", ["-d"]] and said[-1] == "quit", said
    assert not (pipe / "control").exists()


def test_the_checkpoints_get_what_the_calls_return_leaves(tmp_path):
    """Without RESUME_MAX_MB the pack gives the checkpoints what the device's 64 MiB leave
    after the rest of the call's return (its old resume parts aside) and 2 MiB of later logs:
    a fixed 50 MiB left a 69-epoch SASMamba checkpoint behind with 20 MiB unused (session 23)."""
    work, returned = tmp_path / "work", tmp_path / "out"
    for cell, mib in (("a", 3), ("b", 2)):
        d = work / "sweep" / "cells" / cell
        d.mkdir(parents=True)
        with open(d / "checkpoint.pt", "wb") as f:
            f.truncate(mib * 1048576)
    (returned / "o").mkdir(parents=True)
    with open(returned / "o" / "study.tgz", "wb") as f:      # 58.5 MiB returned already
        f.truncate(int(58.5 * 1048576))
    (returned / "resume.tgz.part-aa").write_bytes(b"p" * 4_000_000)   # the pack makes it anew
    pick = subprocess.run([sys.executable, "-m", "jobs.resume_pick", work, "--returned", returned],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert pick.returncode == 0, pick.stderr
    assert pick.stdout.split() == ["sweep/cells/b/checkpoint.pt"]       # 3.5 MiB of room
    assert "room for checkpoints: 3.5 MiB" in pick.stderr
    assert "left out (restarts from scratch): sweep/cells/a/" in pick.stderr
    bare = subprocess.run([sys.executable, "-m", "jobs.resume_pick", work], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "--max-mb" in bare.stderr
    for args, said in (([str(tmp_path / "nowhere"), "--max-mb", "5"], "nowhere: not a folder"),
                       ([work, "--max-mb", "-3"], "--max-mb -3: a size in MiB is 0 or more")):
        bad = subprocess.run([sys.executable, "-m", "jobs.resume_pick", *args], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and said in bad.stderr and not bad.stdout


def test_a_state_too_big_for_one_call_travels_in_parts_that_each_fit(tmp_path):
    """jobs.carry_split: each call's folder, with the tracked tree and the paths every call
    carries, stays within the limit; the parts joined are the file; --once's files ride in the
    first call; a missing path is named, exit 2 (session 24: 42 MB of checkpoints beside a
    43 MB tree were refused)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "tracked.txt").write_bytes(b"t" * 30_000)
    (repo / ".gitignore").write_text("wheels/\n*.tgz\ncarry-*/\n")
    (repo / "untracked.txt").write_bytes(b"u" * 5_000)      # not ignored: it travels too
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "tracked.txt"], cwd=repo, check=True)
    tree = 30_000 + 5_000 + len((repo / ".gitignore").read_bytes())
    (repo / "wheels").mkdir()
    (repo / "wheels" / "a.whl").write_bytes(b"w" * 10_000)
    big = repo / "state.tgz"
    big.write_bytes(os.urandom(95_000))
    data = repo / "data.tgz"
    data.write_bytes(b"d" * 5_000)
    run = subprocess.run([sys.executable, "-m", "jobs.carry_split", str(big),
                          "--with", str(repo / "wheels"), "--once", str(data),
                          "--out", str(repo / "carry"),
                          "--repo", str(repo), "--limit", "80000"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    folders = sorted(repo.glob("carry-*"))
    assert [f.name for f in folders] == ["carry-1", "carry-2", "carry-3"]   # 100 kB, 35 kB a call
    for f in folders:
        assert tree + 10_000 + sum(p.stat().st_size for p in f.iterdir()) <= 80_000
    assert (folders[0] / "data.tgz").read_bytes() == data.read_bytes()
    parts = sorted(repo.glob("carry-*/state.tgz.part-*"), key=lambda p: p.name)
    assert b"".join(p.read_bytes() for p in parts) == big.read_bytes()
    assert run.stdout.count("call ") == 3 and "/wheels'" in run.stdout
    stale = repo / "carry-4"                 # an earlier, longer split's last folder
    stale.mkdir()
    (stale / "state.tgz.part-04").write_bytes(b"old")
    again = subprocess.run([sys.executable, "-m", "jobs.carry_split", str(big), "--once", str(data),
                            "--out", str(repo / "carry"), "--repo", str(repo), "--limit", "80000"],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and not stale.exists(), again.stderr
    keep = repo / "carry-2" / "notes.txt"     # not the split's: refused, nothing deleted
    keep.write_text("mine")
    refused = subprocess.run([sys.executable, "-m", "jobs.carry_split", str(big), "--once",
                              str(data), "--out", str(repo / "carry"), "--repo", str(repo),
                              "--limit", "80000"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "notes.txt: not a part of state.tgz" in refused.stderr
    assert keep.read_text() == "mine" and (repo / "carry-1" / "data.tgz").exists()
    missing = subprocess.run([sys.executable, "-m", "jobs.carry_split", str(big), "--with",
                              str(repo / "nowhere"), "--out", str(repo / "c"), "--repo", str(repo)],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "nowhere: no such file" in missing.stderr
