"""Helpers of bench/qos: statistics, tables, the device under test, the daemon, fio runs."""
import argparse
import glob
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.normpath(os.environ.get("SPD_BUILD", os.path.join(HERE, "..", "build")))
SPD2 = os.path.join(BUILD, "spd2")
SPDCTL = os.path.join(BUILD, "spdctl")
PIPELINE = os.path.join(BUILD, "bench", "pipeline_bench")
CALIBRATE = os.path.join(BUILD, "bench", "calibrate_bench")
TICK = os.sysconf("SC_CLK_TCK")
RT_PRIO = 10

SIM_IOPS = 20000
SIM_UNITS = 8
MB = 1000 * 1000  # bytes/s limits are decimal: 1 MB/s = 10^6 B/s

# Default rounds per scenario (--rounds overrides every one): fewer for the long ones.
ROUNDS = {1: 3, 2: 3, 3: 2, 4: 3, 5: 3, 6: 5, 7: 3}
P99_SAMPLES = 2000  # a paced p99 is taken over at least this many I/Os ...
P99_MAX_S = 25.0  # ... or this many seconds, whichever is shorter
TITLES = {
    1: "noisy neighbour", 2: "reservation", 3: "limits", 4: "weights 1:2:4",
    5: "work conservation", 6: "scheduler CPU cost", 7: "live limit change",
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pct(sorted_vals, q):
    """Nearest-rank percentile q (0-100) of an ascending list."""
    if not sorted_vals:
        return None
    k = max(1, math.ceil(q / 100 * len(sorted_vals)))
    return sorted_vals[min(k, len(sorted_vals)) - 1]


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_load():
    with open("/proc/loadavg") as f:
        la = float(f.read().split()[0])
    psi = None
    try:
        with open("/proc/pressure/cpu") as f:
            psi = float(f.readline().split("avg60=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        pass
    return la, psi


def fmt(v, spec="%.0f", none="-"):
    return none if v is None else spec % v


def table(title, header, rows):
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = ["", title]
    for j, r in enumerate(cells):
        out.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                             for i, c in enumerate(r)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    print("\n".join(out), flush=True)


class BenchError(Exception):
    pass


class Device:
    """Where the pool lives, and what the cost model says the device can do."""

    def __init__(self, spec, tmp):
        self.tmp = tmp
        self.filled = set()
        self.model_note = ""
        self.capacity = None  # 4 KiB random reads per second by the cost model
        self.model_path = None
        if spec == "sim":
            self.kind, self.path = "sim", None
            self.vol_bytes = 64 << 20
            self.capacity = float(SIM_IOPS)
            self.model_note = ("sim backend, %d IOPS over %d units (each op %d us alone); "
                               "cost model: the sim's own (ForSim)" %
                               (SIM_IOPS, SIM_UNITS, SIM_UNITS * 1000000 // SIM_IOPS))
        elif spec.startswith("file:"):
            self.kind, self.path = "file", spec[5:]
            self.vol_bytes = 256 << 20
            if not self.path or os.path.exists(self.path):
                raise BenchError("--device file:PATH: %s exists (or is empty); give a path that "
                                 "does not exist: the pool is made there and deleted afterwards"
                                 % self.path)
            self.data = os.path.join(tmp, "file-data")
            os.makedirs(self.data)
            self.calibrate()
        else:
            raise BenchError("--device: sim or file:PATH")

    def calibrate(self):
        target = os.path.join(self.data, "default.cost.json")
        if not os.access(CALIBRATE, os.X_OK):
            self.model_note = ("uring on %s (O_DIRECT); no %s: the daemon's BUILT-IN cost model "
                               "(a SATA-class SSD, uncalibrated)" % (self.path, CALIBRATE))
            return
        scratch = self.path + ".calib"
        log("calibrating the device with %s (scratch file %s)" % (CALIBRATE, scratch))
        try:
            r = subprocess.run([CALIBRATE, "--backend", "uring", "--path", scratch, "--size",
                                "1G", "--save", target], capture_output=True, text=True,
                               timeout=600)
        finally:
            if os.path.exists(scratch):
                os.unlink(scratch)
        if r.returncode != 0 or not os.path.exists(target):
            self.model_note = ("uring on %s (O_DIRECT); calibrate_bench failed (exit %d: %s): "
                               "the daemon's BUILT-IN cost model" %
                               (self.path, r.returncode, (r.stderr or r.stdout).strip()[-200:]))
            if os.path.exists(target):
                os.unlink(target)
            return
        self.model_path = target
        try:
            with open(target) as f:
                m = json.load(f)
            shape = " (parallelism %.1f, depth %s)" % (m["parallelism"], m.get("depth", "-"))
        except (OSError, ValueError, KeyError) as e:
            shape = " (unreadable: %s)" % e
        self.model_note = ("uring on %s (O_DIRECT); cost model calibrated by calibrate_bench%s"
                           % (self.path, shape))

    def spd2_args(self):
        if self.kind == "sim":
            return ["--backend", "sim", "--sim-iops", str(SIM_IOPS), "--sim-units",
                    str(SIM_UNITS), "--pool-size", "1G"]
        return ["--backend", "uring", "--pool", self.path, "--pool-size", "2G"]

    def cleanup(self):
        if self.kind == "file" and os.path.exists(self.path):
            os.unlink(self.path)


class Daemon:
    """One spd2 run: started, filled, given intents, stopped by its pid."""

    count = 0

    def __init__(self, bench, mode, vols):
        self.b, self.mode, self.vols = bench, mode, vols
        self.proc = None

    def __enter__(self):
        b = self.b
        Daemon.count += 1
        if b.dev.kind == "sim":  # the sim keeps nothing across a restart: a new pool each time
            self.data = os.path.join(b.tmp, "data-%03d" % Daemon.count)
        else:  # the same pool (and so the same layout) for both modes
            self.data = b.dev.data
        os.makedirs(self.data, exist_ok=True)
        self.log_path = os.path.join(b.tmp, "spd2-%03d-%s.log" % (Daemon.count, self.mode))
        cmd = [SPD2, "--data-dir", self.data, "--nbd-listen", "off", "--metrics-listen", "off",
               "--quiet", "--cores", "1", "--qos", self.mode] + b.dev.spd2_args() + b.a.spd2_arg
        for v in self.vols:
            cmd += ["--volume", "%s:%d" % (v, b.dev.vol_bytes)]
        with open(self.log_path, "w") as lf:
            self.proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT)
        self.sock = os.path.join(self.data, "nbd.sock")
        self.env = dict(os.environ, SPD_CONTROL_SOCKET=os.path.join(self.data, "control.sock"))
        try:
            self._wait_ready()
            if b.rt:
                b.make_rt(self.proc.pid)
            self.model = self._model_line()
            self._fill()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("spd2 exited at start (%d): %s" % (self.proc.returncode,
                                                                     self.tail()))
            if os.path.exists(self.sock) and os.path.exists(self.env["SPD_CONTROL_SOCKET"]):
                r = subprocess.run(["nbdinfo", "--size", self.uri(self.vols[0])],
                                   capture_output=True, timeout=20)
                if r.returncode == 0:
                    return
            time.sleep(0.05)
        raise BenchError("spd2 did not become ready in 60 s: %s" % self.tail())

    def _model_line(self):
        """The scheduler's cost model from the daemon's log line (QoS on only)."""
        if self.mode != "on":
            return None
        with open(self.log_path) as f:
            for line in f:
                if "qos: on, cost model" in line:
                    # qos: on, cost model 'sim' (4 KiB read 400000 ns, parallelism 8.0,
                    # depth 8.0), ...
                    src = line.split("cost model '")[1].split("'")[0]
                    read_ns = float(line.split("4 KiB read ")[1].split()[0])
                    par = float(line.split("parallelism ")[1].split(",")[0])
                    return {"source": src, "read_ns": read_ns, "parallelism": par,
                            "capacity": par * 1e9 / read_ns, "line": line.strip()}
        raise BenchError("no 'qos: on' line in the log: %s" % self.tail())

    def _fill(self):
        # Reads of holes never reach the device: every volume is written first (on a file
        # device once: the pool stays between runs).
        todo = [v for v in self.vols if self.b.dev.kind == "sim" or v not in self.b.dev.filled]
        if not todo:
            return
        cmd = ["fio", "--ioengine=nbd", "--rw=write", "--bs=1M", "--iodepth=8",
               "--size=%d" % self.b.dev.vol_bytes, "--output=/dev/null"]
        for v in todo:
            cmd += ["--name=fill-" + v, "--uri=" + self.uri(v)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise BenchError("fill failed: %s" % r.stderr[-1000:])
        if self.b.dev.kind == "file":
            self.b.dev.filled.update(todo)

    def __exit__(self, *exc):
        if self.proc is None or self.proc.returncode is not None:
            return False
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise BenchError("spd2 (pid %d) did not stop in 60 s after SIGTERM: killed"
                             % self.proc.pid)
        if rc != 0:
            log("warning: spd2 exited %d after SIGTERM: %s" % (rc, self.tail()))
        if self.b.dev.kind == "sim":
            shutil.rmtree(self.data, ignore_errors=True)
        return False

    def tail(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def uri(self, vol):
        return "nbd+unix:///%s?socket=%s" % (vol, self.sock)

    def spdctl(self, *args):
        r = subprocess.run([SPDCTL] + list(args), env=self.env, capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            raise BenchError("spdctl %s: exit %d: %s" % (" ".join(args), r.returncode,
                                                         (r.stderr + r.stdout).strip()))
        return r.stdout

    def policy(self, vol, *args):
        self.spdctl("policy", "set", vol, *[str(a) for a in args])

    def status(self, vol):
        """The volume's intent status (QoS on), or None."""
        d = json.loads(self.spdctl("volume", "get", vol, "-o", "json"))
        return d.get("intentStatus")


class Job:
    def __init__(self, name, vol, rw, bs, qd, rate_iops=None, rate_bps=None):
        self.name, self.vol, self.rw, self.bs, self.qd = name, vol, rw, bs, qd
        self.rate_iops, self.rate_bps = rate_iops, rate_bps


class Run:
    """fio's per-I/O completion log of every job of one run, cut into windows."""

    def __init__(self, jobs, data, cpu_s, wall_s, warm_s):
        self.jobs = {j.name: j for j in jobs}
        self.data = data  # name -> (times_ms ascending, lat_ns, bytes)
        self.cpu_s, self.wall_s = cpu_s, wall_s
        firsts = [d[0][0] for d in data.values() if d[0]]
        lasts = [d[0][-1] for d in data.values() if d[0]]
        if not firsts:
            raise BenchError("fio completed no I/O")
        self.t0 = min(firsts) + warm_s * 1000  # measured interval: [t0, t1)
        self.t1 = min(lasts)
        if self.t1 <= self.t0 + 1000:
            raise BenchError("run too short after the %g s warm-up: completions from %s to %s "
                             "(ms)" % (warm_s, {n: d[0][0] for n, d in data.items() if d[0]},
                                       {n: d[0][-1] for n, d in data.items() if d[0]}))

    def ios(self, name=None):
        return sum(len(d[0]) for n, d in self.data.items() if name in (None, n))

    def sel(self, name):
        t, lat, by = self.data[name]
        return [(ti, li, bi) for ti, li, bi in zip(t, lat, by) if self.t0 <= ti < self.t1]

    def iops(self, name):
        return len(self.sel(name)) / ((self.t1 - self.t0) / 1000)

    def p(self, name, q):
        return pct(sorted(x[1] for x in self.sel(name)), q)

    def windows(self, name, width_ms=1000, start=None, field="ops"):
        """Per-window ops (or bytes) per second over whole windows from `start` (default t0)."""
        start = self.t0 if start is None else start
        n = int((self.t1 - start) // width_ms)
        w = [0] * max(n, 0)
        t, _, by = self.data[name]
        for ti, bi in zip(t, by):
            k = int((ti - start) // width_ms)
            if 0 <= k < n:
                w[k] += 1 if field == "ops" else bi
        return [x * 1000.0 / width_ms for x in w]

    def cpu_us_per_io(self):
        return self.cpu_s / max(self.ios(), 1) * 1e6
