"""The CLI as a user meets it: exit codes, one-line errors, state left behind."""

import json
import os
import subprocess
import sys

from conftest import REPO


def one_clean_line(p):
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labtool: "), p.stderr
    assert "Traceback" not in p.stderr


def test_output_and_exit_code_come_back(run):
    p = run("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (p.stdout, p.stderr, p.returncode) == ("out\n", "err\n", 3)


def test_env_and_workdir(run):
    p = run("run", "--rm", "-e", "GREETING=hello", "-w", "/tmp", "busybox", "sh", "-c", "echo $GREETING; pwd")
    assert p.stdout.split() == ["hello", "/tmp"]


def test_image_cmd_is_the_default_command(run):
    p = run("run", "--rm", "-i", "busybox", input="echo from-sh\n")
    assert p.stdout == "from-sh\n"


def test_unknown_image(run):
    p = run("run", "--rm", "nosuch", "true")
    assert p.returncode == 125
    assert p.stderr == "labtool: Unable to find image 'nosuch:latest' locally\n"


def test_command_not_found_is_127(run):
    p = run("run", "--rm", "busybox", "nosuch")
    assert p.returncode == 127
    one_clean_line(p)
    assert 'exec: "nosuch": executable file not found in $PATH' in p.stderr


def test_command_not_executable_is_126(run):
    p = run("run", "--rm", "busybox", "/etc/passwd")
    assert p.returncode == 126
    one_clean_line(p)


def test_killed_by_a_signal_is_128_plus_the_signal(run):
    # without a PID namespace the shell is not PID 1, so SIGKILL to itself works
    p = run("run", "--rm", "--upto", "chroot", "busybox", "sh", "-c", "kill -9 $$")
    assert p.returncode == 137


def test_bad_flags_and_values_are_one_line_and_125(run):
    for args in (["run", "--bogus", "busybox"], ["run"], ["run", "--upto", "nosuch", "busybox", "true"],
                 ["nosuchcommand"]):
        p = run(*args)
        assert p.returncode == 125, args
        one_clean_line(p)


def test_an_unknown_flag_names_the_help_of_its_own_command(run):
    for args, where in ((["images", "--filter", "x"], "labtool images"), (["network", "create", "--bogus", "n"],
                        "labtool network create"), (["image", "ls", "--bogus"], "labtool image ls")):
        p = run(*args)
        assert p.returncode == 125, args
        one_clean_line(p)
        assert p.stderr.endswith(f"(see '{where} --help')\n"), p.stderr


def test_image_without_an_action_names_the_actions(run):
    p = run("image")
    assert p.returncode == 125 and "needs an action: ls, inspect" in p.stderr
    one_clean_line(p)
    assert run("image", "ls").returncode == 0


def test_upto_network_and_an_unknown_step(run):
    p = run("run", "--rm", "--upto", "network", "busybox", "ip", "-o", "link", "show", "eth0")
    assert p.returncode == 0 and "eth0" in p.stdout
    p = run("run", "--rm", "--upto", "nosuch", "busybox", "true")
    assert p.returncode == 125 and "unknown step 'nosuch'" in p.stderr


def test_rm_leaves_nothing_and_without_rm_the_state_stays(run, labtool_root):
    containers = os.path.join(labtool_root, "lib", "containers")
    before = set(os.listdir(containers)) if os.path.isdir(containers) else set()
    assert run("run", "--rm", "busybox", "true").returncode == 0
    assert set(os.listdir(containers)) == before
    assert run("run", "busybox", "sh", "-c", "exit 4").returncode == 4
    (new,) = set(os.listdir(containers)) - before
    with open(os.path.join(containers, new, "state.json")) as f:
        assert json.load(f)["ExitCode"] == 4
    assert run("rm", new).returncode == 0      # (test_build asserts an empty container store)


def test_a_failed_start_leaves_a_created_container_or_nothing_with_rm(run, labtool_root, names):
    containers = os.path.join(labtool_root, "lib", "containers")
    before = set(os.listdir(containers)) if os.path.isdir(containers) else set()
    assert run("run", "--rm", "busybox", "nosuch").returncode == 127
    assert set(os.listdir(containers)) == before
    name = names("nosuch")
    assert run("run", "--name", name, "busybox", "nosuch").returncode == 127     # as docker: it stays,
    state = json.loads(run("inspect", name).stdout)[0]["State"]                   # "Created", code 127
    assert (state["Status"], state["ExitCode"]) == ("created", 127)


def test_without_root_one_clear_line():
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-m", "labtool", "run", "busybox", "true"],
                       capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 125
    one_clean_line(p)
    assert "needs root" in p.stderr


def test_quiet_lists_of_nothing_print_nothing(run):
    """``images -q`` / ``ps -q`` with no match print no line at all (not an empty one), as docker's."""
    assert run("images", "-q", "no-such-image-here").stdout == ""
    assert run("ps", "-q", "--filter", "name=no-such-container-here").stdout == ""


def test_it_with_piped_input_is_refused_not_a_hang(run, names):
    """-it relays a terminal; with stdin a pipe the shell would wait for ever (docker: not a TTY)."""
    p = run("run", "--rm", "-it", "busybox", "sh", input="echo hi\n", timeout=20)
    assert p.returncode == 125 and "the input device is not a TTY" in p.stderr
    one_clean_line(p)
    assert run("run", "--rm", "-i", "busybox", "sh", input="echo hi\n").stdout == "hi\n"
    tty = names("tty")
    assert run("create", "-it", "--name", tty, "busybox", "sh").returncode == 0
    p = run("start", "-ai", tty, input="echo hi\n", timeout=20)
    assert p.returncode == 125 and "not a TTY" in p.stderr


def test_images_lists_busybox(run):
    run("run", "--rm", "busybox", "true")
    p = run("images")
    assert p.returncode == 0
    assert p.stdout.splitlines()[0].split()[:3] == ["REPOSITORY", "TAG", "IMAGE"]
    assert any(line.split()[:2] == ["busybox", "latest"] for line in p.stdout.splitlines())


def test_busybox_is_made_on_first_use_like_a_pull(tmp_path):
    env = dict(os.environ, LABTOOL_ROOT=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "labtool", "run", "--rm", "busybox", "echo", "made"],
                       capture_output=True, text=True, cwd=REPO, env=env)
    assert p.returncode == 0
    assert p.stderr.startswith("Unable to find image 'busybox:latest' locally")
    assert p.stdout == "made\n"
    index = json.load(open(tmp_path / "lib" / "images" / "index.json"))
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "busybox:latest"
