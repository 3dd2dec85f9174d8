"""NVIDIA's Multi-Process Service for cells that share a GPU in the local executor (`--mps`).

Without MPS the CUDA contexts of processes on one GPU time-slice: the kernels of two cells
never run at the same time, so several cells on a GPU gain only where one leaves it idle. With
an MPS control daemon, the processes that name its pipe folder (`CUDA_MPS_PIPE_DIRECTORY`)
become clients of one MPS server per GPU, and their kernels run concurrently.

`MpsDaemon.start` starts `nvidia-cuda-mps-control -d` for one local run, or uses a daemon
already listening on that pipe folder (and then leaves it running); `stop` sends it `quit`
(only a daemon this run started, and only once no other run's client uses it). The pipe
folder is short and on the local disk (NVIDIA recommends a local folder such as /tmp; its
sockets' paths are bound by the 108 bytes of a UNIX socket address), one per user and sweep;
the daemon's logs go to SWEEP/mps/.

The daemon inherits the launcher's CUDA_VISIBLE_DEVICES, and the MPS server renumbers the
GPUs it sees from 0: a client names its GPU by its position in that list (`client_env`),
not by the index the launcher's pool uses (a UUID stays as it is).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CONTROL = "nvidia-cuda-mps-control"
PIPE_VAR, LOG_VAR = "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"
READY_S = 10.0            # the daemon's pipe must appear within this
MAX_PIPE_DIR = 80         # bytes: room in a 108-byte socket address for the names inside
WHAT_TO_DO = ("run without --mps (cells sharing a GPU then time-slice it), or ask the "
              "admins to install the NVIDIA driver's MPS tools; on a SLURM cluster request "
              "MPS as a gres (`slurm_extra: {gres: 'mps:N'}` in the grid's resources)")


class MpsError(RuntimeError):
    """The MPS daemon cannot be had; the message is one line for the user."""


def available() -> None:
    """MpsError unless the control binary is on the PATH."""
    if shutil.which(CONTROL) is None:
        raise MpsError(f"--mps: {CONTROL} is not on the PATH; {WHAT_TO_DO}")


def pipe_dir(sweep_root: Path) -> Path:
    """The user's own CUDA_MPS_PIPE_DIRECTORY, else a short local folder of this user and sweep."""
    own = os.environ.get(PIPE_VAR)
    if own:
        return Path(own)
    key = hashlib.sha256(str(sweep_root.resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"recsys-mps-{os.getuid()}-{key}"


@dataclass(frozen=True)
class MpsDaemon:
    pipe: Path
    log: Path
    owned: bool                  # started by this run: stopped by it
    visible: tuple[str, ...]     # the GPUs the launcher (and so the daemon) sees, in order

    def env(self) -> dict[str, str]:
        return {PIPE_VAR: str(self.pipe), LOG_VAR: str(self.log)}

    def client_env(self, gpus: list[str]) -> dict[str, str]:
        """The variables of a process on `gpus` (of the launcher's visible ones): the pipe
        and log folders, and its GPUs as the MPS server numbers them."""
        named = [str(self.visible.index(g)) if g.isdigit() else g for g in gpus]
        return {**self.env(), "CUDA_VISIBLE_DEVICES": ",".join(named)}

    @classmethod
    def start(cls, sweep_root: Path, visible: list[str]) -> MpsDaemon:
        """A daemon listening on this sweep's pipe folder: one already there, else a new one
        (MpsError if the binary is missing or the daemon does not come up)."""
        available()
        pipe, log = pipe_dir(sweep_root), sweep_root / "mps"
        if len(str(pipe)) > MAX_PIPE_DIR:
            raise MpsError(f"--mps: the pipe folder {pipe} is longer than {MAX_PIPE_DIR} "
                           f"characters (UNIX socket paths are limited); set {PIPE_VAR} to a "
                           "short local folder, e.g. /tmp/mps-$USER")
        daemon = cls(pipe, log, owned=False, visible=tuple(visible))
        if daemon.listening():
            return daemon
        pipe.mkdir(parents=True, exist_ok=True)
        log.mkdir(parents=True, exist_ok=True)
        said = log / "control-d.out"    # a file, not a pipe: the forked daemon may keep it open
        try:
            with open(said, "w") as out:
                code = subprocess.run([CONTROL, "-d"], stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=out, env={**os.environ, **daemon.env()},
                                      timeout=30).returncode
        except (OSError, subprocess.TimeoutExpired) as e:
            raise MpsError(f"--mps: `{CONTROL} -d` failed: {e}; {WHAT_TO_DO}") from None
        if code != 0:
            # Another launcher on this pipe folder may have started the daemon a moment before
            # ("An instance of this daemon is already running"): use it once it answers.
            if "already running" in said.read_text() and daemon._comes_up():
                return daemon
            raise MpsError(f"--mps: `{CONTROL} -d` exited {code}: "
                           f"{_one_line(said.read_text()) or 'no message'}; {WHAT_TO_DO}")
        started = cls(pipe, log, owned=True, visible=tuple(visible))
        try:
            started._ready()
        except BaseException:      # the daemon may still come up: this run does not keep it
            started.stop()
            raise
        return started

    def _ready(self) -> None:
        if not _within_ready_s(lambda: (self.pipe / "control").exists(), every=0.05):
            raise MpsError(f"--mps: the MPS daemon started by `{CONTROL} -d` did not open "
                           f"{self.pipe / 'control'} within {READY_S:.0f} s (its log: "
                           f"{self.log}); {WHAT_TO_DO}")

    def _comes_up(self) -> bool:
        return _within_ready_s(self.listening, every=0.2)

    def listening(self) -> bool:
        """A daemon answers on the pipe folder (its `control` there, and a query answered)."""
        if not (self.pipe / "control").exists():
            return False
        try:
            return self._control([], "get_server_list\n", timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> str | None:
        """`quit` to a daemon this run started (its servers end once their clients have);
        what went wrong, if anything, for a warning line. A daemon that still serves other
        runs' clients (launchers sharing the pipe folder) is left running: after `quit` it
        takes no new client, and their next cells could not start."""
        if not self.owned:
            return None
        others = self._live_clients()
        if others:
            return (f"the daemon this run started on {self.pipe} still serves {others} "
                    f"client(s) of another run: left running (`echo quit | {CONTROL}` with "
                    f"{PIPE_VAR}={self.pipe} stops it)")
        try:
            proc = self._control([], "quit\n", timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"`echo quit | {CONTROL}` failed: {e}"
        if proc.returncode != 0:
            said = _one_line(proc.stderr + proc.stdout)
            return f"`echo quit | {CONTROL}` exited {proc.returncode}: {said}"
        return None

    def _live_clients(self) -> int:
        """Processes still connected to the daemon's servers (this run's have ended)."""
        def pids(text: str) -> list[str]:
            return [w for w in text.split() if w.isdigit()]
        try:
            servers = self._control([], "get_server_list\n", timeout=10)
            clients = [pid for server in pids(servers.stdout) for pid in pids(
                self._control([], f"get_client_list {server}\n", timeout=10).stdout)]
        except (OSError, subprocess.TimeoutExpired):
            return 0
        return sum(Path(f"/proc/{pid}").exists() for pid in clients)

    def _control(self, args: list[str], stdin: str = "", timeout: float = 30
                 ) -> subprocess.CompletedProcess:
        return subprocess.run([CONTROL, *args], input=stdin, capture_output=True, text=True,
                              env={**os.environ, **self.env()}, timeout=timeout)


def _within_ready_s(done, every: float) -> bool:
    """Whether `done()` holds, asked every `every` s for up to READY_S."""
    deadline = time.time() + READY_S
    while not done():
        if time.time() > deadline:
            return False
        time.sleep(every)
    return True


def _one_line(text: str) -> str:
    return " / ".join(x.strip() for x in text.splitlines() if x.strip())
