"""A small parser for the Prometheus text exposition format (what
promgate_status serves) and helpers to read values from it."""

import re

import requests

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?\s*$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(v):
    return v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


class Metrics:
    def __init__(self, text):
        self.text = text
        self.samples = {}          # (name, frozenset(labels)) -> float
        self.types = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("# TYPE "):
                parts = line.split()
                if len(parts) >= 4:
                    self.types[parts[2]] = parts[3]
                continue
            if line.startswith("#"):
                continue
            m = _LINE.match(line)
            if not m:
                raise ValueError("unparsable metrics line: %r" % line)
            labels = {}
            if m.group(3):
                pos, s = 0, m.group(3)
                while pos < len(s):
                    lm = _LABEL.match(s, pos)
                    if not lm:
                        raise ValueError("bad labels in %r" % line)
                    labels[lm.group(1)] = _unescape(lm.group(2))
                    pos = lm.end()
            self.samples[(m.group(1), frozenset(labels.items()))] = float(m.group(4))

    def names(self):
        return {n for n, _ in self.samples}

    def get(self, name, default=None, **labels):
        """the value of the series with exactly these labels"""
        return self.samples.get((name, frozenset(labels.items())), default)

    def sum(self, name, **labels):
        """sum over all series of name whose labels include `labels`"""
        want = set(labels.items())
        return sum(v for (n, l), v in self.samples.items()
                   if n == name and want <= set(l))

    def series(self, name):
        return {l: v for (n, l), v in self.samples.items() if n == name}

    def by_label(self, name, label):
        out = {}
        for l, v in self.series(name).items():
            d = dict(l)
            out[d.get(label)] = out.get(d.get(label), 0) + v
        return out


def scrape(url):
    r = requests.get(url, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    return Metrics(r.text)
