"""Hostile and broken clients: connections that never finish logging in,
too many clients, running out of file descriptors, clients that never read
their results, oversized packets, and protocol sequences found by the fuzzers.
Each must cost only that client its connection, never weir its service."""
import os
import resource
import socket
import struct
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import wait_for


def _msg(t, body=b""):
    return pgwire.message(t, body)


def _until_ready(w):
    msgs = []
    while True:
        t, b = w.read_message()
        msgs.append((t, b))
        if t == b"Z":
            return msgs


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_deallocate_all_before_any_named_statement(weir):
    """fuzz_client_stream found it: an unnamed DEALLOCATE ALL executed by a
    client that never prepared a named statement crashed weir (NULL list)."""
    w = pgwire.Wire("127.0.0.1", weir.port)
    w.login_trust(weir.pg.user, weir.pg.db)
    w.send(_msg(b"P", b"\0DEALLOCATE ALL\0\0\0") + _msg(b"B", b"\0\0" + struct.pack("!HHH", 0, 0, 0))
           + _msg(b"E", b"\0" + struct.pack("!I", 0)) + _msg(b"S"))
    msgs = _until_ready(w)
    assert [t for t, _ in msgs] == [b"1", b"2", b"C", b"Z"], msgs
    assert msgs[2][1] == b"DEALLOCATE ALL\0"
    assert w.simple_query("SELECT 1")[-1] == (b"Z", b"I")
    w.close()
    assert weir.alive()
