#!/usr/bin/python3
"""A tiny network probe for the namespace harness (tests/cluster/netns.sh); run it inside a
namespace with nsrun.

  netprobe.py listen HOST PORT          TCP echo server on HOST:PORT, and a UDP receiver on the
                                        same port that prints "udp TOKEN SRCIP" per datagram
                                        (stdout, flushed). Runs until killed.
  netprobe.py check HOST PORT TIMEOUT_S exit 0 if a TCP connect + echo round trip to HOST:PORT
                                        completes within TIMEOUT_S seconds, 1 otherwise.
  netprobe.py send HOST PORT TOKEN      sends TOKEN as UDP datagrams to HOST:PORT (a few copies;
                                        a send error is not an error: the probe is the receiver).
  netprobe.py probe TIMEOUT_S TOKEN HOST:PORT...
                                        for every target at once: sends TOKEN by UDP, then the TCP
                                        check; prints "HOST:PORT ok" or "HOST:PORT fail" per target
                                        (in argument order). Exit 0 (the lines are the result).

TCP needs both directions (a SYN and its SYN-ACK), so a one-way cut shows as a failed TCP check
both ways; the UDP datagrams show the direction that still passes.
"""
import socket
import sys
import threading
import time


def listen(host, port):
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((host, port))
    tcp.listen(64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, port))

    def echo(conn):
        with conn:
            conn.settimeout(30)
            try:
                while True:
                    data = conn.recv(4096)
                    if not data:
                        return
                    conn.sendall(data)
            except OSError:
                return

    def udp_loop():
        while True:
            data, addr = udp.recvfrom(4096)
            token = data.decode("ascii", "replace").strip()
            print(f"udp {token} {addr[0]}", flush=True)

    threading.Thread(target=udp_loop, daemon=True).start()
    print(f"listening {host}:{port}", flush=True)
    while True:
        conn, _ = tcp.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def check(host, port, timeout):
    deadline = time.monotonic() + timeout
    payload = b"netprobe %f\n" % time.time()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                s.settimeout(left)
                data = s.recv(4096)
                if not data:
                    return False
                got += data
            return got == payload and time.monotonic() <= deadline
    except OSError:
        return False


def send(host, port, token):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(3):
        try:
            s.sendto(token.encode("ascii") + b"\n", (host, port))
        except OSError:
            pass  # unreachable right away (link down): nothing was delivered, which is the result
        time.sleep(0.01)
    s.close()


def probe(timeout, token, targets):
    parsed = []
    for t in targets:
        host, _, port = t.rpartition(":")
        parsed.append((t, host, int(port)))
    results = {}

    def one(t, host, port):
        send(host, port, token)
        results[t] = check(host, port, timeout)

    threads = [threading.Thread(target=one, args=p) for p in parsed]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t, _, _ in parsed:
        print(f"{t} {'ok' if results[t] else 'fail'}")
    return 0


def main(argv):
    usage = ("usage: netprobe.py listen HOST PORT | check HOST PORT TIMEOUT_S | "
             "send HOST PORT TOKEN | probe TIMEOUT_S TOKEN HOST:PORT...")
    if len(argv) == 3 and argv[0] == "listen":
        listen(argv[1], int(argv[2]))
        return 0
    if len(argv) == 4 and argv[0] == "check":
        return 0 if check(argv[1], int(argv[2]), float(argv[3])) else 1
    if len(argv) == 4 and argv[0] == "send":
        send(argv[1], int(argv[2]), argv[3])
        return 0
    if len(argv) >= 4 and argv[0] == "probe":
        return probe(float(argv[1]), argv[2], argv[3:])
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
