"""The machine a benchmark runs on: its CPU's name, its load, and waiting until it is idle.

Timing is only meaningful on an idle machine (this project's machine has 2 cores shared by every
job): each speed benchmark records `uptime` before and after it times, the CPU time other
processes took meanwhile, and waits for the 1-minute load average to fall below `MAX_LOAD` after
its own preparation (model builds, conversions) and before the first timed call.
"""

import datetime
import os
import platform
import subprocess
import time

# Time only below this 1-minute load average (issue 18).
MAX_LOAD = 0.5


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_record():
    """Now, the load averages and `uptime`'s line."""
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"time": datetime.datetime.now().isoformat(timespec="seconds"),
            "loadavg": [round(x, 2) for x in os.getloadavg()], "uptime": uptime}


def wait_for_idle(timeout, log=print):
    """Waits (up to `timeout` seconds) for the 1-minute load average to fall below MAX_LOAD, which
    our own preparation raised; returns the load record at the end of the wait."""
    deadline = time.monotonic() + timeout
    while os.getloadavg()[0] >= MAX_LOAD and time.monotonic() < deadline:
        time.sleep(5)
    record = load_record()
    if record["loadavg"][0] >= MAX_LOAD:
        log(f"warning: 1-minute load still {record['loadavg'][0]:.2f} after {timeout:.0f} s: "
            "something else is running; the times below are not an idle machine's")
    return record


def busy_cpu_seconds():
    """CPU seconds the whole machine has been busy (from /proc/stat), or None where unreadable."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OthersCPU:
    """CPU time other processes took while a block ran, as a share of the machine's cores."""

    def __enter__(self):
        self.wall, self.busy, self.own = time.perf_counter(), busy_cpu_seconds(), sum(os.times()[:2])
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.wall
        busy = busy_cpu_seconds()
        own = sum(os.times()[:2]) - self.own
        self.share = (None if busy is None or self.busy is None else
                      round(max(0.0, (busy - self.busy - own)) / (wall * os.cpu_count()), 3))
