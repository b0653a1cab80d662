"""The two server sets the integration suite runs against.

    current   Prometheus 3.5.x, promtool, VictoriaMetrics and vmagent 1.145.x
              from Debian unstable, unpacked by t/servers.sh (make servers)
              into build/servers/root (PROMGATE_SERVERS_ROOT overrides)
    debian12  the system's /usr/bin/prometheus 2.42, /usr/bin/victoria-metrics
              and /usr/bin/vmagent 1.79 (Debian 12 packages)

A ServerSet knows its binaries and their versions; tests branch on the
versions (ss.prom_major >= 3, ss.vm_at_least(1, 100)), never on the set's
name, so a trixie fallback (Prometheus 2.53, VictoriaMetrics 1.112) would be
judged by what it is.
"""

import os
import re
import subprocess

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CURRENT_ROOT = os.environ.get("PROMGATE_SERVERS_ROOT") or os.path.join(
    REPO_ROOT, "build", "servers", "root")

SET_NAMES = ("current", "debian12")

# Prometheus feature flags both lines take: 2.42 needs them for exemplars and
# native histograms; 3.5 still has both as feature flags (it logs
# "Experimental native histogram support enabled").
PROM_FEATURES = "exemplar-storage,native-histograms"


def _vtuple(s):
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", s or "")
    if not m:
        return None
    return tuple(int(x or 0) for x in m.groups())


def _run(argv):
    try:
        r = subprocess.run(argv, capture_output=True, timeout=30)
        return (r.stdout + r.stderr).decode("utf-8", "replace")
    except (OSError, subprocess.TimeoutExpired):
        return ""


def prometheus_version(binary):
    """"3.5.3" from "prometheus, version 3.5.3+ds1 (branch: ..." or None"""
    m = re.search(r"^prometheus, version (\S+)", _run([binary, "--version"]), re.M)
    return m.group(1) if m else None


def _deb_versions_file(root):
    """build/servers/versions: "package version suite" lines"""
    out = {}
    path = os.path.join(os.path.dirname(root), "versions")
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2:
                    out[parts[0]] = " ".join(parts[1:])
    except OSError:
        pass
    return out


def _dpkg_version(pkg):
    v = _run(["dpkg-query", "-W", "-f=${Version}", pkg]).strip()
    return v if v and "no packages found" not in v else None


def _vm_binary_version(binary):
    # upstream builds print e.g. "victoria-metrics-20240301-...-tags-v1.99.0-0-g...";
    # Debian's print nothing
    m = re.search(r"v(\d+\.\d+\.\d+)", _run([binary, "-version"]))
    return m.group(1) if m else None


class ServerSet:
    def __init__(self, name, bindir, deb_versions):
        self.name = name
        self.bindir = bindir
        self.prometheus = os.path.join(bindir, "prometheus")
        self.promtool = os.path.join(bindir, "promtool")
        self.victoria_metrics = os.path.join(bindir, "victoria-metrics")
        self.vmagent = os.path.join(bindir, "vmagent")
        self.missing = [p for p in (self.prometheus, self.promtool,
                                    self.victoria_metrics, self.vmagent)
                        if not os.access(p, os.X_OK)]
        self.prom_version_str = (prometheus_version(self.prometheus)
                                 if os.access(self.prometheus, os.X_OK) else None)
        vmv = deb_versions.get("victoria-metrics")
        if not vmv and os.access(self.victoria_metrics, os.X_OK):
            vmv = _vm_binary_version(self.victoria_metrics)
        self.vm_version_str = vmv
        self.prom_version = _vtuple(self.prom_version_str) or (0, 0, 0)
        self.vm_version = _vtuple(self.vm_version_str) or (0, 0, 0)
        self.prom_features = PROM_FEATURES

    @property
    def available(self):
        return not self.missing and self.prom_version_str is not None

    @property
    def prom_major(self):
        return self.prom_version[0]

    def prom_at_least(self, *v):
        return self.prom_version >= tuple(v)

    def vm_at_least(self, *v):
        return self.vm_version >= tuple(v)

    # ---- what the versions do (measured; see ENVIRONMENT.md and
    #      t/integration/validity_table.md)

    @property
    def prom_utf8_names(self):
        """Prometheus 3 takes UTF-8 metric and label names"""
        return self.prom_major >= 3

    @property
    def vm_native_histograms(self):
        """VictoriaMetrics keeps remote-written native histograms?  1.79
        drops them silently (answering 204); 1.145 converts each into its
        own histogram form: <name>_bucket{vmrange="lo...hi"} per populated
        bucket (the zero bucket included), <name>_sum and <name>_count.
        None for versions in between (not measured)."""
        if self.vm_at_least(1, 145):
            return True
        if not self.vm_at_least(1, 80):
            return False
        return None

    @property
    def vm_exemplars(self):
        """VictoriaMetrics keeps no exemplars (1.79 and 1.145:
        /api/v1/query_exemplars answers an empty list)"""
        return False

    @property
    def prom_native_histogram_flag(self):
        """remote-written native histograms need --enable-feature=
        native-histograms in 2.42 and still in 3.5 (without it both answer
        500 "native histograms are disabled")"""
        return True

    def header(self):
        return "%s: prometheus %s (%s), victoria-metrics/vmagent %s (%s)" % (
            self.name, self.prom_version_str or "MISSING", self.prometheus,
            self.vm_version_str or "?", self.victoria_metrics)

    def __repr__(self):
        return "ServerSet(%s)" % self.header()


_cache = {}


def get(name):
    if name not in _cache:
        if name == "current":
            _cache[name] = ServerSet(name, os.path.join(CURRENT_ROOT, "usr", "bin"),
                                     _deb_versions_file(CURRENT_ROOT))
        elif name == "debian12":
            _cache[name] = ServerSet(name, "/usr/bin", {
                "victoria-metrics": _dpkg_version("victoria-metrics")})
        else:
            raise KeyError(name)
    return _cache[name]


def require_current():
    return os.environ.get("PROMGATE_REQUIRE_CURRENT") == "1"


# ---- cosmetic differences between the Prometheus versions' answers
#
# Tests that compare promgate's answers with the Prometheus of their set
# compare through these, so that promgate may follow either version's
# wording (it follows 2.42 today; 3.5 is the one to match going forward):
#
#   JSON      2.42 escapes < > & in strings as \u003c \u003e \u0026
#             (Go's encoding/json HTML escaping); 3.5 writes them as is.
#   parse     an empty query: 2.42 "1:1: parse error: no expression found
#             in input", 3.5 "unknown position: parse error: ...".
#   regexp    2.42 quotes the anchored regexp in errors (`^(?:(a)$`), 3.5
#             the one the user wrote (`(a`).
#   times     2.42 "Invalid time value for 'start'", 3.5 "invalid time ...".

_HTML_ESCAPES = (("\\u003c", "<"), ("\\u003e", ">"), ("\\u0026", "&"))


def prom_json_normal(text):
    """a Prometheus JSON answer with 2.42's HTML escapes undone"""
    if text is None:
        return None
    for esc, ch in _HTML_ESCAPES:
        text = text.replace(esc, ch)
    return text


def prom_error_normal(msg):
    """a Prometheus API error text in one wording for 2.42 and 3.5"""
    if not isinstance(msg, str):
        return msg
    msg = re.sub(r"^unknown position: parse error:", "1:1: parse error:", msg)
    msg = re.sub(r"`\^\(\?:(.*)\)\$`", r"`\1`", msg)
    msg = msg.replace("Invalid time value for", "invalid time value for")
    return prom_json_normal(msg)
