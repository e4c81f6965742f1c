"""Notebook 00's lifecycle: docker's commands and states, as a user sees them in `ps` and `logs`."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, until

TICK = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"


def inspect(run, name):
    p = run("inspect", name)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)[0]


def ps_line(run, name, *flags):
    out = run("ps", "-a", *flags).stdout
    lines = [line for line in out.splitlines()[1:] if line.split()[-1] == name]
    return lines[0] if lines else ""


def ps_status(run, name):
    """The STATUS cell of NAME's row, cut where the header puts the column."""
    header, *rows = run("ps", "-a").stdout.splitlines()
    start, end = header.index("STATUS"), header.index("PORTS")
    return [row[start:end].strip() for row in rows if row.split()[-1] == name][0]


def test_run_d_prints_the_full_id_and_the_cli_can_exit(run, names):
    name = names("web")
    p = run("run", "-d", "--name", name, "busybox", "sh", "-c", TICK)
    assert p.returncode == 0 and re.fullmatch(r"[0-9a-f]{64}\n", p.stdout), p.stdout
    assert re.search(r"Up (Less than a second|\d+ seconds?)", ps_line(run, name))
    until(lambda: "tick 3" in run("logs", name).stdout)
    state = inspect(run, name)["State"]
    assert state["Running"] and state["Status"] == "running"


def test_logs_are_json_lines_in_order_with_streams(run, names, labtool_root):
    name = names("logs")
    # (between two streams the order is the order of arrival: give each line its moment)
    command = "echo one; sleep 0.05; echo two >&2; sleep 0.05; echo three"
    assert run("run", "--name", name, "busybox", "sh", "-c", command).returncode == 0
    record = inspect(run, name)
    with open(record["LogPath"]) as f:
        entries = [json.loads(line) for line in f]
    assert [(e["stream"], e["log"]) for e in entries] == [("stdout", "one\n"), ("stderr", "two\n"),
                                                          ("stdout", "three\n")]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", e["time"]) for e in entries)
    p = run("logs", name)
    assert p.stdout == "one\nthree\n" and p.stderr == "two\n"
    assert run("logs", "--tail", "1", name).stdout == "three\n"
    assert re.match(r"\d{4}-.*Z one\n", run("logs", "-t", name).stdout)


def test_logs_follow_ends_when_the_container_does(run, names):
    name = names("follow")
    run("run", "-d", "--name", name, "busybox", "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done")
    p = run("logs", "-f", name, timeout=20)
    assert p.stdout == "1\n2\n3\n"


def test_stop_sends_sigterm_then_sigkill(run, names):
    trapping = names("trapping")
    run("run", "-d", "--name", trapping, "busybox", "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done")
    until(lambda: inspect(run, trapping)["State"]["Running"])
    time.sleep(0.2)                               # the trap is set
    assert run("stop", trapping).returncode == 0
    assert inspect(run, trapping)["State"]["ExitCode"] == 0
    stubborn = names("stubborn")                  # sh as PID 1 ignores SIGTERM: killed after -t
    run("run", "-d", "--name", stubborn, "busybox", "sh", "-c", TICK)
    began = time.time()
    assert run("stop", "-t", "1", stubborn).returncode == 0
    assert 0.9 < time.time() - began < 5
    assert re.search(r"Exited \(137\) (Less than a second|\d+ seconds?) ago", ps_line(run, stubborn))


def test_kill_with_a_signal_and_exit_codes(run, names):
    name = names("kill")
    run("run", "-d", "--name", name, "busybox", "sleep", "30")
    assert run("kill", name).returncode == 0
    assert inspect(run, name)["State"]["ExitCode"] == 137
    other = names("hup")
    run("run", "-d", "--name", other, "busybox", "sh", "-c", "trap 'exit 7' HUP; while true; do sleep 0.1; done")
    time.sleep(0.3)
    assert run("kill", "-s", "HUP", other).returncode == 0
    until(lambda: inspect(run, other)["State"]["Status"] == "exited")
    assert inspect(run, other)["State"]["ExitCode"] == 7
    assert run("kill", "-s", "NOPE", other).returncode == 125


def test_create_start_restart_wait_rename(run, names):
    name = names("life")
    p = run("create", "--name", name, "busybox", "sh", "-c", "echo started; sleep 0.3; exit 4")
    assert p.returncode == 0 and ps_status(run, name) == "Created"
    assert run("start", name).returncode == 0
    assert run("wait", name, timeout=20).stdout == "4\n"
    assert run("start", "-a", name).stdout == "started\n"
    new = names("renamed")
    assert run("rename", name, new).returncode == 0
    assert ps_line(run, new) and not ps_line(run, name)
    assert run("restart", "-t", "1", new).returncode == 0
    assert run("logs", new).stdout == "started\n" * 3


def test_start_attach_interactive_gives_the_container_our_stdin(run, names):
    name = names("ai")
    assert run("create", "-i", "--name", name, "busybox", "sh", "-c", "read x; echo got $x; exit 3").returncode == 0
    p = run("start", "-a", "-i", name, input="hello\n")
    assert (p.returncode, p.stdout) == (3, "got hello\n"), p.stderr
    p = run("start", "-ai", name, input="again\n")            # a second time, from "exited"
    assert p.stdout == "got again\n" and run("logs", name).stdout == "got hello\ngot again\n"
    other = names("ai-running")
    run("run", "-d", "--name", other, "busybox", "sleep", "30")
    p = run("start", "-ai", other)
    assert p.returncode == 125 and p.stderr.count("\n") == 1 and "already running" in p.stderr


def test_pause_freezes_every_process(run, names):
    name = names("pause")
    run("run", "-d", "--name", name, "busybox", "sh", "-c", TICK)
    until(lambda: "tick 1" in run("logs", name).stdout)
    assert run("pause", name).returncode == 0
    assert "(Paused)" in ps_line(run, name)
    frozen = run("logs", name).stdout
    time.sleep(0.5)
    assert run("logs", name).stdout == frozen            # not a line more while frozen
    assert run("unpause", name).returncode == 0
    until(lambda: run("logs", name).stdout != frozen)
    assert run("pause", "--help").returncode == 0


def test_restart_on_failure_counts_and_gives_up(run, names):
    name = names("crash")
    run("run", "-d", "--name", name, "--restart", "on-failure:2", "busybox", "sh", "-c", "echo crash; exit 3")
    until(lambda: inspect(run, name)["State"]["Status"] == "exited" and inspect(run, name)["RestartCount"] == 2)
    time.sleep(0.5)
    record = inspect(run, name)
    assert record["RestartCount"] == 2 and record["State"]["ExitCode"] == 3
    assert run("logs", name).stdout == "crash\n" * 3
    assert record["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}


def test_restart_always_until_stopped_by_hand(run, names):
    name = names("always")
    run("run", "-d", "--name", name, "--restart", "always", "busybox", "sh", "-c", "echo up; sleep 0.1")
    until(lambda: inspect(run, name)["RestartCount"] >= 2)
    assert run("stop", "-t", "1", name).returncode == 0
    count = inspect(run, name)["RestartCount"]
    time.sleep(1)
    assert inspect(run, name)["RestartCount"] == count
    assert inspect(run, name)["State"]["Status"] == "exited"


def test_system_boot_starts_always_and_unless_stopped_but_not_stopped_ones(run, names):
    always, unless, stopped = names("b-always"), names("b-unless"), names("b-stopped")
    for name, policy in ((always, "always"), (unless, "unless-stopped"), (stopped, "unless-stopped")):
        run("run", "-d", "--name", name, "--restart", policy, "busybox", "sleep", "30")
    run("stop", "-t", "0", stopped)
    for name in (always, unless):                  # what a reboot does: everything gone, by force
        pid = inspect(run, name)["State"]["Pid"]
        supervisor = json.load(open(os.path.join(os.environ["LABTOOL_ROOT"], "lib", "containers",
                                                 inspect(run, name)["Id"], "state.json")))["SupervisorPid"]
        os.kill(supervisor, signal.SIGKILL)
        until(lambda: not os.path.exists(f"/proc/{pid}"))
        assert inspect(run, name)["State"]["Status"] == "dead"
    p = run("system", "boot")
    assert p.returncode == 0 and sorted(p.stdout.split()) == sorted(["started", always, "started", unless])
    assert inspect(run, always)["State"]["Running"] and inspect(run, unless)["State"]["Running"]
    assert not inspect(run, stopped)["State"]["Running"]


def test_a_killed_supervisor_leaves_a_dead_container_that_rm_f_cleans_up(run, names, labtool_root):
    name = names("orphan")
    run("run", "-d", "--name", name, "--memory", "32m", "busybox", "sleep", "30")
    record = inspect(run, name)
    with open(os.path.join(labtool_root, "lib", "containers", record["Id"], "state.json")) as f:
        supervisor = json.load(f)["SupervisorPid"]
    os.kill(supervisor, signal.SIGKILL)
    until(lambda: not os.path.exists(f"/proc/{record['State']['Pid']}"))     # PDEATHSIG: it dies too
    assert ps_status(run, name) == "Dead"
    assert inspect(run, name)["State"]["Error"] == "its supervisor is gone"
    assert run("rm", "-f", name).returncode == 0
    assert not os.path.exists(f"/sys/fs/cgroup/memory/labtool/{record['Id']}")
    assert record["GraphDriver"]["Data"]["MergedDir"] not in open("/proc/self/mounts").read()


def test_top_lists_the_processes(run, names):
    name = names("top")
    run("run", "-d", "--name", name, "busybox", "sh", "-c", "sleep 30 & sleep 31")
    until(lambda: "sleep 31" in run("top", name).stdout)
    out = run("top", name).stdout
    assert out.split()[:3] == ["UID", "PID", "PPID"] and "sleep 30" in out


def test_ps_flags(run, names):
    up, down = names("ps-up"), names("ps-down")
    run("run", "-d", "--name", up, "busybox", "sleep", "30")
    run("run", "--name", down, "busybox", "true")
    running = run("ps").stdout
    assert up in running and down not in running
    assert running.splitlines()[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                                               "PORTS", "NAMES"]
    assert down in run("ps", "-a").stdout
    exited = run("ps", "-a", "-f", "status=exited", "-f", f"name={down}").stdout.splitlines()
    assert len(exited) == 2 and exited[1].endswith(down)
    ids = run("ps", "-q", "--no-trunc", "-f", f"name={up}").stdout.split()
    assert ids == [inspect(run, up)["Id"]]
    assert '"sleep 30"' in ps_line(run, up)


def test_names_are_generated_and_duplicates_refused(run, names):
    p = run("run", "-d", "busybox", "sleep", "30")
    generated = inspect(run, p.stdout.strip())["Name"].lstrip("/")
    try:
        assert re.fullmatch(r"[a-z]+_[a-z]+\d?", generated)
        dup = run("run", "--name", generated, "busybox", "true")
        assert dup.returncode == 125 and "is already in use" in dup.stderr
    finally:
        run("rm", "-f", generated)


def test_concurrent_runs_get_distinct_names_and_all_run(run):
    procs = [subprocess.Popen([sys.executable, "-m", "labtool", "run", "-d", "busybox", "sleep", "30"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    ids = [p.communicate(timeout=60)[0].strip() for p in procs]
    try:
        assert all(p.returncode == 0 for p in procs) and len(set(ids)) == 8
        found = [inspect(run, i) for i in ids]
        assert len({r["Name"] for r in found}) == 8 and all(r["State"]["Running"] for r in found)
    finally:
        run("rm", "-f", *filter(None, ids))


def test_entrypoint_env_file_and_exit_codes(run, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# a comment\nA=1\n\nB=two words\n")
    p = run("run", "--rm", "--env-file", str(env_file), "--entrypoint", "env", "busybox")
    assert "A=1\n" in p.stdout and "B=two words\n" in p.stdout
    assert run("run", "--rm", "--entrypoint", "sh", "busybox", "-c", "exit 9").returncode == 9
    assert run("run", "--rm", "busybox", "nosuch").returncode == 127
    assert run("run", "--rm", "busybox", "/etc/passwd").returncode == 126
    assert run("run", "--rm", "nosuchimage").returncode == 125
    bad = run("run", "--rm", "--restart", "always", "busybox", "true")
    assert bad.returncode == 125 and bad.stderr == "labtool: Conflicting options: --restart and --rm\n"
    assert run("run", "-d", "--restart", "sometimes", "busybox", "true").returncode == 125


def test_run_d_reports_a_command_that_cannot_start(run, names):
    name = names("cannot")
    p = run("run", "-d", "--name", name, "busybox", "nosuch")
    assert p.returncode == 127 and p.stderr.startswith("labtool: exec: \"nosuch\"")
    assert inspect(run, name)["State"]["Status"] == "created"


def test_tty_inside_is_the_containers_own_terminal(run):
    p = run("run", "--rm", "-t", "busybox", "sh", "-c", "tty; stty size")
    assert p.stdout.replace("\r", "") == "/dev/pts/0\n24 80\n"


def test_run_it_gives_a_shell_prompt_and_ctrl_d_ends_it():
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(REPO)
        os.execvp(sys.executable, [sys.executable, "-m", "labtool", "run", "--rm", "-it", "busybox", "sh"])
    out = b""

    def read_until(text, timeout=10):
        nonlocal out
        deadline = time.time() + timeout
        while text not in out and time.time() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    return
    read_until(b"/ # ")
    os.write(fd, b"echo hi-$((6*7))\r")
    read_until(b"hi-42")
    read_until(b"hi-42\r\n/ # ")                      # the next prompt: the shell reads again
    os.write(fd, b"\x04")                              # Ctrl-D: the shell ends, and so does run
    deadline = time.time() + 10
    while not os.waitpid(pid, os.WNOHANG)[0]:
        if time.time() > deadline:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
            raise AssertionError(f"Ctrl-D did not end the shell: {out[-200:]!r}")
        time.sleep(0.05)
    os.close(fd)
    assert b"/ # " in out and b"hi-42" in out


def test_exec_i_and_t(run, names):
    name = names("exec")
    run("run", "-d", "--name", name, "busybox", "sleep", "30")
    assert run("exec", "-i", name, "sh", input="echo from-stdin\n").stdout == "from-stdin\n"
    assert run("exec", name, "sh", input="echo ignored\n").stdout == ""      # no -i: no stdin, as docker
    p = run("exec", "-t", name, "sh", "-c", "tty; stty size")
    assert p.stdout.replace("\r", "") == "/dev/pts/0\n24 80\n"
    assert run("exec", name, "sh", "-c", "exit 5").returncode == 5


def test_ps_command_column_quotes_arguments_with_spaces_as_docker(run, names):
    name = names("quoted")
    run("create", "--name", name, "busybox", "sh", "-c", "echo hi; sleep 5")
    assert "\"sh -c 'echo hi; sle…\"" in ps_line(run, name)
    assert "\"sh -c 'echo hi; sleep 5'\"" in run("ps", "-a", "--no-trunc").stdout


def test_a_detached_container_is_the_child_of_its_supervisor(run, names, labtool_root):
    """Its starter made it with clone(CLONE_PARENT) and is gone; the supervisor reaps it."""
    name = names("child")
    assert run("run", "-d", "--name", name, "busybox", "sleep", "30").returncode == 0
    record = inspect(run, name)
    with open(os.path.join(labtool_root, "lib", "containers", record["Id"], "state.json")) as f:
        supervisor = json.load(f)["SupervisorPid"]
    with open(f"/proc/{record['State']['Pid']}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == supervisor
    assert run("kill", name).returncode == 0
    until(lambda: inspect(run, name)["State"]["Status"] == "exited")
    assert inspect(run, name)["State"]["ExitCode"] == 137
