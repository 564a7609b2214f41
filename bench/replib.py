"""Shared pieces of the replication benchmarks (bench/replication, bench/replication_recovery,
bench/replication_rebuild): a one-member etcd and spd2 nodes on loopback, each with its own data
directory under a temp dir, their metrics, spdctl, fio.

Every process started here is stopped by its pid (Cluster.stop).
"""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request


def log(msg):
    print(msg, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_for(what, secs, fn, step=0.05):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if fn():
            return
        time.sleep(step)
    raise SystemExit("%s: not within %d s" % (what, secs))


def stop_proc(p, sig=signal.SIGTERM):
    if p is not None and p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def fio_randwrite(uri, qd, seconds, size_mib=256):
    """4 KiB random writes at queue depth qd for `seconds`: (IOPS, I/Os, p99 in us)."""
    out = subprocess.run(["fio", "--name=w", "--ioengine=nbd", "--uri=" + uri, "--rw=randwrite",
                          "--bs=4k", "--size=%dM" % size_mib, "--iodepth=%d" % qd,
                          "--time_based", "--runtime=%d" % seconds, "--output-format=json"],
                         check=True, capture_output=True, text=True).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]["write"]
    p99 = job["clat_ns"]["percentile"].get("99.000000", 0) / 1000.0
    return job["iops"], job["total_ios"], p99


class Node:
    """One spd2 of the cluster: --cores 1, a pool file in its data dir, metrics on a port."""

    def __init__(self, cluster, name, extra=()):
        self.c, self.name, self.extra = cluster, name, list(extra)
        self.dir = os.path.join(cluster.tmp, name)
        self.mport = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.c.spd2, "--data-dir", self.dir, "--pool-size", self.c.pool_size,
             "--nbd-listen", "off", "--metrics-listen", "127.0.0.1:%d" % self.mport, "--quiet",
             "--cores", "1", "--cluster", self.c.etcd_url, "--node-name", self.name,
             "--cluster-lease-ttl", str(self.c.ttl), "--replication-listen", "127.0.0.1:0"] +
            self.extra,
            stdout=open(self.dir + ".log", "a"), stderr=subprocess.STDOUT)
        wait_for("node %s up" % self.name, 30,
                 lambda: os.path.exists(os.path.join(self.dir, "control.sock")))

    def stop(self, sig=signal.SIGTERM):
        stop_proc(self.proc, sig)
        self.proc = None

    def ctl(self, *args):
        """spdctl against this node: its standard output, None when it failed."""
        r = subprocess.run([self.c.spdctl, "--socket", os.path.join(self.dir, "control.sock"),
                            *args], capture_output=True, text=True)
        return r.stdout if r.returncode == 0 else None

    def metric(self, name):
        """The sum of every series of a metric (None when the node does not answer)."""
        try:
            text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport,
                                          timeout=5).read().decode()
        except OSError:
            return None
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith(name + " ") or line.startswith(name + "{"))

    def cpu(self):
        return cpu_ticks(self.proc.pid)

    def uri(self, vol):
        return "nbd+unix:///%s?socket=%s" % (vol, os.path.join(self.dir, "nbd.sock"))


class Cluster:
    """A one-member etcd and `names` spd2 nodes, started; extra[name] adds flags to a node."""

    def __init__(self, build, tmp, ttl=3, names=("a", "b", "c"), extra=None, pool_size="2G"):
        self.tmp, self.ttl, self.pool_size = tmp, ttl, pool_size
        self.spd2 = os.path.join(build, "spd2")
        self.spdctl = os.path.join(build, "spdctl")
        cport, pport = free_port(), free_port()
        self.etcd_url = "http://127.0.0.1:%d" % cport
        self.etcd = subprocess.Popen(
            ["etcd", "--name", "b", "--data-dir", os.path.join(tmp, "etcd"),
             "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
             "--listen-peer-urls", "http://127.0.0.1:%d" % pport,
             "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % pport,
             "--initial-cluster", "b=http://127.0.0.1:%d" % pport],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.nodes = {n: Node(self, n, (extra or {}).get(n, ())) for n in names}
        for n in self.nodes.values():
            n.start()
        first = self.nodes[names[0]]
        wait_for("%d nodes registered" % len(names), 60,
                 lambda: (first.ctl("node", "list", "-o", "json") or "").count('"name"') ==
                 len(names))

    def view(self, vol, via):
        """(primary, {node: state}) of a replicated volume as node `via` sees it."""
        out = self.nodes[via].ctl("replica", "list", vol, "-o", "json")
        if out is None:
            return None, {}
        item = json.loads(out)["items"][0]
        return item["primary"], {c["node"]: c["state"] for c in item["copies"]}

    def all_in_sync(self, vol, via, copies):
        p, states = self.view(vol, via)
        return bool(p) and len(states) == copies and all(s == "in_sync" for s in states.values())

    def cpu(self):
        return sum(n.cpu() for n in self.nodes.values() if n.proc)

    def stop(self):
        for n in self.nodes.values():
            n.stop(signal.SIGTERM)
        stop_proc(self.etcd)
