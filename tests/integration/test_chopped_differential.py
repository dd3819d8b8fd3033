"""Valid traffic chopped at random places: a differential check of weir's
relay against PostgreSQL itself.

A seeded generator writes client programs over the raw wire: simple queries
(one and several statements, empty ones, errors, NOTICEs from DO blocks,
results far over 64 KiB, single rows larger than the relay's 64 KiB window,
Query messages that large too), the extended protocol (unnamed and named
statements, Describe, several Executes with row limits and portal
suspension, Flush round trips without Sync, errors in Parse, Bind and
Execute), COPY TO STDOUT and COPY FROM STDIN (big ones, one CopyData message
over 64 KiB, bad data, CopyFail) and transactions with errors inside. Each
client sends its program in chunks of 1 byte to several KiB with TCP_NODELAY
and tiny pauses, so weir's reads really end at those places, and reads the
answers in small chunks with pauses, some through a small SO_RCVBUF so
weir's back-pressure engages. The same programs run directly against
PostgreSQL; every message after login must be the same, in the same order
(BackendKeyData and the startup ParameterStatus set differ legitimately and
are not compared; errors and notices are compared by severity, SQLSTATE and
text, since weir writes some itself without PostgreSQL's file and line;
weir's own statement names must never show).

weir's servers are reached through ChopProxy, which cuts PostgreSQL's bytes
the same way (often inside or right after a message header), so the relay
from the server side sees arbitrary boundaries too. Some results and COPY
FROMs are several MiB, past the kernel's socket buffers, so weir's own
back-pressure (CLIENT_OUT_HIGH / SERVER_OUT_HIGH) engages.

Several clients share one or two servers, in transaction and session mode,
one parametrization on the ASan+UBSan build (.build/asan-weir) when built.
Each round's seed is printed on failure; WEIR_CHOP_SEED=<that seed> replays
that round alone (timing still varies), WEIR_CHOP_SECONDS sets how long each
parametrization generates new rounds (default 4). A client that makes no
progress for 8 s gets ss and SHOW SOCKETS recorded for the report.

The fixed-cut tests at the end are regressions the random ones found.
"""
import os
import random
import re
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import ROOT
from test_prepared import Bind, Close, Describe, Execute, Parse, Query as Q, _cstr

ASAN_DAEMON = os.path.join(ROOT, ".build", "asan-weir")
SECONDS = float(os.environ.get("WEIR_CHOP_SECONDS", 4))
TABLES = 3  # one table per concurrent client

SYNC = pgwire.message(b"S")
FLUSH = pgwire.message(b"H")
COPY_DONE = pgwire.message(b"c")
TERMINATE = pgwire.message(b"X")


def CopyData(data):
    return pgwire.message(b"d", data)


def CopyFail(why):
    return pgwire.message(b"f", _cstr(why))


# ---------------------------------------------------------------------------
# the generator

class Segment:
    """Bytes to send; then the writer may wait until the reader has seen
    `wait` (message type, cumulative count) before sending more."""

    def __init__(self, data, z, s=0):
        self.data = data
        self.z = z          # ReadyForQuery messages this segment's answer holds
        self.s = s          # PortalSuspended messages
        self.wait = None
        self.always_wait = False  # the next segment must not go before this answer


class Gen:
    """One client's program; statements the client keeps (named prepared
    statements) are remembered so later steps use them."""

    def __init__(self, rng, table):
        self.rng = rng
        self.table = table
        self.segs = []
        self.stmts = {}  # name -> (sql, number of params)
        self.next_stmt = 0

    def add(self, data, z, s=0):
        self.segs.append(Segment(data, z, s))

    # ---- simple protocol ----
    def simple_query(self):
        r = self.rng
        choice = r.randrange(14)
        t = self.table
        if choice == 0:
            sql = "SELECT %d AS n, 'x' AS s" % r.randrange(1000)
        elif choice == 1:
            n = r.choice([10, 300, 2500, 6000])
            sql = "SELECT g, md5(g::text) FROM generate_series(1, %d) g" % n
        elif choice == 2:
            sql = "SELECT repeat('x', %d)" % r.choice([10, 65531, 65536, 70000, 140000])
        elif choice == 3:
            sql = r.choice(["", " ", ";", "; ;"])  # EmptyQueryResponse
        elif choice == 4:
            sql = r.choice(["SELECT 1/0", "SELECT * FROM chop_no_such_table", "SELEKT 1"])
        elif choice == 5:
            sql = "DO $$BEGIN RAISE NOTICE 'notice %%', %d; RAISE NOTICE '%%', repeat('n', %d); END$$" % (
                r.randrange(100), r.choice([5, 3000, 70000]))
        elif choice == 6:
            sql = "SELECT 1; SELECT 'two', 2; SELECT g FROM generate_series(1, %d) g" % r.randrange(1, 500)
        elif choice == 7:
            sql = "SELECT 1; SELECT 1/0; SELECT 3"
        elif choice == 8:  # a Query message far over 64 KiB
            sql = "SELECT length('%s')" % ("q" * r.choice([60000, 65536, 100000, 200000]))
        elif choice == 9:
            sql = "SELECT count(*), coalesce(sum(a), 0), coalesce(sum(length(b)), 0) FROM %s" % t
        elif choice == 10:
            sql = "INSERT INTO %s SELECT g, repeat('i', g %% 50) FROM generate_series(1, %d) g" % (
                t, r.randrange(1, 200))
        elif choice == 11:
            sql = "SELECT pg_sleep(0.00%d), 'slept'" % r.randrange(1, 5)
        elif choice == 12:
            sql = "SELECT g, repeat('w', %d) FROM generate_series(1, %d) g" % (
                r.choice([100, 1000, 9000]), r.choice([50, 120]))
        else:
            sql = "COMMIT"  # outside a transaction: a WARNING
        self.add(Q(sql), 1)

    def transaction(self):
        r = self.rng
        t = self.table
        body = []
        for _ in range(r.randint(1, 4)):
            body.append(r.choice([
                "INSERT INTO %s VALUES (%d, 'tx')" % (t, r.randrange(1000)),
                "SELECT count(*) FROM %s" % t,
                "SELECT g FROM generate_series(1, %d) g" % r.randrange(1, 3000),
                "SELECT 1/0",
                "DO $$BEGIN RAISE NOTICE 'in txn'; END$$",
                "SAVEPOINT sp",
            ]))
        end = r.choice(["COMMIT", "ROLLBACK", "END"])
        if r.random() < 0.4:  # one Query message
            self.add(Q("BEGIN; " + "; ".join(body) + "; " + end), 1)
            if "SELECT 1/0" in body:  # the error skipped the end: still in a failed transaction
                self.add(Q("ROLLBACK"), 1)
            return
        self.add(Q(r.choice(["BEGIN", "START TRANSACTION", "BEGIN ISOLATION LEVEL REPEATABLE READ"])), 1)
        for sql in body:
            if r.random() < 0.3:
                self.extended_once(sql)
            else:
                self.add(Q(sql), 1)
        if r.random() < 0.3:
            self.copy_out()
        self.add(Q(end), 1)

    # ---- extended protocol ----
    def extended_once(self, sql, params=()):
        r = self.rng
        msgs = [Parse("", sql)]
        if r.random() < 0.5:
            msgs.append(Describe("S"))
        msgs.append(Bind("", params))
        if r.random() < 0.5:
            msgs.append(Describe("P"))
        msgs.append(Execute())
        msgs.append(SYNC)
        self.add(b"".join(msgs), 1)

    def extended_unnamed(self):
        r = self.rng
        kind = r.randrange(6)
        sql = "SELECT g, repeat('v', $1::int) FROM generate_series(1, $2::int) g"
        width = r.choice([1, 200, 3000, 70000])
        rows = r.choice([1, 7, 50, 333]) if width < 70000 else r.choice([1, 3])
        if kind == 0:  # syntax error in Parse: the rest of the batch is skipped
            self.add(Parse("", "SELEC 1") + Bind("", ()) + Execute() + SYNC, 1)
            return
        if kind == 1:  # wrong number of parameters in Bind
            self.add(Parse("", sql) + Bind("", (1,)) + Execute() + SYNC, 1)
            return
        if kind == 2 and r.random() < 0.3:  # a Bind over 64 KiB
            self.add(Parse("", "SELECT length($1::text)") + Bind("", ("u" * r.choice([65536, 90000]),)) + Execute() +
                     SYNC, 1)
            return
        if kind == 2:  # an error in Execute
            self.add(Parse("", "SELECT 1/$1::int") + Bind("", (0,)) + Execute() + SYNC, 1)
            return
        msgs = [Parse("", sql)]
        if r.random() < 0.5:
            msgs.append(Describe("S"))
        msgs.append(Bind("", (width, rows)))
        if r.random() < 0.5:
            msgs.append(Describe("P"))
        if kind == 3 and rows > 1:  # several Executes with a row limit
            k = r.randint(1, rows - 1)
            while rows % k == 0 and k > 1:
                k -= 1
            for _ in range(r.randint(1, 3)):
                msgs.append(Execute("", k))
        msgs.append(Execute())
        if r.random() < 0.3:
            msgs.append(FLUSH)
        msgs.append(SYNC)
        self.add(b"".join(msgs), 1)

    def named_prepare(self):
        r = self.rng
        name = "chop_s%d" % self.next_stmt
        self.next_stmt += 1
        sql, nparams = r.choice([
            ("SELECT $1::int + 1, 'named'", 1),
            ("SELECT g, repeat('n', $1::int) FROM generate_series(1, $2::int) g", 2),
            ("SELECT count(*) FROM %s WHERE a > $1::int" % self.table, 1),
            ("INSERT INTO %s VALUES ($1::int, 'prepared')" % self.table, 1),
            ("SELECT length($1::text), md5($1::text)", "text"),  # a Bind over 64 KiB
        ])
        msgs = [Parse(name, sql)]
        if r.random() < 0.5:
            msgs.append(Describe("S", name))
        self.stmts[name] = (sql, nparams)
        if r.random() < 0.5:  # use it in the same batch
            msgs += [Bind(name, self.params(nparams)), Execute()]
        msgs.append(SYNC)
        self.add(b"".join(msgs), 1)

    def params(self, n):
        r = self.rng
        if n == "text":
            return ("t" * r.choice([1, 1000, 65530, 70000, 150000]),)
        if n == 1:
            return (r.randrange(100),)
        return (r.choice([1, 50, 2000, 70000]), r.choice([1, 3]))

    def named_use(self):
        r = self.rng
        if not self.stmts:
            self.named_prepare()
            return
        name = r.choice(sorted(self.stmts))
        sql, nparams = self.stmts[name]
        kind = r.randrange(5)
        if kind == 0:  # Close, and maybe use it afterwards (an error)
            msgs = [Close("S", name)]
            del self.stmts[name]
            if r.random() < 0.3:
                msgs += [Bind(name, self.params(nparams)), Execute()]
            self.add(b"".join(msgs + [SYNC]), 1)
            return
        if kind == 1:
            self.add(Describe("S", name) + SYNC, 1)
            return
        msgs = []
        for _ in range(r.randint(1, 3)):
            msgs += [Bind(name, self.params(nparams))]
            if r.random() < 0.4:
                msgs.append(Describe("P"))
            msgs.append(Execute())
        self.add(b"".join(msgs + [SYNC]), 1)

    def portal_round_trips(self):
        """A named portal read a few rows at a time, with Flush and a wait for
        each PortalSuspended, inside a transaction (so the portal lives)."""
        r = self.rng
        rows = r.choice([10, 47, 400])
        k = r.choice([3, 7, 9])
        width = r.choice([5, 500, 20000])
        self.add(Q("BEGIN"), 1)
        msgs = [Parse("", "SELECT g, repeat('p', %d) FROM generate_series(1, %d) g" % (width, rows)),
                Bind("", (), portal="chop_p"), Execute("chop_p", k), FLUSH]
        done = k
        self.add(b"".join(msgs), 0, 1)
        self.segs[-1].always_wait = self.segs[-1].flush_wait = True
        for _ in range(r.randint(0, 2)):
            if done + k >= rows:
                break
            self.add(Execute("chop_p", k) + FLUSH, 0, 1)
            self.segs[-1].always_wait = self.segs[-1].flush_wait = True
            done += k
        self.add(Execute("chop_p", 0) + Close("P", "chop_p") + SYNC, 1)
        self.add(Q(r.choice(["COMMIT", "ROLLBACK"])), 1)

    def forget(self):
        """DEALLOCATE and DISCARD in their forms: the ones weir answers itself
        and the ones only the server's CommandComplete tag reveals (weir
        learns of those from the answer, so the client waits for it, as a
        client that sends DISCARD ALL does: before that answer weir cannot
        know its statements went away), and errors naming statements."""
        r = self.rng
        names = sorted(self.stmts)
        name = r.choice(names) if names else None
        kind = r.randrange(10)
        if kind == 0:
            self.add(Q("DEALLOCATE ALL"), 1)
            self.stmts.clear()
        elif kind == 1 and name:
            self.add(Q(r.choice(["DEALLOCATE %s", "deallocate prepare %s;"]) % name), 1)
            del self.stmts[name]
        elif kind == 2 and name:  # through the extended protocol
            self.add(Parse("", "DEALLOCATE %s" % name) + Bind("") + Execute() + SYNC, 1)
            del self.stmts[name]
        elif kind == 3:
            self.add(Parse("", "DEALLOCATE ALL") + Bind("") + Execute() + SYNC, 1)
            self.stmts.clear()
        elif kind in (4, 5):
            self.add(Q(r.choice(["/* c */ DEALLOCATE ALL", "DISCARD ALL", "SELECT 1; DEALLOCATE ALL",
                                 "SELECT repeat('x', 70000); DEALLOCATE ALL"])), 1)
            self.segs[-1].always_wait = True
            self.stmts.clear()
        elif kind == 6 and name:  # the name is taken: 42P05
            self.add(Parse(name, "SELECT 'dup'") + Bind(name, self.params(self.stmts[name][1])) + Execute() + SYNC, 1)
        elif kind == 7:
            self.add(Describe("S", "chop_nosuch") + SYNC, 1)
        elif kind == 8:
            self.add(Bind("chop_nosuch") + Execute() + SYNC, 1)
        else:
            self.add(Close("S", "chop_nosuch") + Close("S", "") + SYNC, 1)

    def huge(self):
        """Several MiB one way or the other: more than the kernel's socket
        buffers hold (some 3 MiB on loopback), so weir's own output buffer
        passes its high mark and back-pressure engages while the reader
        dawdles; or a big result with a big COPY FROM pipelined behind it."""
        r = self.rng
        kind = r.randrange(3)
        if kind == 0:
            self.add(Q("SELECT g, repeat('h', 2000) FROM generate_series(1, %d) g" % r.choice([2000, 3000])), 1)
        elif kind == 1:
            self.add(Q("COPY (SELECT g, repeat('k', 3000) FROM generate_series(1, 1500) g) TO STDOUT"), 1)
        else:
            rows = b"".join(b"%d\t%s\n" % (i, b"z" * 1000) for i in range(1000))  # 1 MB a message
            self.add(Q("SELECT repeat('r', 1000) FROM generate_series(1, 3000)") + Q("COPY %s FROM STDIN" % self.table) +
                     b"".join(CopyData(rows) for _ in range(4)) + COPY_DONE, 2)

    # ---- COPY ----
    def copy_out(self):
        r = self.rng
        if r.random() < 0.3:
            # In order: a heap's own order depends on when dead rows were pruned.
            sql = "COPY (SELECT * FROM %s ORDER BY a, b) TO STDOUT" % self.table
        else:
            sql = "COPY (SELECT g, repeat('c', %d) FROM generate_series(1, %d) g) TO STDOUT" % (
                r.choice([1, 100, 2000, 70000]), r.choice([1, 20, 300]))
        self.add(Q(sql), 1)

    def copy_in(self):
        r = self.rng
        msgs = [Q("COPY %s (a, b) FROM STDIN" % self.table)]
        for _ in range(r.randint(1, 6)):
            kind = r.randrange(4)
            if kind == 0:  # one row per message
                msgs.append(CopyData(b"%d\trow\n" % r.randrange(1000)))
            elif kind == 1:  # many rows in one message, over 64 KiB
                lines = b"".join(b"%d\t%s\n" % (i, b"m" * 40) for i in range(r.choice([10, 2000])))
                msgs.append(CopyData(lines))
            elif kind == 2:  # one row over 64 KiB
                msgs.append(CopyData(b"7\t" + b"B" * r.choice([70000, 140000]) + b"\n"))
            else:  # a row split over two messages
                msgs += [CopyData(b"%d\tspl" % r.randrange(1000)), CopyData(b"it\n")]
        end = r.random()
        if end < 0.15:
            msgs.append(CopyFail("client gave up"))
        elif end < 0.25:
            msgs += [CopyData(b"not-a-number\tbad\n"), COPY_DONE]
        else:
            msgs.append(COPY_DONE)
        self.add(b"".join(msgs), 1)


def generate(seed, table, steps):
    rng = random.Random(seed)
    g = Gen(rng, table)
    actions = [(g.simple_query, 6), (g.transaction, 2), (g.extended_unnamed, 4), (g.named_prepare, 2),
               (g.named_use, 4), (g.portal_round_trips, 1), (g.copy_out, 2), (g.copy_in, 2), (g.forget, 1), (g.huge, 1)]
    funcs = [f for f, w in actions for _ in range(w)]
    for _ in range(steps):
        rng.choice(funcs)()
    g.add(Q("SELECT count(*), coalesce(sum(a), 0), coalesce(sum(length(b)), 0) FROM %s" % table), 1)
    z = s = 0
    for seg in g.segs:
        z += seg.z
        s += seg.s
        seg.wait = ("s", s) if getattr(seg, "flush_wait", False) else ("Z", z)
    return g.segs


# ---------------------------------------------------------------------------
# weir's servers chopped too

class ChopProxy:
    """A TCP proxy in front of PostgreSQL that passes each direction on in
    pieces with tiny pauses, so weir's reads of its servers end at arbitrary
    places as well. From the server it follows the message framing, so that
    cuts often fall inside a message header or right after one (where a
    relay decides what a message is). cut_header: message types whose
    5-byte header always goes out alone, followed by a pause long enough
    for weir to read it (a fixed boundary for regression tests). Needs
    sslmode=disable (a lone 'N' answering SSLRequest is not a message)."""

    def __init__(self, target_port, seed, cut_header=b""):
        self.target_port = target_port
        self.seed = seed
        self.cut_header = cut_header
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.socks = []
        self.errors = []
        self.count = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        for s in [self.lsock] + self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self):
        while True:
            try:
                down, _ = self.lsock.accept()
                up = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            for s in (down, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks += [down, up]
            self.count += 1
            n = self.count
            threading.Thread(target=self._pump, args=(down, up, random.Random(self.seed * 31 + n), False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, random.Random(self.seed * 37 + n), True),
                             daemon=True).start()

    def _cuts(self, data, rng, frame):
        """Offsets in data to cut at; frame = [bytes of the current message
        still to come, header bytes seen so far] carried across reads."""
        starts, fixed = [], []
        pos = 0
        while pos < len(data):
            if frame[0] > 0:
                step = min(frame[0], len(data) - pos)
                frame[0] -= step
                pos += step
                continue
            if not frame[1]:
                starts.append(pos)
            take = min(5 - len(frame[1]), len(data) - pos)
            frame[1] += data[pos:pos + take]
            pos += take
            if len(frame[1]) == 5:
                if frame[1][:1] in [bytes([t]) for t in self.cut_header]:
                    fixed.append(pos)
                frame[0] = struct.unpack("!I", bytes(frame[1][1:5]))[0] - 4
                frame[1] = bytearray()
        cuts = set(fixed)
        if starts:
            for _ in range(rng.randint(0, 4)):
                cuts.add(rng.choice(starts) + rng.choice([0, 1, 4, 5, 6]))
        for _ in range(rng.randint(0, 2)):
            cuts.add(rng.randrange(len(data) + 1))
        return sorted(c for c in cuts if 0 < c < len(data)), set(fixed)

    def _pump(self, src, dst, rng, framed):
        frame = [0, bytearray()]
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if framed:
                    cuts, fixed = self._cuts(data, rng, frame)
                else:
                    cuts, fixed = sorted({rng.randrange(1, len(data) + 1) for _ in range(rng.randint(0, 3))}), set()
                prev = 0
                for c in cuts + [len(data)]:
                    if c > prev:
                        dst.sendall(data[prev:c])
                        if c in fixed:
                            time.sleep(0.03)
                        elif c < len(data) and rng.random() < 0.5:
                            time.sleep(rng.choice([0.0002, 0.001]))
                    prev = c
        except OSError:
            pass
        except Exception as e:  # a bug of the proxy's own must not pass for weir's
            self.errors.append(repr(e))
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# ---------------------------------------------------------------------------
# running a program

class Run:
    """One client connection running one program; messages after login are
    kept for the comparison."""

    def __init__(self, port, pg, segs, rng, chop):
        self.port = port
        self.pg = pg
        self.segs = segs
        self.rng = rng
        self.chop = chop          # False: plain sendall and big reads (the PostgreSQL run)
        self.msgs = []
        self.counts = {"Z": 0, "s": 0}
        self.cond = threading.Condition()
        self.error = None
        self.sent = 0
        self.received = 0
        self.total_z = sum(seg.z for seg in segs)

    def connect(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.chop and self.rng.random() < 0.35:
            # Not smaller: a 2-8 KiB window read with pauses makes TCP itself crawl
            # (PostgreSQL directly too), MiB results then take minutes.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rng.choice([16384, 32768, 65536]))
        sock.settimeout(30)
        sock.connect(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock

    def chunk_size(self, left):
        r = self.rng.random()
        if r < 0.35:
            n = self.rng.randint(1, 16)
        elif r < 0.7:
            n = self.rng.randint(17, 700)
        elif r < 0.95:
            n = self.rng.randint(701, 8192)
        else:
            n = self.rng.randint(8193, 70000)
        return min(n, left)

    def send(self, data):
        if not self.chop:
            self.sock.sendall(data)
            self.sent += len(data)
            return
        pos = 0
        while pos < len(data):
            n = self.chunk_size(len(data) - pos)
            self.sock.sendall(data[pos:pos + n])
            pos += n
            self.sent += n
            if self.rng.random() < 0.04:
                time.sleep(self.rng.choice([0.0002, 0.001, 0.003]))

    def wait_for(self, kind, count, deadline):
        with self.cond:
            while self.counts[kind] < count and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no answer: waiting for %s #%d, have %r" % (kind, count, self.counts))
                self.cond.wait(left)

    def writer(self, deadline):
        for seg in self.segs:
            self.send(seg.data)
            if seg.always_wait or (self.chop and self.rng.random() < 0.5):
                self.wait_for(seg.wait[0], seg.wait[1], deadline)
            if self.error is not None:
                return

    def reader(self, deadline):
        rrng = random.Random(self.rng.random())
        buf = bytearray()
        logged_in = False
        done_at = None
        try:
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError("answers not complete in time (%r of %d Z)" % (self.counts, self.total_z))
                if self.chop:
                    want = rrng.choice([1, 5, 13, 100, 700, 4096, 16384, 65536])
                    if rrng.random() < 0.02:
                        time.sleep(rrng.choice([0.001, 0.005, 0.02]))
                    elif rrng.random() < 0.002:
                        time.sleep(0.15)  # long enough for weir's output to pile up
                else:
                    want = 1 << 20
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = self.sock.recv(want)
                if not data:
                    return  # closed: after our Terminate, or early (the comparison shows it)
                self.received += len(data)
                buf += data
                pos = 0
                while len(buf) - pos >= 5:
                    (length,) = struct.unpack_from("!I", buf, pos + 1)
                    if len(buf) - pos < 1 + length:
                        break
                    t = bytes(buf[pos:pos + 1])
                    body = bytes(buf[pos + 5:pos + 1 + length])
                    pos += 1 + length
                    if not logged_in:
                        if t == b"E":
                            raise RuntimeError("login failed: %r" % pgwire.parse_error_fields(body))
                        logged_in = t == b"Z"
                        continue
                    self.msgs.append((t, body))
                    if t in (b"Z", b"s"):
                        with self.cond:
                            self.counts[t.decode()] += 1
                            self.cond.notify_all()
                        if t == b"Z" and self.counts["Z"] == self.total_z and done_at is None:
                            done_at = True
                            self.sock.sendall(TERMINATE)
                del buf[:pos]
        except Exception as e:
            with self.cond:
                self.error = e
                self.cond.notify_all()

    def run(self, timeout):
        deadline = time.monotonic() + timeout
        self.connect()
        try:
            self.sock.sendall(pgwire.startup_packet(self.pg.user, self.pg.db))
            rd = threading.Thread(target=self.reader, args=(deadline,))
            rd.start()
            try:
                self.writer(deadline)
            except Exception as e:
                if self.error is None:
                    self.error = e
            rd.join(max(0.1, deadline - time.monotonic() + 1))
            if rd.is_alive():
                self.error = self.error or TimeoutError("reader still running")
                self.sock.close()
                rd.join(5)
        finally:
            self.sock.close()


def normalized(msgs):
    """Errors and notices by severity, SQLSTATE and text: weir writes some
    itself (42P05 for a name already taken, as PgBouncer does) without
    PostgreSQL's source file, line and routine fields."""
    out = []
    for t, b in msgs:
        if t in (b"E", b"N"):
            f = pgwire.parse_error_fields(b)
            b = repr((f.get("S"), f.get("C"), f.get("M"))).encode()
        out.append((t, b))
    return out


def describe(m):
    t, b = m
    if t in (b"E", b"N") and b.startswith(b"("):
        return "%s %s" % (t.decode(), b.decode()[:150])
    if t in (b"E", b"N"):
        f = pgwire.parse_error_fields(b)
        return "%s %s %s" % (t.decode(), f.get("C"), f.get("M", "")[:80])
    if len(b) > 60:
        return "%s len %d %r..." % (t.decode(), len(b), b[:40])
    return "%s %r" % (t.decode(), b)


def first_difference(want, got):
    """None when equal; else a readable account of where they part."""
    n = min(len(want), len(got))
    for i in range(n):
        if want[i] != got[i]:
            break
    else:
        if len(want) == len(got):
            return None
        i = n
    lines = ["first difference at message %d of %d (PostgreSQL) / %d (weir)" % (i, len(want), len(got))]
    for j in range(max(0, i - 3), min(max(len(want), len(got)), i + 4)):
        a = describe(want[j]) if j < len(want) else "-"
        b = describe(got[j]) if j < len(got) else "-"
        lines.append("%s %4d  pg: %s\n        weir: %s" % ("=>" if j == i else "  ", j, a, b))
    return "\n".join(lines)


def run_round(port, pg, progs, seed, chop, timeout=30, snapshot=None):
    """Run the programs concurrently; snapshot(): what to record when no
    client has received anything for a while (-> the runs' .stuck)."""
    runs = [Run(port, pg, segs, random.Random(seed * 7919 + i), chop) for i, segs in enumerate(progs)]
    threads = [threading.Thread(target=r.run, args=(timeout,)) for r in runs]
    for t in threads:
        t.start()
    last = [(-1, time.monotonic())] * len(runs)
    stuck = ""
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        for i, (r, t) in enumerate(zip(runs, threads)):
            if r.received != last[i][0]:
                last[i] = (r.received, time.monotonic())
            elif snapshot and not stuck and t.is_alive() and time.monotonic() - last[i][1] > 8:
                stuck = "client %d made no progress for 8 s; then:\n%s" % (i, snapshot())
    for t in threads:
        t.join(timeout + 10)
    for r in runs:
        r.stuck = stuck
    return runs


def sockets(w, server_port):
    """weir's SHOW SOCKETS and the kernel's queues (ss), taken while clients
    are stuck: who holds what."""
    try:
        r = subprocess.run(["ss", "-tni"], capture_output=True, text=True, timeout=10)
        mine = [":%d " % p for p in (w.port, server_port)]
        lines = r.stdout.splitlines()
        kernel = "\n".join("  " + l.strip() for i, l in enumerate(lines) if any(m in l + " " for m in mine)
                           and "LISTEN" not in l)
    except Exception as e:
        kernel = "(ss failed: %s)" % e
    return "ss (Recv-Q Send-Q local peer):\n" + kernel + "\n" + show_sockets(w)


def show_sockets(w):
    try:
        with psycopg.connect(host="127.0.0.1", port=w.port, dbname="pgbouncer", user=w.pg.user, autocommit=True,
                             connect_timeout=5) as a:
            cur = a.execute("SHOW SOCKETS")
            cols = [d.name for d in cur.description]
            keep = ("type", "state", "port", "link", "recv_pos", "pkt_remain", "send_avail")
            return "SHOW SOCKETS:\n" + "\n".join(
                "  " + " ".join("%s=%s" % (k, v) for k, v in zip(cols, row) if k in keep) for row in cur.fetchall())
    except Exception as e:
        return "(SHOW SOCKETS failed: %s)" % e


def reset_tables(pg, n):
    with pg.connect() as c:
        for i in range(n):
            c.execute("CREATE TABLE IF NOT EXISTS chop_t%d (a int, b text)" % i)
            c.execute("TRUNCATE chop_t%d" % i)


def _lsan_works(daemon):
    r = subprocess.run([daemon, "-V"], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"))
    return "LeakSanitizer" not in r.stdout + r.stderr


PARAMS = [
    # mode, default_pool_size, clients, ASan build, servers through ChopProxy
    ("transaction", 1, 3, False, True),
    ("transaction", 2, 3, True, True),
    ("session", 2, 3, False, True),
    ("transaction", 2, 3, False, False),
]


def weir_daemon(asan, monkeypatch):
    """None (the plain build), or the ASan+UBSan build with its options set."""
    if not asan:
        return None
    if not os.access(ASAN_DAEMON, os.X_OK):
        pytest.skip("no ASan build (.build/asan-weir; make check builds it)")
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=%d" % _lsan_works(ASAN_DAEMON))
    monkeypatch.setenv("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return ASAN_DAEMON


def server_entry(pg, port):
    return "host=127.0.0.1 port=%d dbname=%s sslmode=disable" % (port, pg.db)


@pytest.fixture
def chop_proxy():
    made = []

    def make(port, seed, **kw):
        made.append(ChopProxy(port, seed, **kw))
        return made[-1]
    yield make
    for p in made:
        p.close()


@pytest.mark.timeout(int(SECONDS) + 120)
@pytest.mark.parametrize("mode,pool_size,nclients,asan,proxy", PARAMS,
                         ids=["%s-pool%d-%dclients%s%s" % (m, p, n, "-asan" if a else "", "-proxy" if x else "")
                              for m, p, n, a, x in PARAMS])
def test_chopped_traffic_same_as_postgres(pg, weir_factory, chop_proxy, monkeypatch, mode, pool_size, nclients,
                                          asan, proxy):
    daemon = weir_daemon(asan, monkeypatch)
    replay = os.environ.get("WEIR_CHOP_SEED")
    base = int(replay) // 1000 if replay else random.randrange(1 << 30)
    px = chop_proxy(pg.port, base) if proxy else None
    port = px.port if proxy else pg.port
    w = weir_factory(pool_mode=mode, daemon=daemon, databases={pg.db: server_entry(pg, port)},
                     settings={"default_pool_size": pool_size, "max_client_conn": 100,
                               "log_connections": 0, "log_disconnections": 0})
    replay = os.environ.get("WEIR_CHOP_SEED")
    print("chopped differential: seed %d, %s, pool %d, %d clients, daemon %s, servers %s" % (
        base, mode, pool_size, nclients, daemon or "plain", "chopped" if proxy else "direct"))
    stop = time.monotonic() + SECONDS
    rounds = programs = sent = received = 0
    while True:
        seed = int(replay) if replay else base * 1000 + rounds  # a round's own seed replays it alone
        rng = random.Random(seed)
        progs = [generate(seed * 10 + i, "chop_t%d" % i, rng.randint(8, 30)) for i in range(nclients)]
        reset_tables(pg, nclients)
        direct = run_round(pg.port, pg, progs, seed, chop=False)
        for i, r in enumerate(direct):
            assert r.error is None, "seed %d client %d, PostgreSQL directly: %r" % (seed, i, r.error)
        reset_tables(pg, nclients)
        via = run_round(w.port, pg, progs, seed, chop=True, snapshot=lambda: sockets(w, port))
        stuck = via[0].stuck
        assert px is None or not px.errors, "the proxy failed: %s" % px.errors
        for i, (a, b) in enumerate(zip(direct, via)):
            diff = first_difference(normalized(a.msgs), normalized(b.msgs))
            assert b.error is None and diff is None, (
                "round seed %d (replay: WEIR_CHOP_SEED=%d) client %d: %s\n%s\n%s" % (
                    seed, seed, i, b.error, diff or "", stuck))
            sent += b.sent
            received += b.received
            for t, body in b.msgs:
                assert not re.search(rb"weir_\d", body), "weir's statement name leaked: %r" % body[:200]
        assert w.alive(), "weir died (seed %d)" % seed
        rounds += 1
        programs += nclients
        if replay or time.monotonic() > stop:
            break
    print("chopped differential: %d rounds, %d programs, %d bytes sent, %d received through weir" % (
        rounds, programs, sent, received))


# ---------------------------------------------------------------------------
# fixed cuts found by the random ones

def exchange(port, pg, steps):
    """Each step's bytes at once, then its answers up to as many
    ReadyForQuery as it holds Syncs and Queries; -> the messages after
    login, in order."""
    w = pgwire.Wire("127.0.0.1", port)
    try:
        w.login_trust(pg.user, pg.db)
        out = []
        for data in steps:
            w.send(data)
            pos = ready = 0
            while pos < len(data):
                ready += data[pos:pos + 1] in (b"S", b"Q")
                pos += 1 + struct.unpack("!I", data[pos + 1:pos + 5])[0]
            while ready:
                m = w.read_message()
                out.append(m)
                ready -= m[0] == b"Z"
        return out
    finally:
        w.close()


@pytest.mark.parametrize("forget", ["/* first */ DEALLOCATE ALL", "/* first */ DISCARD ALL",
                                    "SELECT 1; DEALLOCATE ALL"])
def test_statements_forgotten_when_tag_header_read_alone(pg, weir_factory, chop_proxy, forget):
    """A CommandComplete whose 5-byte header ends one read from the server:
    its tag (DEALLOCATE ALL, DISCARD ALL) must still be looked at, or weir
    keeps believing the server holds the client's statements -- the next
    Bind goes to weir_N, which the server no longer has, and the client gets
    an error naming weir's statement instead of its own."""
    proxy = chop_proxy(pg.port, 1, cut_header=b"C")
    w = weir_factory(pool_mode="transaction", databases={pg.db: server_entry(pg, proxy.port)},
                     settings={"default_pool_size": 1})
    steps = [Parse("s1", "SELECT 41 + 1") + SYNC,
             Bind("s1") + Execute() + SYNC,
             Q(forget),
             Bind("s1") + Execute() + SYNC,
             Parse("s1", "SELECT 'again'") + Bind("s1") + Execute() + SYNC]
    want = exchange(pg.port, pg, steps)
    got = exchange(w.port, pg, steps)
    diff = first_difference(normalized(want), normalized(got))
    assert diff is None, diff


PIPELINED_AFTER_STATE_CHANGE = {
    # In a failed transaction, then ROLLBACK and a DEALLOCATE before its
    # answer: the DEALLOCATE runs after the ROLLBACK, in no transaction.
    "rollback-then-extended-deallocate": [
        Q("BEGIN"), Q("SELECT 1/0"),
        Q("ROLLBACK") + Parse("", "DEALLOCATE s1") + Bind("") + Execute() + SYNC + Bind("s1") + Execute() + SYNC],
    "rollback-then-deallocate": [
        Q("BEGIN"), Q("SELECT 1/0"),
        Q("ROLLBACK") + Q("DEALLOCATE s1") + Bind("s1") + Execute() + SYNC],
    "rollback-then-parse-same-name": [
        Q("BEGIN"), Q("SELECT 1/0"),
        Q("ROLLBACK") + Parse("s1", "SELECT 'other'") + SYNC + Bind("s1") + Execute() + SYNC],
    # A failing statement and, before its answer, a DEALLOCATE: PostgreSQL
    # refuses it (25P02), the statement stays.
    "error-then-deallocate": [
        Q("BEGIN; SELECT 1/0") + Q("DEALLOCATE s1") + Q("ROLLBACK") + Bind("s1") + Execute() + SYNC],
    "error-then-extended-deallocate-all": [
        Q("BEGIN; SELECT 1/0") + Parse("", "DEALLOCATE ALL") + Bind("") + Execute() + SYNC + Q("ROLLBACK") +
        Bind("s1") + Execute() + SYNC],
    "error-then-parse-same-name": [
        Q("BEGIN; SELECT 1/0") + Parse("s1", "SELECT 'other'") + SYNC + Q("ROLLBACK") + Bind("s1") + Execute() + SYNC],
}


@pytest.mark.parametrize("case", sorted(PIPELINED_AFTER_STATE_CHANGE))
def test_statement_decisions_wait_for_pipelined_answers(pg, weir_factory, case):
    """What weir does with a DEALLOCATE or a Parse of a name the client holds
    depends on the transaction state the server will be in when it gets
    there. Sent before the answers that set that state (a ROLLBACK, an
    error), weir must decide on that state, not the one before: the client
    sees what PostgreSQL shows. (Found by the chopped differential, where a
    pause between pieces made this happen at random.)"""
    w = weir_factory(pool_mode="transaction", settings={"default_pool_size": 1})
    steps = [Parse("s1", "SELECT 41 + 1") + SYNC] + PIPELINED_AFTER_STATE_CHANGE[case]
    want = exchange(pg.port, pg, steps)
    got = exchange(w.port, pg, steps)
    diff = first_difference(normalized(want), normalized(got))
    assert diff is None, diff


def test_back_pressure_released_when_weir_flushes_its_own_answers(pg, weir_factory):
    """A big result to a client that reads slowly: weir stops reading the
    server while the client's output is over its mark, and reads again when
    that output drains (the client's write callback). Meanwhile the client
    sends messages weir rewrites (Describe of a named statement), and weir
    flushes the client's output right there: when that flush empties it, the
    write callback never runs, and the server must still be read again --
    else the result stops halfway, for good. The client reads in 16 KiB
    pieces, sending a Describe before each, so the race is met in most runs;
    six runs make a miss unlikely."""
    w = weir_factory(pool_mode="transaction", settings={"default_pool_size": 1})
    rows = 8000  # 8 MB: past the kernel's socket buffers and weir's 256 KiB mark
    for attempt in range(6):
        c = pgwire.Wire("127.0.0.1", w.port)
        try:
            c.login_trust(pg.user, pg.db)
            c.send(Parse("s1", "SELECT 1") + SYNC)
            while c.read_message()[0] != b"Z":
                pass
            c.send(Q("SELECT repeat('x', 1000) FROM generate_series(1, %d)" % rows))
            time.sleep(0.5)  # weir's output piles up: it stops reading the server
            c.sock.settimeout(10)
            total = sent = 0
            while total < rows * 1011:  # the DataRows; the rest is read below
                if sent < 1000:
                    c.send(Describe("S", "s1"))
                    sent += 1
                try:
                    data = c.sock.recv(16384)
                except socket.timeout:
                    pytest.fail("attempt %d: result stopped after %d bytes" % (attempt, total))
                assert data, "weir closed the connection"
                total += len(data)
        finally:
            c.close()
