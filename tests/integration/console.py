"""Helpers for tests of weir's admin console and metrics endpoint: a console
connection that returns SHOW results as dicts, a plain HTTP GET, and a parser
for the Prometheus text format strict enough to catch malformed output."""
import re
import threading
import urllib.error
import urllib.request

import psycopg


class Console:
    """An admin-console connection (database "pgbouncer") to one weir."""

    def __init__(self, w, user=None, dbname="pgbouncer", host="127.0.0.1", password=None):
        user = user or w.pg.user
        if password is None:
            password = w.userlist.get(user, "")
        self.conn = psycopg.connect(host=host, port=w.port, dbname=dbname, user=user, password=password,
                                    autocommit=True, connect_timeout=10, prepare_threshold=None)
        self.notices = []  # (severity, message, detail): a Diagnostic dies with its callback
        self.conn.add_notice_handler(
            lambda d: self.notices.append((d.severity, d.message_primary, d.message_detail)))
        w.conns.append(self.conn)

    def execute(self, sql):
        return self.conn.execute(sql)

    def show(self, what):
        """SHOW what -> list of {column: value}."""
        cur = self.conn.execute("SHOW " + what)
        names = [d.name for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def columns(self, what):
        """SHOW what -> [(column name, type oid)]."""
        cur = self.conn.execute("SHOW " + what)
        cur.fetchall()
        return [(d.name, d.type_code) for d in cur.description]

    def close(self):
        self.conn.close()


def find(rows, **match):
    """The rows whose columns equal every keyword given."""
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def pool_row(console, db, user):
    rows = find(console.show("POOLS"), database=db, user=user)
    return rows[0] if rows else None


def stats_row(console, db, what="STATS"):
    rows = find(console.show(what), database=db)
    return rows[0] if rows else None


class Background:
    """Run fn in a thread; .done tells whether it returned, .result / .error what it gave."""

    def __init__(self, fn):
        self.result = self.error = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except Exception as e:  # handed to the test
            self.error = e

    def wait(self, timeout):
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def done(self):
        return not self._thread.is_alive()


def http_get(url, timeout=10):
    """-> (status, headers dict with lower-case names, body text)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(r"^(%s)(?:\{(%s(?:,%s)*)?\})? (\S+)$" % (_NAME, _LABEL, _LABEL))
_FLOAT = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?Inf$|^NaN$")


class Family:
    def __init__(self, name):
        self.name, self.type, self.help = name, None, None
        self.samples = []  # (sample name, {label: value}, float)


def parse_prometheus(text):
    """Parse text exposition format 0.0.4 -> {family name: Family}. Raises
    AssertionError on anything a Prometheus server would reject or that breaks
    the conventions (HELP and TYPE before samples, one family in one block)."""
    families, current, finished, seen = {}, None, set(), set()
    assert text.endswith("\n"), "exposition must end with a newline"
    for n, line in enumerate(text.split("\n")[:-1], 1):
        assert line.strip() == line and line, "line %d: stray whitespace or empty line: %r" % (n, line)
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, name, rest = line[2:6], line.split(" ")[2], line.split(" ", 3)[3]
            assert re.match("^%s$" % _NAME, name), "line %d: bad metric name %r" % (n, name)
            if current is None or current.name != name:
                assert name not in families, "line %d: family %s appears twice" % (n, name)
                if current is not None:
                    finished.add(current.name)
                current = families[name] = Family(name)
            if kind == "TYPE":
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), line
                assert current.type is None and not current.samples, "line %d: TYPE after samples" % n
                current.type = rest
            else:
                current.help = rest
            continue
        assert not line.startswith("#"), "line %d: unknown comment %r" % (n, line)
        m = _SAMPLE.match(line)
        assert m, "line %d: not a sample: %r" % (n, line)
        sname, labels, value = m.group(1), m.group(2) or "", m.group(3)
        assert _FLOAT.match(value), "line %d: bad value %r" % (n, value)
        assert current is not None, "line %d: sample before any TYPE" % n
        base = current.name
        allowed = {base} if current.type != "histogram" else {base + "_bucket", base + "_sum", base + "_count"}
        assert sname in allowed, "line %d: %s outside its family block %s" % (n, sname, base)
        lab = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels))
        key = (sname, tuple(sorted(lab.items())))
        assert key not in seen, "line %d: duplicate series %r" % (n, line)
        seen.add(key)
        current.samples.append((sname, lab, float(value)))
    for f in families.values():
        assert f.type and f.help, "family %s lacks TYPE or HELP" % f.name
    return families


def sample(families, name, **labels):
    """The value of the one sample called name with these labels (None if absent)."""
    fam = families.get(name)
    for fam_name, f in families.items():
        if name.startswith(fam_name) and f.type == "histogram":
            fam = f
    if fam is None:
        return None
    for sname, lab, v in fam.samples:
        if sname == name and all(lab.get(k) == str(val) for k, val in labels.items()):
            return v
    return None
