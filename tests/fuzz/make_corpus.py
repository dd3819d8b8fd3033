#!/usr/bin/python3
"""Writes the committed seed corpora of the daemon fuzz targets into
tests/fuzz/corpus/<target>/ (run it again after changing an input format;
run.sh copies the seeds into each target's working corpus). Each seed is a
small, valid input in the target's format, described in the target's
opening comment."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def msg(t, body=b""):
    return t + struct.pack("!I", len(body) + 4) + body


def q(sql):
    return msg(b"Q", sql.encode() + b"\0")


def parse(name, sql, types=()):
    return msg(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!H", len(types))
               + b"".join(struct.pack("!I", t) for t in types))


def bind(portal, stmt, params=()):
    body = portal.encode() + b"\0" + stmt.encode() + b"\0" + struct.pack("!HH", 0, len(params))
    for p in params:
        body += struct.pack("!i", len(p)) + p
    return msg(b"B", body + struct.pack("!H", 0))


def describe(kind, name):
    return msg(b"D", kind + name.encode() + b"\0")


def close(kind, name):
    return msg(b"C", kind + name.encode() + b"\0")


def execute(portal=""):
    return msg(b"E", portal.encode() + b"\0" + struct.pack("!I", 0))


SYNC = msg(b"S")
TERM = msg(b"X")


def rfq(st):
    return msg(b"Z", st)


def cc(tag):
    return msg(b"C", tag.encode() + b"\0")


def err(code="42P01", text="relation does not exist"):
    return msg(b"E", b"SERROR\0VERROR\0C" + code.encode() + b"\0M" + text.encode() + b"\0\0")


def pstatus(name, value):
    return msg(b"S", name.encode() + b"\0" + value.encode() + b"\0")


ROWDESC = msg(b"T", struct.pack("!H", 1) + b"x\0" + struct.pack("!IhIhih", 0, 0, 23, 4, -1, 0))


def datarow(v):
    return msg(b"D", struct.pack("!Hi", 1, len(v)) + v)


PARSE1, BIND2, CLOSE3, NODATA = msg(b"1"), msg(b"2"), msg(b"3"), msg(b"n")


def chunks(direction, data):
    """fuzz_client_stream framing: header byte (top bit = server), <=127 bytes."""
    out = b""
    for i in range(0, len(data), 127):
        part = data[i:i + 127]
        out += bytes([(128 if direction == "s" else 0) | len(part)]) + part
    return out


def conv(flags, *steps):
    return bytes([flags]) + b"".join(chunks(d, data) for d, data in steps)


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)


SELECT_ANSWER = ROWDESC + datarow(b"1") + cc("SELECT 1") + rfq(b"I")
EXT_ANSWER = PARSE1 + BIND2 + ROWDESC + datarow(b"1") + cc("SELECT 1") + rfq(b"I")

write("fuzz_client_stream", {
    "simple": conv(0, ("c", q("SELECT 1")), ("s", SELECT_ANSWER), ("c", TERM)),
    "txn": conv(0, ("c", q("BEGIN")), ("s", cc("BEGIN") + rfq(b"T")), ("c", q("SELECT 1")),
                ("s", SELECT_ANSWER[:-6] + rfq(b"T")), ("c", q("COMMIT")), ("s", cc("COMMIT") + rfq(b"I"))),
    "statement-mode-begin": conv(1, ("c", q("BEGIN")), ("s", cc("BEGIN") + rfq(b"T"))),
    "session": conv(2 | 64, ("c", q("SELECT 1")), ("s", cc("SET") + rfq(b"I") + SELECT_ANSWER)),
    "named": conv(0, ("c", parse("s1", "SELECT $1", [23]) + bind("", "s1", [b"42"]) + describe(b"P", "")
                      + execute() + SYNC),
                  ("s", PARSE1 + EXT_ANSWER), ("c", bind("", "s1", [b"7"]) + execute() + SYNC),
                  ("s", BIND2 + datarow(b"7") + cc("SELECT 1") + rfq(b"I"))),
    "named-evict": conv(8, ("c", parse("a", "SELECT 1") + parse("b", "SELECT 2") + parse("c", "SELECT 3") + SYNC),
                        ("s", PARSE1 * 3 + CLOSE3 + PARSE1 + rfq(b"I"))),
    "unnamed": conv(0, ("c", parse("", "SELECT 1") + bind("", "") + execute() + SYNC), ("s", EXT_ANSWER)),
    "parse-error": conv(0, ("c", parse("bad", "SELEC") + bind("", "bad") + execute() + SYNC),
                        ("s", err("42601", "syntax error") + rfq(b"I"))),
    "dup-name": conv(0, ("c", parse("d", "SELECT 1") + SYNC), ("s", PARSE1 + rfq(b"I")),
                     ("c", parse("d", "SELECT 2") + SYNC), ("s", err("42883", "no function") + rfq(b"I"))),
    "deallocate": conv(0, ("c", parse("d", "SELECT 1") + SYNC), ("s", PARSE1 + rfq(b"I")),
                       ("c", q("DEALLOCATE d")), ("c", q("DEALLOCATE ALL")),
                       ("c", parse("", "DEALLOCATE ALL") + bind("", "") + execute() + SYNC),
                       ("s", rfq(b"I"))),
    "discard": conv(0, ("c", q("SELECT 1; DISCARD ALL")),
                    ("s", SELECT_ANSWER[:-6] + cc("DISCARD ALL") + rfq(b"I"))),
    "close": conv(0, ("c", parse("x", "SELECT 1") + close(b"S", "x") + describe(b"S", "x") + SYNC),
                  ("s", PARSE1 + err("26000", "no stmt") + rfq(b"I"))),
    "copy": conv(0, ("c", q("COPY t FROM STDIN")), ("s", msg(b"G", b"\0\0\0")),
                 ("c", msg(b"d", b"1\n2\n") + msg(b"c")), ("s", cc("COPY 2") + rfq(b"I"))),
    "param-status": conv(64 | 128, ("c", q("SET datestyle = 'SQL'")),
                         ("s", rfq(b"I") + cc("SET") + rfq(b"I") + pstatus("DateStyle", "SQL, MDY") + cc("SET")
                          + rfq(b"I"))),
    "split-message": conv(0, ("c", q("SELECT 'x'")[:3]), ("c", q("SELECT 'x'")[3:]), ("s", SELECT_ANSWER[:7]),
                          ("s", SELECT_ANSWER[7:])),
    "max-packet": conv(32, ("c", q("SELECT '" + "x" * 400 + "'"))),
    "reset-always": conv(16 | 2, ("c", q("SELECT 1")), ("s", SELECT_ANSWER), ("c", TERM),
                         ("s", cc("DISCARD ALL") + rfq(b"I"))),
})

write("fuzz_server_stream", {
    "simple": b"\0\0" + SELECT_ANSWER,
    "notice-and-status": b"\0\0" + msg(b"N", b"SNOTICE\0Mhi\0\0") + pstatus("TimeZone", "UTC") + SELECT_ANSWER,
    "error": b"\0\0" + err() + rfq(b"I"),
    "txn": b"\0\1" + cc("BEGIN") + rfq(b"T") + SELECT_ANSWER[:-6] + rfq(b"T") + cc("COMMIT") + rfq(b"I"),
    "txn-statement-mode": b"\1\1" + cc("BEGIN") + rfq(b"T"),
    "txn-failed": b"\0\1" + cc("BEGIN") + rfq(b"T") + err() + rfq(b"E") + cc("ROLLBACK") + rfq(b"I"),
    "named": b"\0\2" + PARSE1 + EXT_ANSWER,
    "named-error": b"\0\2" + err("42601", "syntax") + rfq(b"I"),
    "unnamed": b"\0\3" + EXT_ANSWER,
    "pipeline": b"\x08\4" + PARSE1 + PARSE1 + BIND2 + datarow(b"2") + cc("SELECT 1") + ROWDESC + rfq(b"I")
                + PARSE1 + rfq(b"I"),
    "dealloc": b"\0\5" + PARSE1 + rfq(b"I") + cc("DEALLOCATE") + rfq(b"I") + cc("DISCARD ALL") + SELECT_ANSWER,
    "copy": b"\0\6" + msg(b"G", b"\0\0\0") + cc("COPY 1") + rfq(b"I"),
    "session-set": b"\x42\0" + cc("SET") + rfq(b"I") + SELECT_ANSWER,
    "connect-query": b"\x80\0" + SELECT_ANSWER + SELECT_ANSWER,
})

SCRAM_CF = b"n,,n=fuzz,r=fyko+d2lbbFgONRv9qkxdawL"
SCRAM_CFIN = b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
SCRAM_SF = b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
SCRAM_SFIN = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def two(mode, a, b):
    return bytes([mode]) + struct.pack("!H", len(a)) + a + b


write("fuzz_scram", {
    "server": two(0, SCRAM_CF, SCRAM_CFIN),
    "server-cb": two(0, b"p=tls-server-end-point,,n=,r=abc", b"c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=abc,p=x"),
    "server-ext": two(0, b"y,,n=,r=abc,x=ext", b"c=eSws,r=abcdef,x=1,p=AAAA"),
    "client": two(1, SCRAM_SF, SCRAM_SFIN),
    "client-error": two(1, SCRAM_SF, b"e=invalid-proof"),
    "both-first": two(2 | 128 | 8, b"x,r=junk", b""),
    "both-final": two(2 + 3 * 10, b"", b"p=AAAA"),
    "both-clean": two(2, b"", b""),
})

write("fuzz_config", {
    "basic": b"""[databases]
shop = host=127.0.0.1 port=5432 dbname=shop pool_size=10 pool_mode=session
* = host=localhost auth_user=bob
[users]
alice = pool_mode=statement max_user_connections=3
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6432
auth_type = md5
pool_mode = transaction
server_reset_query = DISCARD ALL
query_timeout = 1.5
ignore_startup_parameters = extra_float_digits, options
""",
    "include-missing": b"[pgbouncer]\n%include /nonexistent/weir-fuzz.ini\nlisten_port = 1\n",
    "include-self": b"[weir]\n%include weir.ini\n",
    "include-empty": b"%include\n[databases]\n",
    "quoted": b'[databases]\n"we ird" = dbname=\'a b\' password=\'x\\\'y\'\n[pgbouncer]\nadmin_users = "a", b\n',
    "bad": b"[nosuch]\nx=1\n[pgbouncer]\nlisten_port = abc\nunknown_key = 1\nmax_client_conn = -5\n[databases\n",
})
