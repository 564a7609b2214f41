"""Who may do what on the control API: every RPC of every service in api/spd/v1/*.proto and
grpc.health.v1.Health, each called by every role (viewer, tenant, operator, admin, and a uid
with none), each caller a real local user (uid) on the control socket, identified by
SO_PEERCRED. A call that names a volume, policy or tenant is made on the tenant's own object and
on another tenant's: a tenant sees and touches only its own tenant's, also in lists and the
event stream. The expected code of every cell comes from docs/control.md's role table (PERMITTED
below); a call this node cannot serve (replication and cluster calls without --cluster) answers
a permitted caller FAILED_PRECONDITION, never PERMISSION_DENIED. The test fails when the protos
have an RPC the matrix does not cover.

The same matrix runs a second time over TCP with TLS (--control-listen), each caller an API token
of its role (the tenant's of acme; "none" sends no token and is UNAUTHENTICATED, but for the
health service): docs/control.md says tokens carry the same roles."""
import glob
import importlib
import json
import os
import subprocess
import sys

import grpc

from spdlib import check, free_port, self_signed_cert, start_spd2, temp_dir

HERE = os.path.dirname(os.path.abspath(__file__))
API = os.path.join(HERE, "..", "..", "api")
tmp = temp_dir("spd-roles-")
os.chmod(tmp, 0o755)
gen = os.path.join(tmp, "gen")
os.makedirs(gen)
# Every proto of the API, and gRPC's standard health service (its well-known definition; a
# module name of its own, so that no "grpc" package shadows grpcio).
protos = sorted(os.path.relpath(p, API)
                for p in glob.glob(os.path.join(API, "spd", "v1", "*.proto")))
with open(os.path.join(gen, "spd_health.proto"), "w") as f:
    f.write('''syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
''')
subprocess.run(["protoc", "-I", API, "-I", gen, "--python_out=" + gen, "--grpc_python_out=" + gen,
                "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin", "spd_health.proto"]
               + protos, check=True)
for root, dirs, files in os.walk(gen):
    for d in dirs:
        os.chmod(os.path.join(root, d), 0o755)
    for f in files:
        os.chmod(os.path.join(root, f), 0o644)
sys.path.insert(0, gen)
MODULES = [importlib.import_module(p[:-len(".proto")].replace("/", ".") + "_pb2") for p in protos]
MODULES.append(importlib.import_module("spd_health_pb2"))
from spd.v1 import access_pb2 as apb, access_pb2_grpc  # noqa: E402
from spd.v1 import policy_pb2 as ppb, policy_pb2_grpc  # noqa: E402
from spd.v1 import volumes_pb2 as vpb, volumes_pb2_grpc  # noqa: E402

data = os.path.join(tmp, "data")
sock = os.path.join(data, "control.sock")
cert, key = self_signed_cert(tmp)
port = free_port()
start_spd2(data, ["--pool-size", "1G", "--volume", "x1:16M", "--control-socket-mode", "0666",
                  "--control-listen", "127.0.0.1:%d" % port, "--control-tls-cert", cert,
                  "--control-tls-key", key],
           "nbd+unix:///x1?socket=" + os.path.join(data, "nbd.sock"))
os.chmod(data, 0o711)
ch = grpc.insecure_channel("unix:" + sock)
vol = volumes_pb2_grpc.VolumeServiceStub(ch)
ten = policy_pb2_grpc.TenantServiceStub(ch)
cls = policy_pb2_grpc.StorageClassServiceStub(ch)
pol = policy_pb2_grpc.IntentServiceStub(ch)
acc = access_pb2_grpc.AccessServiceStub(ch)

ORDER = ["viewer", "tenant", "operator", "admin", "none"]
# Callers: a uid of each role on the socket, then a token of each role over TCP ("tcp-ROLE").
# Each has its own objects to use up (named after the caller).
TCP = ["tcp-" + r for r in ORDER]
CALLERS = ORDER + TCP
ROLE_OF = {c: c[len("tcp-"):] if c in TCP else c for c in CALLERS}
UIDS = {"viewer": 2001, "tenant": 2002, "operator": 2003, "admin": 2004, "none": 2005}
ROLES = {"viewer": apb.ROLE_VIEWER, "tenant": apb.ROLE_TENANT, "operator": apb.ROLE_OPERATOR,
         "admin": apb.ROLE_ADMIN}
MB16 = 16 << 20

# As root (an admin): two tenants (acme with an intent), a volume each, a class in use (x1's),
# and for every role the objects its deleting calls use up, so that the roles' calls do not
# depend on each other's.
ten.PutTenant(ppb.PutTenantRequest(tenant=ppb.Tenant(
    name="acme", intent=ppb.Intent(limit=ppb.Rate(iops=600)))), timeout=10)
ten.PutTenant(ppb.PutTenantRequest(tenant=ppb.Tenant(name="beta")), timeout=10)
# A tenant's intent has no latency target: refused naming the field, whoever asks.
try:
    ten.PutTenant(ppb.PutTenantRequest(tenant=ppb.Tenant(name="acme", intent=ppb.Intent(
        latency=ppb.LatencyTarget(percentile=99, bound_us=2000)))), timeout=10)
    check("a tenant intent with a latency target is refused", False)
except grpc.RpcError as e:
    check("a tenant intent with a latency target is refused (%s: %s)" % (e.code().name,
                                                                          e.details()),
          e.code() == grpc.StatusCode.INVALID_ARGUMENT and
          e.details().startswith("tenant.intent.latency: "))
cls.PutStorageClass(ppb.PutStorageClassRequest(storage_class=ppb.StorageClass(name="gold")),
                    timeout=10)
pol.SetVolumePolicy(ppb.SetVolumePolicyRequest(policy=ppb.VolumePolicy(volume="x1",
                                                                       storage_class="gold")),
                    timeout=10)


def owned_volume(name, tenant):
    vol.CreateVolume(vpb.CreateVolumeRequest(name=name, size_bytes=MB16), timeout=10)
    pol.SetVolumePolicy(ppb.SetVolumePolicyRequest(policy=ppb.VolumePolicy(volume=name,
                                                                           tenant=tenant)),
                        timeout=10)


owned_volume("a1", "acme")
owned_volume("b1", "beta")
ACME = {"a1"}
BETA = {"b1"}
victim_tokens = {}
for i, r in enumerate(CALLERS):
    owned_volume("del-own-" + r, "acme")     # DeleteVolume, own
    owned_volume("del-other-" + r, "beta")   # DeleteVolume, another tenant's
    owned_volume("ga-" + r, "acme")          # SetVolumePolicy giving it away
    ACME |= {"del-own-" + r, "ga-" + r}
    BETA |= {"del-other-" + r}
    ten.PutTenant(ppb.PutTenantRequest(tenant=ppb.Tenant(name="dt-" + r)), timeout=10)
    cls.PutStorageClass(ppb.PutStorageClassRequest(storage_class=ppb.StorageClass(name="dc-" + r)),
                        timeout=10)
    acc.PutUidRole(apb.PutUidRoleRequest(entry=apb.UidRole(uid=3001 + i, role=apb.ROLE_VIEWER)),
                   timeout=10)
    victim_tokens[r] = acc.CreateToken(apb.CreateTokenRequest(
        role=apb.ROLE_VIEWER, description="victim of " + r), timeout=10).token.id
for r, uid in UIDS.items():
    if r in ROLES:
        acc.PutUidRole(apb.PutUidRoleRequest(entry=apb.UidRole(
            uid=uid, role=ROLES[r], tenant="acme" if r == "tenant" else "")), timeout=10)
TOKENS = {"tcp-" + r: acc.CreateToken(apb.CreateTokenRequest(
    role=ROLES[r], tenant="acme" if r == "tenant" else "", description="matrix " + r),
    timeout=10).secret for r in ROLES}

# docs/control.md, "Who may call": the roles each kind of call is open to.
PERMITTED = {
    "read": {"viewer", "tenant", "operator", "admin"},      # list, get, watch events
    "volume": {"tenant", "operator", "admin"},              # create/resize/delete, policy set
    "policy": {"operator", "admin"},                        # tenants and storage classes
    "audit": {"operator", "admin"},                         # audit head, verify
    "admin": {"admin"},                                     # uid map, tokens, calibrate, promote
    "anyone": {"viewer", "tenant", "operator", "admin", "none"},  # health
}
OK, D, N, FP, AE = ("OK", "PERMISSION_DENIED", "NOT_FOUND", "FAILED_PRECONDITION",
                    "ALREADY_EXISTS")


def row(label, access, method, req, ok=OK, obj=None, tenant=None, keep=False, timeout=10,
        stream=0):
    """One call of the matrix. `obj`: "own" (the tenant's) or "other" (another tenant's) when
    the call names a volume, policy or tenant; a tenant gets NOT_FOUND for another's unless
    `tenant` says otherwise. `ok`: what a permitted caller gets on this node. `req`: the
    request (JSON form), or a function of the role."""
    return dict(label=label, access=access, method=method, req=req, ok=ok, obj=obj,
                tenant=tenant, keep=keep, timeout=timeout, stream=stream)


V, P, NO, EV, AU = ("spd.v1.VolumeService/", "spd.v1.PoolService/", "spd.v1.NodeService/",
                    "spd.v1.EventService/", "spd.v1.AuditService/")
TS, CS, IS, AS = ("spd.v1.TenantService/", "spd.v1.StorageClassService/",
                  "spd.v1.IntentService/", "spd.v1.AccessService/")
H = "grpc.health.v1.Health/"
# In the order each caller makes them: reads of the initial state first.
MATRIX = [
    row("ListVolumes", "read", V + "ListVolumes", {}, keep=True),
    row("GetVolume own", "read", V + "GetVolume", {"name": "a1"}, obj="own"),
    row("GetVolume other", "read", V + "GetVolume", {"name": "b1"}, obj="other"),
    row("GetVolume missing", "read", V + "GetVolume", {"name": "nope"}, ok=N),
    row("ListTenants", "read", TS + "ListTenants", {}, keep=True),
    row("GetTenant own", "read", TS + "GetTenant", {"name": "acme"}, obj="own", keep=True),
    row("GetTenant other", "read", TS + "GetTenant", {"name": "beta"}, obj="other"),
    row("GetTenant missing", "read", TS + "GetTenant", {"name": "nope"}, ok=N),
    row("ListStorageClasses", "read", CS + "ListStorageClasses", {}, keep=True),
    row("GetStorageClass", "read", CS + "GetStorageClass", {"name": "gold"}),
    row("GetStorageClass missing", "read", CS + "GetStorageClass", {"name": "nope"}, ok=N),
    row("ListVolumePolicies", "read", IS + "ListVolumePolicies", {}, keep=True),
    row("GetVolumePolicy own", "read", IS + "GetVolumePolicy", {"volume": "a1"}, obj="own"),
    row("GetVolumePolicy other", "read", IS + "GetVolumePolicy", {"volume": "b1"}, obj="other"),
    row("GetVolumePolicy missing", "read", IS + "GetVolumePolicy", {"volume": "nope"}, ok=N),
    row("GetPool", "read", P + "GetPool", {}),
    row("GetPool default", "read", P + "GetPool", {"name": "default"}),
    row("GetPool missing", "read", P + "GetPool", {"name": "other"}, ok=N),
    row("ListPools", "read", P + "ListPools", {}),
    row("GetNodeInfo", "read", NO + "GetNodeInfo", {}),
    # Cluster and replication calls on a node without --cluster: permitted, but refused.
    row("ListClusterNodes", "read", NO + "ListClusterNodes", {}, ok=FP),
    row("ListReplicas", "read", V + "ListReplicas", {}, ok=FP),
    row("ListReplicas own", "read", V + "ListReplicas", {"volume": "a1"}, ok=FP, obj="own"),
    row("ListReplicas other", "read", V + "ListReplicas", {"volume": "b1"}, ok=FP, obj="other",
        tenant=FP),
    row("PromoteReplica own", "admin", V + "PromoteReplica", {"volume": "a1"}, ok=FP, obj="own"),
    row("PromoteReplica other", "admin", V + "PromoteReplica", {"volume": "b1"}, ok=FP,
        obj="other"),
    row("DemoteReplica own", "admin", V + "DemoteReplica", {"volume": "a1"}, ok=FP, obj="own"),
    row("DemoteReplica other", "admin", V + "DemoteReplica", {"volume": "b1", "to": "n2"}, ok=FP,
        obj="other"),
    row("MoveReplica own", "admin", V + "MoveReplica", {"volume": "a1", "from": "n1", "to": "n2"},
        ok=FP, obj="own"),
    row("MoveReplica other", "admin", V + "MoveReplica",
        {"volume": "b1", "from": "n1", "to": "n2"}, ok=FP, obj="other"),
    row("SetReplicas own", "admin", V + "SetReplicas", {"volume": "a1", "replicas": 3}, ok=FP,
        obj="own"),
    row("SetReplicas other", "admin", V + "SetReplicas", {"volume": "b1", "replicas": 3}, ok=FP,
        obj="other"),
    row("GetAuditHead", "audit", AU + "GetAuditHead", {}),
    row("VerifyAudit", "audit", AU + "VerifyAudit", {}),
    # Volumes.
    row("CreateVolume", "volume", V + "CreateVolume",
        lambda r: {"name": r + "-new", "sizeBytes": 4096}),
    # Another tenant's name with its spec: idempotent for those who may see it; a tenant may
    # not (its own creation of that name cannot happen).
    row("CreateVolume other's name", "volume", V + "CreateVolume",
        {"name": "b1", "sizeBytes": MB16}, obj="other", tenant=AE),
    row("CreateVolume replicated", "volume", V + "CreateVolume",
        lambda r: {"name": r + "-rep", "sizeBytes": 4096, "replicas": 2}, ok=FP),
    row("ResizeVolume own", "volume", V + "ResizeVolume", {"name": "a1", "sizeBytes": MB16},
        obj="own"),
    row("ResizeVolume other", "volume", V + "ResizeVolume", {"name": "b1", "sizeBytes": MB16},
        obj="other"),
    row("SetDurability own", "volume", V + "SetDurability",
        {"name": "a1", "durability": "DURABILITY_FLUSH"}, obj="own"),
    row("SetDurability other", "volume", V + "SetDurability",
        {"name": "b1", "durability": "DURABILITY_FLUSH"}, obj="other"),
    row("DeleteVolume own", "volume", V + "DeleteVolume", lambda r: {"name": "del-own-" + r},
        obj="own"),
    row("DeleteVolume other", "volume", V + "DeleteVolume", lambda r: {"name": "del-other-" + r},
        obj="other"),
    # Volume policies.
    row("SetVolumePolicy own", "volume", IS + "SetVolumePolicy",
        {"policy": {"volume": "a1", "tenant": "acme"}}, obj="own"),
    # A replica count of its own: not a tenant's to set (copies take other nodes' space).
    row("SetVolumePolicy own replicas", "volume", IS + "SetVolumePolicy",
        {"policy": {"volume": "a1", "tenant": "acme", "intent": {"replicas": 1}}}, obj="own",
        tenant=D),
    row("SetVolumePolicy other", "volume", IS + "SetVolumePolicy",
        {"policy": {"volume": "b1", "tenant": "beta"}}, obj="other"),
    row("SetVolumePolicy give away", "volume", IS + "SetVolumePolicy",
        lambda r: {"policy": {"volume": "ga-" + r, "tenant": "beta"}}, obj="own", tenant=D),
    # Tenants (raising its own tenant's limit is a tenant put: not the tenant role's).
    row("PutTenant", "policy", TS + "PutTenant", lambda r: {"tenant": {"name": "t-" + r}}),
    row("PutTenant own", "policy", TS + "PutTenant",
        {"tenant": {"name": "acme", "intent": {"limit": {"iops": 1200}}}}, obj="own"),
    row("PutTenant other", "policy", TS + "PutTenant", {"tenant": {"name": "beta"}}, obj="other"),
    row("DeleteTenant unused", "policy", TS + "DeleteTenant", lambda r: {"name": "dt-" + r}),
    row("DeleteTenant own (in use)", "policy", TS + "DeleteTenant", {"name": "acme"}, ok=FP,
        obj="own"),
    row("DeleteTenant other (in use)", "policy", TS + "DeleteTenant", {"name": "beta"}, ok=FP,
        obj="other"),
    # Storage classes.
    row("PutStorageClass", "policy", CS + "PutStorageClass",
        lambda r: {"storageClass": {"name": "c-" + r}}),
    row("DeleteStorageClass unused", "policy", CS + "DeleteStorageClass",
        lambda r: {"name": "dc-" + r}),
    row("DeleteStorageClass in use", "policy", CS + "DeleteStorageClass", {"name": "gold"},
        ok=FP),
    # Access: the uid map and tokens.
    row("PutUidRole", "admin", AS + "PutUidRole",
        lambda r: {"entry": {"uid": 4001 + CALLERS.index(r), "role": "ROLE_VIEWER"}}),
    row("ListUidRoles", "admin", AS + "ListUidRoles", {}),
    row("DeleteUidRole", "admin", AS + "DeleteUidRole",
        lambda r: {"uid": 3001 + CALLERS.index(r)}),
    row("CreateToken", "admin", AS + "CreateToken",
        {"role": "ROLE_VIEWER", "description": "t"}),
    row("ListTokens", "admin", AS + "ListTokens", {}),
    row("RevokeToken", "admin", AS + "RevokeToken", lambda r: {"id": victim_tokens[r]}),
    row("RevokeToken missing", "admin", AS + "RevokeToken", {"id": "0000000000000000"}, ok=N),
    # Calibration: admins only (a short one: 4 s; with 2 s its time cap was reached once under
    # the ASan daemon on a loaded 2-core machine, DEADLINE_EXCEEDED).
    row("Calibrate", "admin", NO + "Calibrate",
        {"secondsMax": 4, "workingSetBytes": MB16}, timeout=120),
    # Events from the first: the stream stays open (a deadline ends it: OK).
    row("WatchEvents", "read", EV + "WatchEvents", {"sinceSeq": 1}, keep=True, stream=1.5),
    # gRPC's health service: anyone who can reach the socket.
    row("Health.Check", "anyone", H + "Check", {}, keep=True),
    row("Health.Watch", "anyone", H + "Watch", {}, keep=True, stream=10),
]


def expected(r, caller):
    role = ROLE_OF[caller]
    if caller == "tcp-none":  # no token: only the health service answers
        return OK if r["access"] == "anyone" else "UNAUTHENTICATED"
    if role not in PERMITTED[r["access"]]:
        return D
    if role == "tenant" and r["tenant"] is not None:
        return r["tenant"]
    if role == "tenant" and r["obj"] == "other":
        return N
    return r["ok"]


# Every RPC of every service has at least one row.
rpcs = {"%s/%s" % (s.full_name, m.name) for mod in MODULES
        for s in mod.DESCRIPTOR.services_by_name.values() for m in s.methods}
covered = {r["method"] for r in MATRIX}
check("the matrix covers every RPC of the protos (%d RPCs in %d services)%s" % (
    len(rpcs), len({x.split("/")[0] for x in rpcs}),
    "" if rpcs <= covered else ": missing " + ", ".join(sorted(rpcs - covered))),
      rpcs <= covered and covered <= rpcs)

# Each caller is a child process under its uid: it makes the calls listed for it, generically
# (method descriptors of the generated modules), and prints each one's code and, for the rows
# kept, the answers.
CHILD = r'''
import glob, importlib, json, os, sys
import grpc
gen, conn, calls = sys.argv[1], json.loads(sys.argv[2]), json.load(open(sys.argv[3]))
sys.path.insert(0, gen)
from google.protobuf import json_format, symbol_database
for f in glob.glob(os.path.join(gen, "spd", "v1", "*_pb2.py")):
    importlib.import_module("spd.v1." + os.path.basename(f)[:-3])
importlib.import_module("spd_health_pb2")
db = symbol_database.Default()
if conn.get("ca"):  # TCP with TLS, and the caller's token if it has one
    ch = grpc.secure_channel(conn["target"], grpc.ssl_channel_credentials(
        root_certificates=open(conn["ca"], "rb").read()))
    md = [("authorization", "Bearer " + conn["token"])] if conn.get("token") else None
else:
    ch, md = grpc.insecure_channel(conn["target"]), None
out = {}
for c in calls:
    service, name = c["method"].split("/")
    m = db.pool.FindServiceByName(service).FindMethodByName(name)
    req_t, resp_t = db.GetSymbol(m.input_type.full_name), db.GetSymbol(m.output_type.full_name)
    req = json_format.ParseDict(c["req"], req_t())
    path = "/%s/%s" % (service, name)
    got = []
    try:
        if m.server_streaming:
            it = ch.unary_stream(path, request_serializer=req_t.SerializeToString,
                                 response_deserializer=resp_t.FromString)(req, timeout=c["stream"],
                                                                metadata=md)
            try:
                for x in it:
                    got.append(json_format.MessageToDict(x))
                    if service.startswith("grpc.health"):
                        it.cancel()  # the first answer is the status; the stream stays open
                        break
                code = "OK"
            except grpc.RpcError as e:
                # Open until the deadline (or our cancel): the call was admitted.
                code = ("OK" if e.code() in (grpc.StatusCode.DEADLINE_EXCEEDED,
                                             grpc.StatusCode.CANCELLED) else e.code().name)
        else:
            x = ch.unary_unary(path, request_serializer=req_t.SerializeToString,
                               response_deserializer=resp_t.FromString)(req, timeout=c["timeout"],
                                                                 metadata=md)
            got.append(json_format.MessageToDict(x))
            code = "OK"
    except grpc.RpcError as e:
        code = e.code().name
    out[c["label"]] = {"code": code, "answers": got if c["keep"] else None}
print(json.dumps(out))
'''
child = os.path.join(tmp, "child.py")
with open(child, "w") as f:
    f.write(CHILD)
os.chmod(child, 0o644)

got = {}
for r in CALLERS:
    calls = [dict(label=x["label"], method=x["method"],
                  req=x["req"](r) if callable(x["req"]) else x["req"], keep=x["keep"],
                  timeout=x["timeout"], stream=x["stream"]) for x in MATRIX]
    cf = os.path.join(tmp, "calls-%s.json" % r)
    with open(cf, "w") as f:
        json.dump(calls, f)
    os.chmod(cf, 0o644)
    if r in TCP:  # as ourselves: who the caller is is its token
        conn = {"target": "127.0.0.1:%d" % port, "ca": cert, "token": TOKENS.get(r)}
        cmd = []
    else:
        conn = {"target": "unix:" + sock}
        cmd = ["setpriv", "--reuid=%d" % UIDS[r], "--regid=%d" % UIDS[r], "--clear-groups"]
    p = subprocess.run(cmd + ["/usr/bin/python3", child, gen, json.dumps(conn), cf],
                       capture_output=True, text=True, timeout=280)
    if p.returncode != 0:
        raise SystemExit("FAIL: child as %s: %s" % (r, p.stderr))
    got[r] = json.loads(p.stdout)

cells = 0
for what, callers in (("uids on the socket", ORDER), ("tokens over TCP and TLS", TCP)):
    bad = []
    print("%s\n%-30s %s" % (what, "call", "  ".join("%-9s" % r for r in ORDER)))
    for x in MATRIX:
        line = []
        for r in callers:
            want, have = expected(x, r), got[r][x["label"]]["code"]
            cells += 1
            line.append("%-9s" % (have[:9] if have == want else "!" + have[:8]))
            if have != want:
                bad.append("%s as %s: %s, wanted %s" % (x["label"], r, have, want))
        print("%-30s %s" % (x["label"], "  ".join(line)))
    check("role x call matrix, %s: %d cells (%d calls x %d callers, %d RPCs)%s" % (
        what, len(MATRIX) * len(callers), len(MATRIX), len(callers), len(rpcs),
        "" if not bad else ": " + "; ".join(bad)), not bad)


def answers(role, label):
    return got[role][label]["answers"] or []


def listed(role):
    return {v["name"] for v in answers(role, "ListVolumes")[0].get("volumes", [])}


def tenants(role):
    return [t["name"] for t in answers(role, "ListTenants")[0].get("tenants", [])]


def pols(role):
    return {p["volume"]: p.get("tenant", "")
            for p in answers(role, "ListVolumePolicies")[0].get("policies", [])}


def ev(role):
    return {e["volume"] for e in answers(role, "WatchEvents") if e.get("volume")}


check("a tenant lists only its own tenant's volumes (%s)" % sorted(listed("tenant")),
      "a1" in listed("tenant") and listed("tenant") <= ACME)
check("a tenant token lists only its own tenant's volumes (%s)" % sorted(listed("tcp-tenant")),
      "a1" in listed("tcp-tenant") and listed("tcp-tenant") <= ACME | {"tenant-new"})
# (after the socket's callers: what they deleted is gone, what the tenant made is there)
check("a viewer token lists every volume",
      listed("tcp-viewer") >= {"a1", "b1", "x1", "tenant-new", "del-own-tcp-viewer",
                               "del-other-tcp-viewer"})
check("a tenant token lists only its own tenant (%s)" % tenants("tcp-tenant"),
      tenants("tcp-tenant") == ["acme"])
check("a viewer lists every volume", listed("viewer") >= ACME | BETA | {"x1"})
check("a tenant lists only its own tenant (%s)" % tenants("tenant"), tenants("tenant") == ["acme"])
check("an operator lists every tenant", {"acme", "beta"} <= set(tenants("operator")))
own = answers("tenant", "GetTenant own")[0]
check("a tenant reads its own tenant's intent (%s)" % own,
      own.get("intent", {}).get("limit", {}).get("iops") == "600")
check("a tenant lists only its own tenant's policies (%s)" % sorted(pols("tenant")),
      "a1" in pols("tenant") and set(pols("tenant").values()) == {"acme"})
check("a viewer lists every policy", {"a1", "b1", "x1"} <= set(pols("viewer")))
classes = [c["name"] for c in answers("tenant", "ListStorageClasses")[0].get("storageClasses", [])]
check("storage classes belong to no tenant: a tenant lists them (%s)" % classes, "gold" in classes)
check("a tenant's event stream names only its volumes (%s)" % sorted(ev("tenant")),
      # (an event carries the volume's tenant as of the event: a volume's creation came before
      # its policy named acme)
      ev("tenant") <= ACME | {"tenant-new"})
check("a tenant's watcher sees its own volume's creation: acme's from the start",
      [e.get("volumeInfo", {}).get("tenant") for e in answers("tenant", "WatchEvents")
       if e.get("volume") == "tenant-new" and e["type"] == "EVENT_TYPE_VOLUME_CREATED"]
      == ["acme"])
check("an operator's event stream names them all", {"a1", "b1"} <= ev("operator"))
for r in CALLERS:
    for label in ("Health.Check", "Health.Watch"):
        a = answers(r, label)
        check("%s as %s: SERVING" % (label, r), a and a[0].get("status") == "SERVING")

t = ten.GetTenant(ppb.GetTenantRequest(name="acme"), timeout=10)
check("acme's intent as the operator and admin put it (%s)" % t.intent.limit.iops,
      t.intent.limit.iops == 1200 and not t.intent.HasField("reservation"))
p = pol.GetVolumePolicy(ppb.GetVolumePolicyRequest(volume="b1"), timeout=10)
check("b1 still beta's after the tenant's attempts", p.tenant == "beta")
p = pol.GetVolumePolicy(ppb.GetVolumePolicyRequest(volume="ga-tenant"), timeout=10)
check("the tenant could not give its volume away", p.tenant == "acme")
p = pol.GetVolumePolicy(ppb.GetVolumePolicyRequest(volume="tenant-new"), timeout=10)
check("what the tenant created is its tenant's (%r)" % p.tenant, p.tenant == "acme")
names = {v.name for v in vol.ListVolumes(vpb.ListVolumesRequest(), timeout=10).volumes}
for t in ("tenant", "tcp-tenant"):
    check("the %s deleted its own volume and not another's" % t,
          "del-own-" + t not in names and "del-other-" + t in names)
check("denied callers deleted nothing",
      {"del-%s-%s" % (o, c) for o in ("own", "other")
       for c in ("viewer", "none", "tcp-viewer", "tcp-none")} <= names)
entries = [json.loads(line) for line in open(os.path.join(data, "audit", "audit.log"))]
for r in ("viewer", "none"):
    denied = [e for e in entries if e["who"] == "uid:%d" % UIDS[r] and
              e["result"].startswith("PERMISSION")]
    want = sum(1 for x in MATRIX if x["access"] not in ("read", "anyone", "audit")
               and not x["method"].startswith(AS[:-1] + "/List"))
    check("the %s's refused changes are all in the audit log (%d of %d)" % (
        "viewer" if r == "viewer" else "role-less uid", len(denied), want), len(denied) == want)
print("ok - roles: %d cells" % cells)
