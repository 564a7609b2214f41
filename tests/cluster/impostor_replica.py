"""An impostor at a replica's address (docs/replication.md, "TLS"): it listens on HOST:PORT with
a certificate of the cluster's CA that names another node, for SECONDS, and completes whatever
TLS handshakes it can. Prints one JSON line: the connections it accepted, the handshakes that
completed, and the bytes of application data it received (a primary that took it for the node
would send its hello)."""
import argparse
import json
import socket
import ssl
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, help="HOST:PORT")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    a = ap.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    host, port = a.listen.rsplit(":", 1)
    out = {"connections": 0, "handshakes": 0, "app_bytes": 0}
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(16)
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        srv.settimeout(max(0.05, end - time.monotonic()))
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        out["connections"] += 1
        conn.settimeout(2)
        try:
            with ctx.wrap_socket(conn, server_side=True) as s:
                out["handshakes"] += 1
                data = s.recv(4096)
                out["app_bytes"] += len(data)
        except (OSError, ssl.SSLError):
            pass
    srv.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
