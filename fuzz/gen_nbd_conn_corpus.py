#!/usr/bin/env python3
"""Writes the seed corpus of nbd_conn_fuzz: valid NBD client sessions in the target's input layout
(session bytes first, then control bytes read from the back; see fuzz/nbd_conn_fuzz.cc).

    fuzz/gen_nbd_conn_corpus.py [out-dir]     (default: fuzz/corpus/nbd_conn)

Each seed is a handshake plus a few commands (write, read, flush, ... , disconnect), sent in one
piece or in small uneven pieces, on each server and engine. The files are deterministic: running
this again rewrites the same bytes.
"""
import os
import struct
import sys

IHAVEOPT = b"IHAVEOPT"
REQUEST_MAGIC = 0x25609513

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
OPT_STRUCTURED_REPLY, OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT = 8, 9, 10
INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 1, 2, 3

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE = 0, 1, 2, 3, 4, 5
CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 6, 7
FLAG_FUA, FLAG_NO_HOLE, FLAG_DF, FLAG_REQ_ONE = 1, 2, 4, 8

CLIENT_FIXED_NEWSTYLE, CLIENT_NO_ZEROES = 1, 2

# Control bytes (nbd_conn_fuzz.cc): piece size index in bits 0-4, bit 5 = leave output
# unread, bits 6-7 = ticks after the piece.
PIECE_BYTES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 20, 24, 28, 32, 48, 64,
               100, 128, 256, 512, 1024, 4096, 16384]
PIECE_REST, PIECE_FILLER = 30, 31
CFG_EPOLL, CFG_TIGHT, CFG_SMALL_BUFS, CFG_HALF_CLOSE, CFG_SHUTDOWN = 1, 2, 4, 8, 16
TICKS_1, TICKS_32 = 1 << 6, 3 << 6


def option(opt, data=b""):
    return IHAVEOPT + struct.pack(">II", opt, len(data)) + data


def name_str(name):
    return struct.pack(">I", len(name)) + name


def go(opt, name, infos=()):
    return option(opt, name_str(name) + struct.pack(">H", len(infos)) +
                  b"".join(struct.pack(">H", i) for i in infos))


def meta(opt, name, queries):
    body = name_str(name) + struct.pack(">I", len(queries))
    body += b"".join(name_str(q) for q in queries)
    return option(opt, body)


def request(cmd, offset=0, length=0, flags=0, cookie=1, payload=b""):
    return struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie, offset, length) + payload


def exact_pieces(n):
    """Control bytes that send exactly the next n bytes (largest pieces first), no ticks."""
    ctl = []
    for i in reversed(range(len(PIECE_BYTES))):
        while n >= PIECE_BYTES[i]:
            ctl.append(i)
            n -= PIECE_BYTES[i]
    return ctl


def pattern(n, seed):
    return bytes((i * 31 + seed) & 0xFF for i in range(n))


def handshake(export=b"vol0", structured=True, block_status=True, use_export_name=False):
    out = struct.pack(">I", CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES)
    if structured:
        out += option(OPT_STRUCTURED_REPLY)
        if block_status:
            out += meta(OPT_SET_META_CONTEXT, export, [b"base:allocation"])
    if use_export_name:
        return out + option(OPT_EXPORT_NAME, export)
    return out + go(OPT_GO, export, (INFO_BLOCK_SIZE,))


def basic_io(cookie=1, off=0, n=512):
    return (request(CMD_WRITE, off, n, cookie=cookie, payload=pattern(n, cookie)) +
            request(CMD_READ, off, n, cookie=cookie + 1) +
            request(CMD_FLUSH, cookie=cookie + 2))


def sessions():
    disc = request(CMD_DISC, cookie=99)
    s = {}
    s["basic"] = handshake() + basic_io() + disc
    s["simple_replies"] = handshake(structured=False) + basic_io() + disc
    s["export_name"] = handshake(structured=False, use_export_name=True) + basic_io() + disc
    s["all_commands"] = (handshake() + basic_io() +
                         request(CMD_WRITE, 70000, 512, FLAG_FUA, 10, pattern(512, 3)) +
                         request(CMD_READ, 65536, 8192, FLAG_DF, 11) +
                         request(CMD_BLOCK_STATUS, 0, 1 << 20, 0, 12) +
                         request(CMD_BLOCK_STATUS, 0, 1 << 20, FLAG_REQ_ONE, 13) +
                         request(CMD_TRIM, 0, 65536, 0, 14) +
                         request(CMD_WRITE_ZEROES, 131072, 65536, FLAG_NO_HOLE, 15) +
                         request(CMD_WRITE_ZEROES, 196608, 4096, 0, 16) +
                         request(CMD_CACHE, 0, 4096, 0, 17) +
                         request(CMD_READ, 0, 262144, 0, 18) + disc)
    s["negotiate_then_go"] = (
        struct.pack(">I", CLIENT_FIXED_NEWSTYLE) + option(OPT_LIST) +
        go(OPT_INFO, b"ro", (INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE)) +
        meta(OPT_LIST_META_CONTEXT, b"vol0", [b"base:"]) + option(OPT_STRUCTURED_REPLY) +
        meta(OPT_SET_META_CONTEXT, b"sync", [b"base:allocation"]) + go(OPT_GO, b"sync") +
        basic_io(20, 1 << 20, 1024) + disc)
    s["abort"] = struct.pack(">I", CLIENT_FIXED_NEWSTYLE) + option(OPT_LIST) + option(OPT_ABORT)
    # More negotiation replies than a small socket buffer holds, unread until the ABORT: the
    # server must send them all, the ACK last, before it closes.
    s["abort_unread"] = (struct.pack(">I", CLIENT_FIXED_NEWSTYLE) + option(OPT_LIST) * 80 +
                         option(OPT_ABORT))
    s["read_only_errors"] = (handshake(b"ro") +
                             request(CMD_WRITE, 0, 512, 0, 30, pattern(512, 30)) +
                             request(CMD_READ, 0, 4096, 0, 31) +
                             request(CMD_READ, 1 << 20, 4096, 0, 32) + disc)
    # The pool (2 MiB) has about 25 chunks of 64 KiB: writes to 32 chunks of "big" run it out.
    s["pool_full"] = handshake(b"big") + b"".join(
        request(CMD_WRITE, i << 16, 1, FLAG_FUA if i % 2 else 0, 40 + i, b"x")
        for i in range(32)) + request(CMD_WRITE_ZEROES, 0, 32 << 20, FLAG_NO_HOLE, 39) + disc
    s["bad_magic"] = handshake() + basic_io() + b"\x00" * 28
    s["truncated_payload"] = handshake() + request(CMD_WRITE, 0, 8192, 0, 50) + pattern(100, 50)
    s["pipelined"] = handshake() + b"".join(
        request(CMD_WRITE, i * 65536, 256, 0, 60 + i, pattern(256, i)) for i in range(20)) + b"".join(
        request(CMD_READ, i * 65536, 4096, 0, 80 + i) for i in range(20)) + disc
    return s


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus",
                                                                  "nbd_conn")
    os.makedirs(out, exist_ok=True)
    for name, stream in sessions().items():
        # One piece, all at once, on the roomy server with io_uring; then small uneven pieces on
        # the tight server with epoll and small socket buffers, ending with a half-close.
        # And for the longer sessions: the server shut down (drained) after the fourth piece.
        variants = {
            "whole": ([PIECE_REST | TICKS_32], [0]),
            "pieces": ([3, 11, 0, 17, 7 | (1 << 5), 22, 5 | TICKS_32, PIECE_REST | TICKS_32],
                       [CFG_EPOLL | CFG_TIGHT | CFG_SMALL_BUFS | CFG_HALF_CLOSE]),
        }
        if len(stream) > 1000:
            variants["shutdown"] = ([25 | TICKS_1] * 4 + [PIECE_REST | TICKS_32],
                                    [CFG_SHUTDOWN | CFG_HALF_CLOSE, 4])
        for vname, (controls, head) in variants.items():
            trailer = bytes(reversed(head + controls))
            with open(os.path.join(out, f"{name}_{vname}"), "wb") as f:
                f.write(stream + trailer)
    # A 256 KiB write whose payload is filler (zeros the target sends itself), received straight
    # into the request buffer; then a read of it back. The handshake and the header go as pieces
    # of exact sizes so that the filler starts where the payload does.
    head = handshake() + request(CMD_WRITE, 0, 256 << 10, 0, 70)
    tail = request(CMD_READ, 0, 256 << 10, 0, 71) + request(CMD_DISC, cookie=72)
    ctl = exact_pieces(len(head)) + [PIECE_FILLER, 63, PIECE_REST | TICKS_32]
    for cfg in (0, CFG_EPOLL | CFG_TIGHT | CFG_HALF_CLOSE):
        with open(os.path.join(out, f"big_write_filler_{cfg}"), "wb") as f:
            f.write(head + tail + bytes(reversed([cfg] + ctl)))
    # The client closes (having read everything) right after sending a FUA write to the sync
    # volume and a read, before the server saw them: the read's reply fails on the closed
    # socket while the write waits for its commit.
    head = handshake(b"sync")
    ctl = exact_pieces(len(head))
    ctl[-1] |= TICKS_32
    with open(os.path.join(out, "close_with_io_in_flight"), "wb") as f:
        f.write(head + request(CMD_WRITE, 0, 512, FLAG_FUA, 1, pattern(512, 1)) +
                request(CMD_READ, 65536, 512, 0, 2) + bytes(reversed([0] + ctl + [PIECE_REST])))

if __name__ == "__main__":
    main()
