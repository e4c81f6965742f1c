"""Step 05: --link's environment variables and /etc/hosts line, as Docker writes them (pure)."""

import pytest

from labtool.errors import UsageError
from labtool.network import links


def test_parse_link():
    assert links.parse_link("db") == links.Link("db", "db")
    assert links.parse_link("db:pg") == links.Link("db", "pg")
    assert links.parse_link("/db:pg") == links.Link("db", "pg")
    for bad in ("", "db:", ":pg", "a:b:c"):
        with pytest.raises(UsageError, match="invalid link format"):
            links.parse_link(bad)


def test_env_of_a_link_with_one_port_and_the_targets_env():
    env = links.link_env("pg", "reader", "172.17.0.2", ["5432/tcp"],
                         ["PATH=/bin", "POSTGRES_DB=app", "HOME=/root", "EMPTY="])
    assert env == [
        "PG_PORT=tcp://172.17.0.2:5432",
        "PG_PORT_5432_TCP=tcp://172.17.0.2:5432",
        "PG_PORT_5432_TCP_ADDR=172.17.0.2",
        "PG_PORT_5432_TCP_PORT=5432",
        "PG_PORT_5432_TCP_PROTO=tcp",
        "PG_NAME=/reader/pg",
        "PG_ENV_POSTGRES_DB=app",
        "PG_ENV_EMPTY=",
    ]


def test_default_port_is_the_lowest_tcp_first_and_aliases_lose_dashes():
    env = links.link_env("my-web", "c", "10.0.0.5", ["8080", "53/udp", "53/tcp"])
    assert env[0] == "MY_WEB_PORT=tcp://10.0.0.5:53"
    assert [e.split("=")[0] for e in env if e.endswith("_PROTO=udp") or e.endswith("_PROTO=tcp")] == [
        "MY_WEB_PORT_53_TCP_PROTO", "MY_WEB_PORT_53_UDP_PROTO", "MY_WEB_PORT_8080_TCP_PROTO"]


def test_no_exposed_ports_means_only_the_name():
    assert links.link_env("db", "app", "10.0.0.2") == ["DB_NAME=/app/db"]


def test_consecutive_ports_are_also_described_as_a_range():
    env = links.link_env("w", "c", "10.0.0.5", ["80", "81", "82", "90"])
    assert "W_PORT_80_TCP_START=tcp://10.0.0.5:80" in env
    assert "W_PORT_80_TCP_PORT_START=80" in env
    assert "W_PORT_80_TCP_END=tcp://10.0.0.5:82" in env
    assert "W_PORT_80_TCP_PORT_END=82" in env
    assert "W_PORT_90_TCP_ADDR=10.0.0.5" in env and not any("90_TCP_START" in e for e in env)
    assert sum(e.startswith("W_PORT_8") and e.endswith("_PROTO=tcp") for e in env) == 3


def test_hosts_line():
    assert links.hosts_line("db", "172.17.0.2", "1a2b3c4d5e6f", "db") == "172.17.0.2\tdb 1a2b3c4d5e6f"
    assert links.hosts_line("pg", "172.17.0.2", "1a2b3c4d5e6f", "db") == "172.17.0.2\tpg 1a2b3c4d5e6f db"


def test_link_ports():
    assert links.link_ports(["80", "53/udp", "53/tcp"]) == [(53, "tcp"), (53, "udp"), (80, "tcp")]
