"""Who may do what on the control API: every role (viewer, tenant, operator, admin, and a uid
with none) against every kind of call, each caller a real local user (uid) on the control socket,
identified by SO_PEERCRED; a tenant sees and touches only its own tenant's volumes, also in lists
and the event stream. The expected matrix is docs/control.md's."""
import json
import os
import subprocess
import sys
import tempfile
import time

import grpc

from spdlib import check, start_spd2

HERE = os.path.dirname(os.path.abspath(__file__))
API = os.path.join(HERE, "..", "..", "api")
tmp = tempfile.mkdtemp(prefix="spd-roles-")
os.chmod(tmp, 0o755)
gen = os.path.join(tmp, "gen")
os.makedirs(gen)
protos = ["spd/v1/%s.proto" % p for p in ("volumes", "pools", "node", "events", "policy",
                                           "audit", "access")]
subprocess.run(["protoc", "-I", API, "--python_out=" + gen, "--grpc_python_out=" + gen,
                "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin"] + protos,
               check=True)
for root, dirs, files in os.walk(gen):
    for d in dirs:
        os.chmod(os.path.join(root, d), 0o755)
    for f in files:
        os.chmod(os.path.join(root, f), 0o644)
sys.path.insert(0, gen)
from spd.v1 import access_pb2 as apb, access_pb2_grpc  # noqa: E402
from spd.v1 import policy_pb2 as ppb, policy_pb2_grpc  # noqa: E402
from spd.v1 import volumes_pb2 as vpb, volumes_pb2_grpc  # noqa: E402

data = os.path.join(tmp, "data")
sock = os.path.join(data, "control.sock")
start_spd2(data, ["--pool-size", "1G", "--volume", "x1:16M", "--control-socket-mode", "0666"],
           "nbd+unix:///x1?socket=" + os.path.join(data, "nbd.sock"))
os.chmod(data, 0o711)
ch = grpc.insecure_channel("unix:" + sock)
vol = volumes_pb2_grpc.VolumeServiceStub(ch)
ten = policy_pb2_grpc.TenantServiceStub(ch)
pol = policy_pb2_grpc.IntentServiceStub(ch)
acc = access_pb2_grpc.AccessServiceStub(ch)

# As root (an admin): two tenants (acme with an intent), a volume each, and the uid map.
ten.PutTenant(ppb.PutTenantRequest(tenant=ppb.Tenant(
    name="acme", intent=ppb.Intent(limit=ppb.Rate(iops=600)))), timeout=10)
ten.PutTenant(ppb.PutTenantRequest(tenant=ppb.Tenant(name="beta")), timeout=10)
# A tenant's intent has no latency target: refused naming the field, whoever asks.
try:
    ten.PutTenant(ppb.PutTenantRequest(tenant=ppb.Tenant(name="acme", intent=ppb.Intent(
        latency=ppb.LatencyTarget(percentile=99, bound_us=2000)))), timeout=10)
    check("a tenant intent with a latency target is refused", False)
except grpc.RpcError as e:
    check("a tenant intent with a latency target is refused (%s: %s)" % (e.code().name, e.details()),
          e.code() == grpc.StatusCode.INVALID_ARGUMENT and
          e.details().startswith("tenant.intent.latency: "))
for name, t in (("a1", "acme"), ("b1", "beta")):
    vol.CreateVolume(vpb.CreateVolumeRequest(name=name, size_bytes=16 << 20), timeout=10)
    pol.SetVolumePolicy(ppb.SetVolumePolicyRequest(policy=ppb.VolumePolicy(volume=name, tenant=t)),
                        timeout=10)
UIDS = {"viewer": 2001, "tenant": 2002, "operator": 2003, "admin": 2004, "none": 2005}
ROLES = {"viewer": apb.ROLE_VIEWER, "tenant": apb.ROLE_TENANT, "operator": apb.ROLE_OPERATOR,
         "admin": apb.ROLE_ADMIN}
for r, uid in UIDS.items():
    if r in ROLES:
        acc.PutUidRole(apb.PutUidRoleRequest(entry=apb.UidRole(
            uid=uid, role=ROLES[r], tenant="acme" if r == "tenant" else "")), timeout=10)

CHILD = r'''
import json, sys
import grpc
sys.path.insert(0, sys.argv[1])
from spd.v1 import access_pb2 as apb, access_pb2_grpc, audit_pb2, audit_pb2_grpc
from spd.v1 import events_pb2, events_pb2_grpc, node_pb2, node_pb2_grpc
from spd.v1 import policy_pb2 as ppb, policy_pb2_grpc, volumes_pb2 as vpb, volumes_pb2_grpc
role = sys.argv[3]
ch = grpc.insecure_channel("unix:" + sys.argv[2])
vol = volumes_pb2_grpc.VolumeServiceStub(ch)
ten = policy_pb2_grpc.TenantServiceStub(ch)
cls = policy_pb2_grpc.StorageClassServiceStub(ch)
pol = policy_pb2_grpc.IntentServiceStub(ch)
out = {}
def call(name, fn, *a, **kw):
    try:
        r = fn(*a, timeout=10, **kw)
        out[name] = "OK"
        return r
    except grpc.RpcError as e:
        out[name] = e.code().name
mine = role + "-new"
r = call("ListVolumes", vol.ListVolumes, vpb.ListVolumesRequest())
out["listed"] = sorted(v.name for v in r.volumes) if r else None
call("GetOwn", vol.GetVolume, vpb.GetVolumeRequest(name="a1"))
call("GetOther", vol.GetVolume, vpb.GetVolumeRequest(name="b1"))
call("Create", vol.CreateVolume, vpb.CreateVolumeRequest(name=mine, size_bytes=4096))
call("ResizeOther", vol.ResizeVolume, vpb.ResizeVolumeRequest(name="b1", size_bytes=16 << 20))
call("DeleteOther", vol.DeleteVolume, vpb.DeleteVolumeRequest(name="b1")) if role in ("viewer", "tenant", "none") else None
call("PutTenant", ten.PutTenant, ppb.PutTenantRequest(tenant=ppb.Tenant(name="t-" + role)))
r = call("ListTenants", ten.ListTenants, ppb.ListTenantsRequest())
out["tenants"] = sorted(t.name for t in r.tenants) if r else None
r = call("GetOwnTenant", ten.GetTenant, ppb.GetTenantRequest(name="acme"))
out["own_limit"] = r.intent.limit.iops if r else None
call("GetOtherTenant", ten.GetTenant, ppb.GetTenantRequest(name="beta"))
# Raising its own tenant's limit is a tenant put: not the tenant role's.
call("PutOwnTenant", ten.PutTenant, ppb.PutTenantRequest(tenant=ppb.Tenant(
    name="acme", intent=ppb.Intent(limit=ppb.Rate(iops=1200)))))
call("PutClass", cls.PutStorageClass, ppb.PutStorageClassRequest(
    storage_class=ppb.StorageClass(name="c-" + role)))
call("PolicyOwn", pol.SetVolumePolicy, ppb.SetVolumePolicyRequest(
    policy=ppb.VolumePolicy(volume="a1", tenant="acme")))
call("PolicyGiveAway", pol.SetVolumePolicy, ppb.SetVolumePolicyRequest(
    policy=ppb.VolumePolicy(volume="a1", tenant="beta"))) if role == "tenant" else None
call("VerifyAudit", audit_pb2_grpc.AuditServiceStub(ch).VerifyAudit, audit_pb2.VerifyAuditRequest())
call("ListUidRoles", access_pb2_grpc.AccessServiceStub(ch).ListUidRoles, apb.ListUidRolesRequest())
call("CreateToken", access_pb2_grpc.AccessServiceStub(ch).CreateToken,
     apb.CreateTokenRequest(role=apb.ROLE_VIEWER, description="t"))
call("NodeInfo", node_pb2_grpc.NodeServiceStub(ch).GetNodeInfo, node_pb2.GetNodeInfoRequest())
call("Calibrate", node_pb2_grpc.NodeServiceStub(ch).Calibrate,
     node_pb2.CalibrateRequest(seconds_max=2, working_set_bytes=16 << 20))
call("DeleteOwn", vol.DeleteVolume, vpb.DeleteVolumeRequest(name=mine))
seen = set()
try:
    for e in events_pb2_grpc.EventServiceStub(ch).WatchEvents(
            events_pb2.WatchEventsRequest(since_seq=1), timeout=1.5):
        if e.volume:
            seen.add(e.volume)
    out["Events"] = "OK"
except grpc.RpcError as e:
    out["Events"] = "OK" if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED else e.code().name
out["event_volumes"] = sorted(seen)
print(json.dumps(out))
'''
child = os.path.join(tmp, "child.py")
with open(child, "w") as f:
    f.write(CHILD)
os.chmod(child, 0o644)

P, D, N = "OK", "PERMISSION_DENIED", "NOT_FOUND"
#                viewer  tenant  operator admin   none
EXPECT = {
    "ListVolumes":  (P,      P,      P,       P,      D),
    "GetOwn":       (P,      P,      P,       P,      D),
    "GetOther":     (P,      N,      P,       P,      D),
    "Create":       (D,      P,      P,       P,      D),
    "ResizeOther":  (D,      N,      P,       P,      D),
    "DeleteOther":  (D,      N,      None,    None,   D),
    "PutTenant":    (D,      D,      P,       P,      D),
    "ListTenants":  (P,      P,      P,       P,      D),
    "GetOwnTenant": (P,      P,      P,       P,      D),
    "GetOtherTenant": (P,    N,      P,       P,      D),
    "PutOwnTenant": (D,      D,      P,       P,      D),
    "PutClass":     (D,      D,      P,       P,      D),
    "PolicyOwn":    (D,      P,      P,       P,      D),
    "PolicyGiveAway": (None, D,      None,    None,   None),
    "VerifyAudit":  (D,      D,      P,       P,      D),
    "ListUidRoles": (D,      D,      D,       P,      D),
    "CreateToken":  (D,      D,      D,       P,      D),
    "NodeInfo":     (P,      P,      P,       P,      D),
    "Calibrate":    (D,      D,      D,       P,      D),
    "DeleteOwn":    (D,      P,      P,       P,      D),
    "Events":       (P,      P,      P,       P,      D),
}
order = ["viewer", "tenant", "operator", "admin", "none"]
got = {}
for r in order:
    uid = UIDS[r]
    p = subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups",
                        "/usr/bin/python3", child, gen, sock, r], capture_output=True, text=True,
                       timeout=120)
    if p.returncode != 0:
        raise SystemExit("FAIL: child as %s: %s" % (r, p.stderr))
    got[r] = json.loads(p.stdout)
bad = []
for call, row in EXPECT.items():
    for r, want in zip(order, row):
        if want is None:
            continue
        if got[r].get(call) != want:
            bad.append("%s as %s: %s, wanted %s" % (call, r, got[r].get(call), want))
check("role x call matrix (%d cells)%s" % (sum(x is not None for row in EXPECT.values()
                                                for x in row), "" if not bad else ": " + "; ".join(bad)),
      not bad)
check("a tenant lists only its own volumes (%s)" % got["tenant"]["listed"],
      got["tenant"]["listed"] == ["a1"])  # listed before it created its own
check("a viewer lists every volume", set(got["viewer"]["listed"]) >= {"a1", "b1", "x1"})
check("a tenant lists only its own tenant (%s)" % got["tenant"]["tenants"],
      got["tenant"]["tenants"] == ["acme"])
check("a tenant reads its own tenant's intent (%s)" % got["tenant"]["own_limit"],
      got["tenant"]["own_limit"] == 600)
t = ten.GetTenant(ppb.GetTenantRequest(name="acme"), timeout=10)
check("acme's intent as the operator and admin put it (%s)" % t.intent.limit.iops,
      t.intent.limit.iops == 1200 and not t.intent.HasField("reservation"))
check("a tenant's event stream names only its volumes (%s)" % got["tenant"]["event_volumes"],
      # (an event carries the volume's tenant as of the event: a1's creation came before its
      # policy named acme; the tenant's own volume is acme's from its creation)
      set(got["tenant"]["event_volumes"]) <= {"a1", "tenant-new"} and
      "tenant-new" in got["tenant"]["event_volumes"])
check("an operator's event stream names them all",
      {"a1", "b1"} <= set(got["operator"]["event_volumes"]))
# What the tenant created is its tenant's.
p = pol.GetVolumePolicy(ppb.GetVolumePolicyRequest(volume="b1"), timeout=10)
check("b1 still beta's after the tenant's attempts", p.tenant == "beta")
entries = [json.loads(l) for l in open(os.path.join(data, "audit", "audit.log"))]
denied = [e for e in entries if e["who"] == "uid:2001" and e["result"].startswith("PERMISSION")]
check("the viewer's refused changes are in the audit log (%d)" % len(denied), len(denied) >= 4)
print("ok - roles")
