"""The control API on TCP: always TLS, and callers are who their API token says. No token or a
bad, altered or revoked one: UNAUTHENTICATED; a viewer token reads but cannot change; an admin
token can; a tenant token sees and changes only its tenant's volumes; an operator token changes
tenants but not the uid map; a plaintext client gets nothing; the daemon refuses to listen on
TCP without TLS; a token created with a ttl works until it expires, then is UNAUTHENTICATED;
spdctl reaches the daemon with --address, --tls-ca and --token-file (or SPDCTL_TOKEN)."""
import os
import subprocess
import sys
import time

import grpc
import json

from spdlib import SPD2, check, free_port, self_signed_cert, start_spd2, temp_dir

HERE = os.path.dirname(os.path.abspath(__file__))
API = os.path.join(HERE, "..", "..", "api")
tmp = temp_dir("spd-ctls-")
gen = os.path.join(tmp, "gen")
os.makedirs(gen)
protos = ["spd/v1/%s.proto" % p for p in ("volumes", "access", "policy", "audit")]
subprocess.run(["protoc", "-I", API, "--python_out=" + gen, "--grpc_python_out=" + gen,
                "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin"] + protos,
               check=True)
sys.path.insert(0, gen)
from spd.v1 import access_pb2 as apb, access_pb2_grpc  # noqa: E402
from spd.v1 import audit_pb2, audit_pb2_grpc  # noqa: E402
from spd.v1 import policy_pb2 as ppb, policy_pb2_grpc  # noqa: E402
from spd.v1 import volumes_pb2 as vpb, volumes_pb2_grpc  # noqa: E402

cert, key = self_signed_cert(tmp)
port = free_port()

# Without a certificate, TCP is refused at start: never plaintext.
data0 = os.path.join(tmp, "data0")
p = subprocess.run([SPD2, "--data-dir", data0, "--pool-size", "1G", "--nbd-listen", "off",
                    "--metrics-listen", "off", "--quiet", "--control-listen",
                    "127.0.0.1:%d" % port], capture_output=True, text=True, timeout=30)
check("--control-listen without TLS files refuses to start (%r)" % p.stderr.strip()[-120:],
      p.returncode != 0 and "control-tls-cert" in p.stderr)

# Files that are not a certificate and its key: refused at start (exit 2) with GnuTLS's reason,
# before the pool opens (none is made); gRPC alone said only that its server did not start.
cert2, key2 = self_signed_cert(tmp, name="other")
junk = os.path.join(tmp, "junk.pem")
with open(junk, "w") as f:
    f.write("not a certificate\n")
for what, c, k in (("a file that is no certificate", junk, key), ("another certificate's key",
                                                                   cert, key2)):
    fresh = os.path.join(tmp, "fresh")
    p = subprocess.run([SPD2, "--data-dir", fresh, "--pool-size", "1G", "--nbd-listen", "off",
                        "--metrics-listen", "off", "--quiet", "--control-listen",
                        "127.0.0.1:%d" % port, "--control-tls-cert", c, "--control-tls-key", k],
                       capture_output=True, text=True, timeout=30)
    check("%s is refused at start with exit 2 (%r)" % (what, p.stderr.strip()[-160:]),
          p.returncode == 2 and "--control-tls-cert" in p.stderr)
    check("%s leaves no pool behind" % what, not os.path.exists(os.path.join(fresh, "pool.img")))

data = os.path.join(tmp, "data")
start_spd2(data, ["--pool-size", "1G", "--volume", "vol0:16M", "--control-listen",
                  "127.0.0.1:%d" % port, "--control-tls-cert", cert, "--control-tls-key", key],
           "nbd+unix:///vol0?socket=" + os.path.join(data, "nbd.sock"))
local = grpc.insecure_channel("unix:" + os.path.join(data, "control.sock"))
acc = access_pb2_grpc.AccessServiceStub(local)
viewer = acc.CreateToken(apb.CreateTokenRequest(role=apb.ROLE_VIEWER, description="ro"),
                         timeout=10)
admin = acc.CreateToken(apb.CreateTokenRequest(role=apb.ROLE_ADMIN, description="ci"),
                        timeout=10)
check("a token's secret is shown once, in the spd_<id>_ form",
      viewer.secret.startswith("spd_" + viewer.token.id + "_"))

creds = grpc.ssl_channel_credentials(root_certificates=open(cert, "rb").read())
tls = grpc.secure_channel("127.0.0.1:%d" % port, creds,
                          options=[("grpc.ssl_target_name_override", "localhost")])
vol = volumes_pb2_grpc.VolumeServiceStub(tls)


def code(fn, req, token=None):
    md = [("authorization", "Bearer " + token)] if token else None
    try:
        fn(req, timeout=10, metadata=md)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


lst = vpb.ListVolumesRequest()
mk = vpb.CreateVolumeRequest(name="over-tls", size_bytes=4096)
check("no token: UNAUTHENTICATED", code(vol.ListVolumes, lst) == grpc.StatusCode.UNAUTHENTICATED)
check("garbage token: UNAUTHENTICATED",
      code(vol.ListVolumes, lst, "spd_nothing") == grpc.StatusCode.UNAUTHENTICATED)
altered = viewer.secret[:-1] + ("A" if viewer.secret[-1] != "A" else "B")
check("an altered token: UNAUTHENTICATED",
      code(vol.ListVolumes, lst, altered) == grpc.StatusCode.UNAUTHENTICATED)
check("viewer token reads", code(vol.ListVolumes, lst, viewer.secret) == grpc.StatusCode.OK)
check("viewer token cannot create: PERMISSION_DENIED",
      code(vol.CreateVolume, mk, viewer.secret) == grpc.StatusCode.PERMISSION_DENIED)
check("admin token creates", code(vol.CreateVolume, mk, admin.secret) == grpc.StatusCode.OK)
acc.RevokeToken(apb.RevokeTokenRequest(id=viewer.token.id), timeout=10)
check("a revoked token: UNAUTHENTICATED",
      code(vol.ListVolumes, lst, viewer.secret) == grpc.StatusCode.UNAUTHENTICATED)

# A token with a ttl (spdctl token create --ttl): accepted until it expires, then UNAUTHENTICATED
# saying so; spdctl refuses a ttl it cannot read as a usage error (exit 2), the daemon one that is
# too long (INVALID_ARGUMENT, exit 8); token list shows the expiry.
SPDCTL = os.environ.get("SPDCTL", os.path.join(os.path.dirname(SPD2), "spdctl"))
sock = ["--socket", os.path.join(data, "control.sock")]
for bad in ("0", "0s", "=-1h", "1w", "abc", "1.5h"):
    r = subprocess.run([SPDCTL] + sock + ["token", "create", "--role", "viewer",
                       "--ttl" + (bad if bad.startswith("=") else "=" + bad)],
                       capture_output=True, text=True, timeout=30)
    check("--ttl %s: usage error, exit 2 (%r)" % (bad, r.stderr.strip()),
          r.returncode == 2 and "--ttl" in r.stderr)
r = subprocess.run([SPDCTL] + sock + ["token", "create", "--role", "viewer", "--ttl", "3651d"],
                   capture_output=True, text=True, timeout=30)
check("--ttl over 10 years: INVALID_ARGUMENT, exit 8 (%r)" % r.stderr.strip(),
      r.returncode == 8 and "ttl_seconds" in r.stderr)
t0 = time.time()
r = subprocess.run([SPDCTL] + sock + ["token", "create", "--role", "viewer", "--ttl", "2s",
                    "--description", "short"], capture_output=True, text=True, timeout=30)
short = r.stdout.strip()
check("spdctl token create --ttl 2s (%r)" % r.stderr.strip(), r.returncode == 0 and short)
t_call = time.time()
ok_before = code(vol.ListVolumes, lst, short)
import json as _json  # noqa: E402
listed = _json.loads(subprocess.run([SPDCTL] + sock + ["token", "list", "-o", "json"],
                                    capture_output=True, text=True, timeout=30).stdout)
mine = [t for t in listed["items"] if short.startswith("spd_" + t["id"] + "_")]
check("token list -o json shows its expiresUnix (%s)" % mine,
      len(mine) == 1 and mine[0]["expiresUnix"] == mine[0]["createdUnix"] + 2)
table = subprocess.run([SPDCTL] + sock + ["token", "list"], capture_output=True, text=True,
                       timeout=30).stdout
check("token list's table has EXPIRES (never, or the time)",
      "EXPIRES" in table and "never" in table and "Z " in table)
# created_unix is in whole seconds: the token lives 1 to 2 s; the call came well before.
check("a 2 s token works at first (%.2f s after its creation began: %s)" %
      (t_call - t0, ok_before.name),
      ok_before == grpc.StatusCode.OK and t_call < mine[0]["expiresUnix"])
time.sleep(max(0.0, mine[0]["expiresUnix"] - time.time()) + 0.2)
try:
    vol.ListVolumes(lst, timeout=10, metadata=[("authorization", "Bearer " + short)])
    expired = None
except grpc.RpcError as e:
    expired = e
check("once expired: UNAUTHENTICATED, 'API token expired' (%s)" %
      (expired and expired.details()),
      expired is not None and expired.code() == grpc.StatusCode.UNAUTHENTICATED
      and "expired" in expired.details())
r = subprocess.run([SPDCTL] + sock + ["token", "create", "--role", "viewer", "--ttl", "1h",
                    "-o", "json"], capture_output=True, text=True, timeout=30)
nt = _json.loads(r.stdout) if r.returncode == 0 else {}
check("token create -o json: kind NewToken with the secret and its expiry (%r)" % r.stderr,
      nt.get("apiVersion") == "spd.v1" and nt.get("kind") == "NewToken"
      and nt["secret"].startswith("spd_" + nt["id"] + "_")
      and nt["expiresUnix"] == nt["createdUnix"] + 3600
      and code(vol.ListVolumes, lst, nt["secret"]) == grpc.StatusCode.OK)
check("a token without a ttl still works",
      code(vol.ListVolumes, lst, admin.secret) == grpc.StatusCode.OK)

# Tenant and operator tokens: the role table applies to tokens as to uids (docs/control.md).
lvol = volumes_pb2_grpc.VolumeServiceStub(local)
lten = policy_pb2_grpc.TenantServiceStub(local)
lpol = policy_pb2_grpc.IntentServiceStub(local)
for t in ("acme", "beta"):
    lten.PutTenant(ppb.PutTenantRequest(tenant=ppb.Tenant(name=t)), timeout=10)
for name, t in (("a1", "acme"), ("b1", "beta")):
    lvol.CreateVolume(vpb.CreateVolumeRequest(name=name, size_bytes=1 << 20), timeout=10)
    lpol.SetVolumePolicy(ppb.SetVolumePolicyRequest(policy=ppb.VolumePolicy(volume=name, tenant=t)),
                         timeout=10)
tenant = acc.CreateToken(apb.CreateTokenRequest(role=apb.ROLE_TENANT, tenant="acme"), timeout=10)
operator = acc.CreateToken(apb.CreateTokenRequest(role=apb.ROLE_OPERATOR), timeout=10)
ten = policy_pb2_grpc.TenantServiceStub(tls)
aud = audit_pb2_grpc.AuditServiceStub(tls)
tacc = access_pb2_grpc.AccessServiceStub(tls)
C = grpc.StatusCode
CELLS = [  # (what, call, request, tenant token, operator token)
    ("GetVolume own", vol.GetVolume, vpb.GetVolumeRequest(name="a1"), C.OK, C.OK),
    ("GetVolume other", vol.GetVolume, vpb.GetVolumeRequest(name="b1"), C.NOT_FOUND, C.OK),
    ("ResizeVolume other", vol.ResizeVolume,
     vpb.ResizeVolumeRequest(name="b1", size_bytes=1 << 20), C.NOT_FOUND, C.OK),
    ("CreateVolume", vol.CreateVolume, None, C.OK, C.OK),
    ("PutTenant", ten.PutTenant, ppb.PutTenantRequest(tenant=ppb.Tenant(name="gamma")),
     C.PERMISSION_DENIED, C.OK),
    ("GetTenant other", ten.GetTenant, ppb.GetTenantRequest(name="beta"), C.NOT_FOUND, C.OK),
    ("VerifyAudit", aud.VerifyAudit, audit_pb2.VerifyAuditRequest(), C.PERMISSION_DENIED, C.OK),
    ("ListUidRoles", tacc.ListUidRoles, apb.ListUidRolesRequest(), C.PERMISSION_DENIED,
     C.PERMISSION_DENIED),
    ("CreateToken", tacc.CreateToken, apb.CreateTokenRequest(role=apb.ROLE_ADMIN),
     C.PERMISSION_DENIED, C.PERMISSION_DENIED),
]
bad = []
for what, fn, req, *want in CELLS:
    for who, tok, w in (("tenant", tenant, want[0]), ("operator", operator, want[1])):
        r = req or vpb.CreateVolumeRequest(name="new-by-" + who, size_bytes=4096)
        got = code(fn, r, tok.secret)
        if got != w:
            bad.append("%s with a %s token: %s, wanted %s" % (what, who, got.name, w.name))
check("tenant and operator tokens over TLS: %d cells%s" % (2 * len(CELLS),
      "" if not bad else ": " + "; ".join(bad)), not bad)
listed = sorted(v.name for v in vol.ListVolumes(lst, timeout=10, metadata=[
    ("authorization", "Bearer " + tenant.secret)]).volumes)
check("a tenant token lists only its tenant's volumes (%s)" % listed,
      listed == ["a1", "new-by-tenant"])
check("what a tenant token creates is its tenant's",
      lpol.GetVolumePolicy(ppb.GetVolumePolicyRequest(volume="new-by-tenant"),
                           timeout=10).tenant == "acme")

# spdctl against the remote daemon: --address, --tls-ca, --token-file (or SPDCTL_TOKEN). A viewer
# token lists; creating is PERMISSION_DENIED (exit 6, docs/spdctl.md); a bad token is
# UNAUTHENTICATED (exit 6); a CA that did not sign the certificate or another server name cannot
# connect (exit 7).
rviewer = acc.CreateToken(apb.CreateTokenRequest(role=apb.ROLE_VIEWER, description="remote"),
                          timeout=10).secret
tokfile = os.path.join(tmp, "viewer.token")
with open(tokfile, "w") as f:
    f.write(rviewer + "\n")
os.chmod(tokfile, 0o600)
remote = [SPDCTL, "--address", "127.0.0.1:%d" % port, "--tls-ca", cert, "--timeout", "10"]
env = {k: v for k, v in os.environ.items() if k != "SPDCTL_TOKEN"}


def ctl(args, extra_env=None):
    return subprocess.run(remote + args, capture_output=True, text=True, timeout=60,
                          env=dict(env, **(extra_env or {})))


r = ctl(["--token-file", tokfile, "volume", "list", "-o", "json"])
names = sorted(v["name"] for v in json.loads(r.stdout)["items"]) if r.returncode == 0 else r.stderr
check("spdctl --address --tls-ca --token-file volume list with a viewer token (%s)" % names,
      r.returncode == 0 and "over-tls" in names)
r = ctl(["--token-file", tokfile, "--tls-server-name", "localhost", "volume", "create", "nope",
         "--size", "1M"])
check("... volume create: PERMISSION_DENIED, exit 6 (%r)" % r.stderr.strip(),
      r.returncode == 6 and "PERMISSION_DENIED" in r.stderr)
r = ctl(["volume", "list"], {"SPDCTL_TOKEN": rviewer})
check("SPDCTL_TOKEN instead of --token-file (%r)" % r.stderr.strip(),
      r.returncode == 0 and "over-tls" in r.stdout)
r = ctl(["volume", "list"], {"SPDCTL_TOKEN": altered})
check("a bad token: UNAUTHENTICATED, exit 6 (%r)" % r.stderr.strip(),
      r.returncode == 6 and "UNAUTHENTICATED" in r.stderr)
r = ctl(["volume", "list"])
check("--address without a token: usage error, exit 2 (%r)" % r.stderr.strip(),
      r.returncode == 2 and "token" in r.stderr)
other_ca, _ = self_signed_cert(tmp, "other", san=False)
r = subprocess.run([SPDCTL, "--address", "127.0.0.1:%d" % port, "--tls-ca", other_ca,
                    "--token-file", tokfile, "--timeout", "5", "volume", "list"],
                   capture_output=True, text=True, timeout=60, env=env)
check("a CA that did not sign the daemon's certificate: exit 7 (%r)" % r.stderr.strip()[-80:],
      r.returncode == 7)
r = ctl(["--token-file", tokfile, "--tls-server-name", "elsewhere", "volume", "list"])
check("a server name the certificate does not have: exit 7 (%d %r)" % (r.returncode, r.stderr), r.returncode == 7)

plain = volumes_pb2_grpc.VolumeServiceStub(grpc.insecure_channel("127.0.0.1:%d" % port))
check("a plaintext client gets nothing",
      code(plain.ListVolumes, lst, admin.secret) == grpc.StatusCode.UNAVAILABLE)
entries = [json.loads(l) for l in open(os.path.join(data, "audit", "audit.log"))]
made = [e for e in entries if e["method"].endswith("CreateVolume") and e["result"] == "OK"
        and e["args"].get("name") == "over-tls"]
check("the audit log names the token (%s)" % (made[-1]["who"] if made else None),
      made and made[-1]["who"] == "token:" + admin.token.id)
check("the database holds no secret",
      admin.secret.encode() not in open(os.path.join(data, "state.db"), "rb").read())
print("ok - control API over TLS with tokens")
