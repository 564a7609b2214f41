"""The control API from a client that is not ours: Debian's python3-grpcio with stubs generated
here from api/spd/v1/*.proto. Canonical codes as a client expects them, the health service, and
the server's limits (request size, event watchers, silent connections)."""
import os
import socket
import subprocess
import sys
import threading
import time

import grpc
import nbd

from spdlib import check, start_spd2, temp_dir

HERE = os.path.dirname(os.path.abspath(__file__))
API = os.path.join(HERE, "..", "..", "api")
tmp = temp_dir("spd-grpc-")
gen = os.path.join(tmp, "gen")
os.makedirs(gen)
protos = ["spd/v1/%s.proto" % p for p in ("volumes", "pools", "node", "events", "policy")]
subprocess.run(["protoc", "-I", API, "--python_out=" + gen, "--grpc_python_out=" + gen,
                "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin"] + protos,
               check=True)
sys.path.insert(0, gen)
from spd.v1 import events_pb2, events_pb2_grpc, node_pb2, node_pb2_grpc  # noqa: E402
from spd.v1 import volumes_pb2 as vpb, volumes_pb2_grpc  # noqa: E402

data = os.path.join(tmp, "data")
sock = os.path.join(data, "control.sock")
nbd_uri = "nbd+unix:///vol0?socket=" + os.path.join(data, "nbd.sock")
start_spd2(data, ["--pool-size", "1G", "--volume", "vol0:64M"], nbd_uri)
for _ in range(100):
    if os.path.exists(sock):
        break
    time.sleep(0.05)
ch = grpc.insecure_channel("unix:" + sock)
vol = volumes_pb2_grpc.VolumeServiceStub(ch)


def code_of(fn, *a):
    try:
        fn(*a, timeout=10)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


v = vol.CreateVolume(vpb.CreateVolumeRequest(name="db1", size_bytes=1 << 30,
                                             durability=vpb.DURABILITY_SYNC), timeout=10)
check("create returns the volume", v.name == "db1" and v.size_bytes == 1 << 30 and
      v.durability == vpb.DURABILITY_SYNC and v.pool == "default")
again = vol.CreateVolume(vpb.CreateVolumeRequest(name="db1", size_bytes=1 << 30,
                                                 durability=vpb.DURABILITY_SYNC), timeout=10)
check("create is idempotent by name", again.id == v.id)
c, d = code_of(vol.CreateVolume, vpb.CreateVolumeRequest(name="db1", size_bytes=2 << 30))
check("another size for the name: ALREADY_EXISTS", c == grpc.StatusCode.ALREADY_EXISTS)
c, d = code_of(vol.GetVolume, vpb.GetVolumeRequest(name="nope"))
check("missing volume: NOT_FOUND", c == grpc.StatusCode.NOT_FOUND)
c, d = code_of(vol.CreateVolume, vpb.CreateVolumeRequest(name="x", size_bytes=1000))
check("bad size: INVALID_ARGUMENT naming size_bytes",
      c == grpc.StatusCode.INVALID_ARGUMENT and d.startswith("size_bytes:"))
c, d = code_of(vol.CreateVolume, vpb.CreateVolumeRequest(name="", size_bytes=4096))
check("no name: INVALID_ARGUMENT naming name",
      c == grpc.StatusCode.INVALID_ARGUMENT and d.startswith("name:"))
c, d = code_of(vol.CreateVolume, vpb.CreateVolumeRequest(name="x", size_bytes=4096,
                                                         durability=77))
check("unknown durability value: INVALID_ARGUMENT naming durability",
      c == grpc.StatusCode.INVALID_ARGUMENT and d.startswith("durability:"))
c, d = code_of(vol.SetDurability, vpb.SetDurabilityRequest(name="db1"))
check("durability left unset: INVALID_ARGUMENT", c == grpc.StatusCode.INVALID_ARGUMENT)
c, d = code_of(vol.DeleteVolume, vpb.DeleteVolumeRequest(name="nope"))
check("delete of a missing volume: NOT_FOUND", c == grpc.StatusCode.NOT_FOUND)
h = nbd.NBD()
h.connect_uri(nbd_uri)
c, d = code_of(vol.DeleteVolume, vpb.DeleteVolumeRequest(name="vol0"))
check("delete of a volume in use: FAILED_PRECONDITION",
      c == grpc.StatusCode.FAILED_PRECONDITION)
h.shutdown()
c, d = code_of(vol.ListVolumes, vpb.ListVolumesRequest(page_token="x"))
check("a bad page token: INVALID_ARGUMENT naming page_token",
      c == grpc.StatusCode.INVALID_ARGUMENT and d.startswith("page_token:"))

# Pages: 5 more volumes, pages of 2, every volume exactly once, in id order.
for i in range(5):
    vol.CreateVolume(vpb.CreateVolumeRequest(name="p%d" % i, size_bytes=4096), timeout=10)
names, token, pages = [], "", 0
while True:
    r = vol.ListVolumes(vpb.ListVolumesRequest(page_size=2, page_token=token), timeout=10)
    names += [x.name for x in r.volumes]
    pages += 1
    token = r.next_page_token
    if not token:
        break
check("paged list: every volume once, in order (%s)" % names,
      names == ["vol0", "db1", "p0", "p1", "p2", "p3", "p4"] and pages == 4)

# The caller's W3C traceparent reaches the audit log's entry for the call.
tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
vol.ResizeVolume(vpb.ResizeVolumeRequest(name="db1", size_bytes=2 << 30), timeout=10,
                 metadata=[("traceparent", tp)])
import json  # noqa: E402
entries = [json.loads(line) for line in open(os.path.join(data, "audit", "audit.log"))]
resize = [e for e in entries if e["method"] == "spd.v1.VolumeService/ResizeVolume"]
check("traceparent recorded with the call", resize and resize[-1].get("traceparent") == tp and
      resize[-1]["result"] == "OK" and resize[-1]["who"] == "uid:0")

# Policy objects are validated by the daemon too (spdctl checks first; other clients may not).
from spd.v1 import policy_pb2 as ppb, policy_pb2_grpc  # noqa: E402
classes = policy_pb2_grpc.StorageClassServiceStub(ch)
bad = ppb.StorageClass(name="slow", defaults=ppb.Intent(limit=ppb.Rate(iops=10),
                                                        reservation=ppb.Rate(iops=100)))
c, d = code_of(classes.PutStorageClass, ppb.PutStorageClassRequest(storage_class=bad))
check("a limit below the reservation: INVALID_ARGUMENT naming the field (%s)" % d,
      c == grpc.StatusCode.INVALID_ARGUMENT and
      d.startswith("storage_class.defaults.limit.iops:"))
c, d = code_of(policy_pb2_grpc.IntentServiceStub(ch).SetVolumePolicy,
               ppb.SetVolumePolicyRequest(policy=ppb.VolumePolicy(volume="nope")))
check("a policy for a missing volume: NOT_FOUND", c == grpc.StatusCode.NOT_FOUND)

node = node_pb2_grpc.NodeServiceStub(ch).GetNodeInfo(node_pb2.GetNodeInfoRequest(), timeout=10)
check("node info", node.pid > 0 and node.reactors >= 1 and node.data_dir == data)

# grpc.health.v1.Health/Check by its documented wire form: an empty request asks for the
# server as a whole; the answer's field 1 is the status (1 = SERVING).
health = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda x: x,
                        response_deserializer=lambda x: x)
check("health: SERVING", health(b"", timeout=10) == b"\x08\x01")

# Limits. A request above 64 KiB is refused before any handler sees it.
c, d = code_of(vol.CreateVolume, vpb.CreateVolumeRequest(name="n" * (100 << 10),
                                                         size_bytes=4096))
check("oversized request: RESOURCE_EXHAUSTED", c == grpc.StatusCode.RESOURCE_EXHAUSTED)

# At most 64 event watchers; the 65th is refused, and each watcher gets the events.
ev = events_pb2_grpc.EventServiceStub(ch)
streams = [ev.WatchEvents(events_pb2.WatchEventsRequest(since_seq=1)) for _ in range(64)]
firsts = [next(s) for s in streams]  # each has seen the first event: all 64 are established
check("64 watchers see event 1", all(f.seq == 1 and f.type == events_pb2.EVENT_TYPE_VOLUME_CREATED
                                     for f in firsts))
extra = ev.WatchEvents(events_pb2.WatchEventsRequest())
try:
    next(extra)
    check("65th watcher refused", False)
except grpc.RpcError as e:
    check("65th watcher: RESOURCE_EXHAUSTED", e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED)
for s in streams:
    s.cancel()

# Silent connections cannot keep clients out: 100 sockets that never speak (the listener
# keeps 64 waiting and closes the oldest), and a real call still answers at once.
silent = []
for _ in range(100):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    silent.append(s)
t0 = time.monotonic()
ch2 = grpc.insecure_channel("unix:" + sock)
r = volumes_pb2_grpc.VolumeServiceStub(ch2).GetVolume(vpb.GetVolumeRequest(name="db1"),
                                                      timeout=10)
check("a call during a flood of silent sockets (%.2f s)" % (time.monotonic() - t0),
      r.name == "db1")
time.sleep(0.5)  # the listener takes the backlog in batches
closed = 0
for s in silent:
    s.settimeout(0.01)
    try:
        if s.recv(1) == b"":
            closed += 1
    except (socket.timeout, BlockingIOError):
        pass
    except OSError:
        closed += 1
check("the oldest silent sockets were closed (%d of 100)" % closed, closed >= 36)
for s in silent:
    s.close()
# Calls in flight are bounded (--control-calls-max): on a sim pool where every device operation
# takes 300 ms, 8 creates at once against a limit of 2: 2 run, 6 are refused at once.
data2 = os.path.join(tmp, "data2")
start_spd2(data2, ["--backend", "sim", "--sim-latency-us", "300000", "--pool-size", "256M",
                   "--volume", "vol0:16M", "--control-calls-max", "2"],
           "nbd+unix:///vol0?socket=" + os.path.join(data2, "nbd.sock"))
vol2 = volumes_pb2_grpc.VolumeServiceStub(grpc.insecure_channel(
    "unix:" + os.path.join(data2, "control.sock")))
futs = [vol2.CreateVolume.future(vpb.CreateVolumeRequest(name="c%d" % i, size_bytes=4096),
                                 timeout=60) for i in range(8)]
codes = []
for f in futs:
    try:
        f.result()
        codes.append("OK")
    except grpc.RpcError as e:
        codes.append(e.code().name)
check("calls beyond --control-calls-max: RESOURCE_EXHAUSTED (%s)" % codes,
      codes.count("OK") == 2 and codes.count("RESOURCE_EXHAUSTED") == 6)
print("ok - control API from python3-grpcio")
