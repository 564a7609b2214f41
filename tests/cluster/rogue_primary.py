"""A node that has valid replication credentials (a certificate of the cluster's CA) and lies:
it says it is a volume's primary at an epoch of its choosing (docs/replication.md, "TLS").
Sends a hello over TLS to a replica's listener, and, if the replica takes it, one 4 KiB FUA
write at offset 0. Prints one JSON line: the hello's answer ("closed" when the session ended
without one) and the write's result (null when not sent). The wire format is the one of
src/replica/replica_wire.h, written from its description."""
import argparse
import json
import socket
import ssl
import struct

MAGIC, VERSION = 0x52445053, 5
HELLO, HELLO_REPLY, WRITE, ACK = 1, 2, 3, 7
FUA = 1
HEADER = struct.Struct("<IHHHHiQQQII")  # 48 bytes
HELLO_BODY = struct.Struct("<64sQQQII")  # 96 bytes
REPLY_BODY = struct.Struct("<IIQQQQQIIQQ")  # 72 bytes
STATUS = ["in_sync", "out_of_sync", "stale_epoch", "no_volume", "size_mismatch", "busy", "error"]


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def header(type_, epoch, seq=0, flags=0, result=0, offset=0, payload=b""):
    return HEADER.pack(MAGIC, VERSION, type_, flags, 0, result, epoch, seq, offset, len(payload),
                       crc32c(payload) if payload else 0) + payload


def read_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            return None
        out += chunk
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True, help="HOST:PORT of the replica's listener")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--server-name", required=True, help="the replica's node name")
    ap.add_argument("--volume", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--epoch", type=int, required=True)
    a = ap.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.load_verify_locations(a.ca)
    ctx.check_hostname = False  # the replica's chain is checked; its name does not matter here
    host, port = a.address.rsplit(":", 1)
    out = {"hello": "closed", "write": None}
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=a.server_name) as s:
            body = HELLO_BODY.pack(a.volume.encode(), a.size, 0, 0, 1 << 20, 0)
            s.sendall(header(HELLO, a.epoch, payload=body))
            try:
                h = read_exact(s, HEADER.size)
                if h is not None:
                    f = HEADER.unpack(h)
                    rb = read_exact(s, f[9])
                    if f[2] == HELLO_REPLY and rb is not None:
                        status = REPLY_BODY.unpack(rb[:REPLY_BODY.size])[0]
                        out["hello"] = STATUS[status] if status < len(STATUS) else str(status)
                if out["hello"] in ("in_sync", "out_of_sync"):
                    s.sendall(header(WRITE, a.epoch, seq=1, flags=FUA, payload=b"\xee" * 4096))
                    h = read_exact(s, HEADER.size)
                    if h is not None and HEADER.unpack(h)[2] == ACK:
                        out["write"] = HEADER.unpack(h)[5]
            except (OSError, ssl.SSLError):
                pass
    print(json.dumps(out))


if __name__ == "__main__":
    main()
