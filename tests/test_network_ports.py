"""Step 05: -p / -P parsing and Docker's ways of printing published ports (pure functions)."""

import socket

import pytest

from labtool.errors import LabtoolError, UsageError
from labtool.network import ports
from labtool.network.ports import PortBinding


def test_the_four_forms_of_p():
    assert ports.parse("8080:80") == [PortBinding(80, "tcp", "", 8080)]
    assert ports.parse("127.0.0.1:8080:80") == [PortBinding(80, "tcp", "127.0.0.1", 8080)]
    assert ports.parse("127.0.0.1::80") == [PortBinding(80, "tcp", "127.0.0.1", 0)]
    assert ports.parse("80") == [PortBinding(80, "tcp", "", 0)]
    assert ports.parse("53:53/udp") == [PortBinding(53, "udp", "", 53)]
    assert ports.parse("0.0.0.0:8080:80/TCP") == [PortBinding(80, "tcp", "", 8080)]


def test_ranges_pair_up_or_choose_from_a_host_range():
    assert ports.parse("8000-8001:80-81") == [PortBinding(80, "tcp", "", 8000), PortBinding(81, "tcp", "", 8001)]
    assert ports.parse("80-81") == [PortBinding(80), PortBinding(81)]
    assert ports.parse("9000-9010:80") == [PortBinding(80, "tcp", "", 0, (9000, 9010))]


@pytest.mark.parametrize("spec, message", [
    ("99999:80", "invalid hostPort: 99999"),
    ("8080:http", "invalid containerPort: http"),
    ("8080:", "no port specified: 8080:<empty>"),
    ("1.2.3:8080:80", "invalid IP address: 1.2.3"),
    ("8080:80/sctp2", "invalid proto: sctp2"),
    ("8000-8002:80-81", "invalid ranges specified for container and host Ports: 80-81 and 8000-8002"),
    ("81-80", "invalid containerPort: 81-80"),
])
def test_bad_specs_give_dockers_one_line_message(spec, message):
    with pytest.raises(UsageError) as e:
        ports.parse(spec)
    assert str(e.value) == message


def test_the_same_host_port_twice_is_refused():
    with pytest.raises(UsageError, match="port is already allocated"):
        ports.parse_all(["8080:80", "8080:81"])
    assert len(ports.parse_all(["8080:80", "8080:80/udp"])) == 2


def test_P_publishes_every_exposed_port_to_a_random_one():
    assert ports.publish_all(["80/tcp", "53/udp", "80"]) == [PortBinding(53, "udp"), PortBinding(80, "tcp")]


def test_expose_values_expand_ranges_and_refuse_bad_ports():
    assert ports.expand_exposed("8000-8001") == ["8000/tcp", "8001/tcp"]
    assert ports.expand_exposed("53/UDP") == ["53/udp"]
    for bad in ("0", "99999", "http", "53/sctp", "9-8"):
        with pytest.raises(UsageError, match="invalid exposed port"):
            ports.expand_exposed(bad)


def test_random_ports_are_free_and_ephemeral():
    low, high = ports.ephemeral_range()
    port = ports.random_free_port()
    assert low <= port <= high and ports.is_free(port)
    with socket.socket() as s:                 # a port a host process holds is not free
        s.bind(("0.0.0.0", 0))
        s.listen()
        held = s.getsockname()[1]
        assert not ports.is_free(held)
        assert ports.random_free_port(candidates=[held, held + 1 if held < 65535 else held - 1]) != held
        with pytest.raises(LabtoolError, match="port is already allocated"):
            ports.random_free_port(candidates=[held])


def test_ps_column_and_port_command_look_like_dockers():
    b = [PortBinding(80, "tcp", "", 8080), PortBinding(53, "udp", "127.0.0.1", 5353)]
    assert ports.format_ps(b) == "0.0.0.0:8080->80/tcp, 127.0.0.1:5353->53/udp"
    assert ports.format_ps(b, exposed=["80/tcp", "443"]) == "0.0.0.0:8080->80/tcp, 127.0.0.1:5353->53/udp, 443/tcp"
    ranged = ports.parse("8000-8001:80-81")
    assert ports.format_ps(ranged) == "0.0.0.0:8000-8001->80-81/tcp"
    assert ports.format_port(b) == ["53/udp -> 127.0.0.1:5353", "80/tcp -> 0.0.0.0:8080"]
    assert ports.lookup(b, "80", "web") == ["0.0.0.0:8080"]
    with pytest.raises(LabtoolError, match="No public port '81/tcp' published for web"):
        ports.lookup(b, "81/tcp", "web")


def test_state_round_trip_matches_what_ps_reads():
    b = PortBinding(80, "tcp", "", 8080)
    assert b.to_state() == {"HostIp": "0.0.0.0", "HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp"}
    assert PortBinding.from_state(b.to_state()) == b
