"""promgate_tenant: the tenant from anything nginx knows (a variable, a
map over an authenticated identity) instead of a header the client sets."""

import requests

import rw
from conftest import gateway_http
from fakeup import free_port

ZONE = "    promgate_exemplar_zone tex:8m max=1000;\n"
# the tenant follows the identity the client proved (here a stand-in: a
# map over a header; in production $remote_user, $ssl_client_s_dn...)
TENANT = ("    map $http_x_client $pg_tenant {\n"
          "        alice team-a;\n"
          "        bob   team-b;\n"
          "        default \"\";\n"
          "    }\n")


def start(make_nginx, make_fake, tenant_directive):
    up = make_fake()
    n = make_nginx(gateway_http(
        free_port(), [("up", up.url)], http_extra=ZONE + TENANT,
        write_extra="promgate_exemplars tex;",
        server_extra=tenant_directive + " location = /api/v1/query_exemplars "
                     "{ promgate_exemplar_query tex; }"))
    n.write_url = n.url("/api/v1/write")
    n.query_url = n.url("/api/v1/query_exemplars")
    return n


def write(n, name, trace, headers):
    t = rw.now_ms()
    body = rw.compress(rw.write_request([rw.series(
        name, {"job": trace}, samples=[(1, t)],
        exemplars=[({"trace_id": trace}, 1, t)])]))
    r = rw.post(n.write_url, body, headers=headers)
    assert r.status_code == 204, r.text


def traces(n, name, headers):
    r = requests.get(n.query_url, params={"query": name}, headers=headers,
                     timeout=10)
    assert r.status_code == 200, r.text
    return sorted(e["labels"]["trace_id"] for s in r.json()["data"]
                  for e in s["exemplars"])


def test_tenant_from_a_variable_ignores_the_header(make_nginx, make_fake):
    n = start(make_nginx, make_fake, "promgate_tenant $pg_tenant;")
    name = rw.uniq("tnt")
    # alice claims team-b in the header: the variable decides
    write(n, name, "a", {"X-Client": "alice", "X-Scope-OrgID": "team-b"})
    write(n, name, "b", {"X-Client": "bob"})
    write(n, name, "anon", {})

    assert traces(n, name, {"X-Client": "alice"}) == ["a"]
    assert traces(n, name, {"X-Client": "bob"}) == ["b"]
    # the header alone reaches nobody's exemplars
    assert traces(n, name, {"X-Scope-OrgID": "team-a"}) == ["anon"]
    assert traces(n, name, {"X-Client": "bob",
                            "X-Scope-OrgID": "team-a"}) == ["b"]


def test_default_is_the_tenant_header(make_nginx, make_fake):
    n = start(make_nginx, make_fake, "")
    name = rw.uniq("tnh")
    write(n, name, "a", {"X-Scope-OrgID": "team-a", "X-Client": "bob"})
    assert traces(n, name, {"X-Scope-OrgID": "team-a"}) == ["a"]
    assert traces(n, name, {"X-Client": "bob"}) == []


def test_tenant_directive_takes_one_value(make_nginx, make_fake):
    up = make_fake()
    n = make_nginx(gateway_http(free_port(), [("up", up.url)],
                                server_extra="promgate_tenant a b;"),
                   start=False)
    n.error_log_problems = lambda: []     # the [emerg] is the point
    rc, out = n.test_config()
    assert rc != 0 and "invalid number of arguments" in out, out
