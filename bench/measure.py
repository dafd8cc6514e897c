"""Run one command and measure it: wall time, CPU of the whole process tree,
peak RSS, and for a daemon-based builder the daemon's share as well.

CPU of the child tree comes from os.wait4's rusage: the child's own user+sys
plus every descendant it waited for (the kernel folds reaped children into
their parent's totals). Peak RSS is polled (see `_Sampler`). A daemon (dockerd) does the work in its own tree, so
its CPU is the delta of utime+stime+cutime+cstime summed over dockerd and
its descendants, read from /proc/<pid>/stat before and after; its memory is
sampled (VmRSS summed over the tree every 50 ms), since it is not our child.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    wall: float  # seconds
    cpu: float  # user+sys seconds: the child tree, plus the daemon tree's delta
    rss_mb: float  # peak RSS: the child tree's largest VmHWM, or the daemon tree's sampled peak
    ok: bool
    client_cpu: float = 0.0
    client_rss_mb: float = 0.0
    daemon_cpu: float = 0.0
    daemon_rss_mb: float = 0.0
    note: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(root_pid: int) -> list[int]:
    children = _children_map()
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu(root_pid: int) -> float:
    """utime+stime+cutime+cstime over a process tree, in seconds."""
    total = 0
    for pid in process_tree(root_pid):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state (field 3); utime..cstime are fields 14..17.
        total += sum(int(x) for x in fields[11:15])
    return total / _TICK


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mb(root_pid: int) -> float:
    """Current RSS summed over a process tree."""
    return sum(_status_kb(pid, "VmRSS:") for pid in process_tree(root_pid)) / 1024


def tree_hwm_mb(root_pid: int) -> float:
    """The largest peak RSS (VmHWM) of any process in a tree."""
    return max((_status_kb(pid, "VmHWM:") for pid in process_tree(root_pid)), default=0) / 1024


class _Sampler(threading.Thread):
    """Polls a process tree; keeps the maximum of `probe(pid)`.

    Why not ru_maxrss: exec() records the *old* mm's high-water mark in the
    child's maxrss, and subprocess starts children with vfork, whose old mm
    is the harness's own: ru_maxrss would never be below the harness's peak.
    VmHWM of the exec'd process is its own, so it is polled instead (the
    last few tens of milliseconds before exit are missed).
    """

    def __init__(self, pid: int, probe, interval: float = 0.05):
        super().__init__(daemon=True)
        self._pid, self._probe, self._interval = pid, probe, interval
        self._done = threading.Event()
        self.peak = 0.0

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self._probe(self._pid))
            self._done.wait(self._interval)

    def finish(self) -> float:
        self._done.set()
        self.join()
        self.peak = max(self.peak, self._probe(self._pid))
        return self.peak


def _steal_s() -> float:
    """CPU time the hypervisor gave to others, all CPUs (/proc/stat's
    steal column), in seconds."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) / _TICK if len(fields) > 8 else 0.0


def run(cmd: list[str], *, log: Path, env: dict | None = None, cwd: Path | None = None,
        daemon_pid: int | None = None, timeout: float = 3600) -> Sample:
    """Run `cmd` to completion (output appended to `log`) and measure it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # The previous build's dirty pages (often another builder's) are written
    # back now, not during this measurement.
    os.sync()
    sampler = None
    daemon_before = 0.0
    if daemon_pid is not None:
        daemon_before = tree_cpu(daemon_pid)
        sampler = _Sampler(daemon_pid, tree_rss_mb)
        sampler.start()
    # What else the machine was doing: the 1-minute load average before, and
    # the steal time during (other helpers' tests and other VMs).
    load, steal_before = os.getloadavg()[0], _steal_s()
    with open(log, "ab") as out:
        out.write(("\n$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        client_sampler = _Sampler(proc.pid, tree_hwm_mb, 0.02)
        client_sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            client_sampler.finish()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    client_cpu = usage.ru_utime + usage.ru_stime
    client_rss = client_sampler.peak
    sample = Sample(wall=wall, cpu=client_cpu, rss_mb=client_rss, ok=proc.returncode == 0,
                    client_cpu=client_cpu, client_rss_mb=client_rss,
                    extra={"ru_maxrss_mb": usage.ru_maxrss / 1024, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
                           "loadavg1": load,
                           "steal_s": round(_steal_s() - steal_before, 2)})
    if daemon_pid is not None:
        sample.daemon_cpu = tree_cpu(daemon_pid) - daemon_before
        sample.daemon_rss_mb = sampler.finish()
        sample.cpu = client_cpu + sample.daemon_cpu
        sample.rss_mb = sample.daemon_rss_mb
    if not sample.ok:
        sample.note = f"exit status {proc.returncode}, see {log}"
    return sample


def quiet(cmd: list[str], *, env: dict | None = None, check: bool = True, log: Path | None = None,
          timeout: float = 3600) -> subprocess.CompletedProcess:
    """An unmeasured helper command (setup, tagging, cleanup)."""
    done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if log is not None:
        with open(log, "ab") as out:
            out.write(("\n$ " + " ".join(cmd) + "\n").encode() + done.stdout + done.stderr)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).decode(errors='replace')[-2000:]}")
    return done


def spread(values: list[float]) -> str:
    """`median [min–max]` of a scenario's samples, or – for none."""
    if not values:
        return "–"
    return f"{statistics.median(values):.2f} [{min(values):.2f}–{max(values):.2f}]"


def load_averages(report: dict) -> str:
    """The load averages a report noted at its start and end."""
    load = {when: " / ".join(f"{x:.2f}" for x in report.get(f"loadavg_{when}") or ()) for when in ("start", "end")}
    return f"load average (1, 5, 15 min) {load['start']} at the start, {load['end']} at the end"


def save_report(report: dict, results_dir: Path, name: str, smoke: bool) -> Path:
    """Write a standalone scenario's report as results/NAME-STARTED[-smoke].json."""
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"{name}-{report['started']}{'-smoke' if smoke else ''}.json"
    out.write_text(json.dumps(report, indent=2))
    return out

