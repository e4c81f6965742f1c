"""Notebook 04b: ``labtool build`` reads a Dockerfile and makes an image, step by step.

Each test builds a small context in tmp_path. A RUN step starts a real container, so the
Dockerfiles keep their RUN lines few.
"""

import json
import os
import re
import tarfile

import pytest

from conftest import labtool

ID12 = r"[0-9a-f]{12}"


@pytest.fixture(autouse=True, scope="module")
def no_untagged_images_left():
    """Builds without -t leave untagged images, and their layers, in the run's root; the
    notebooks share that root, and 04b's ``pull`` output says which layers "Already exists":
    so they go at the end (``image prune``, as a learner would)."""
    yield
    assert labtool("image", "prune", "-f").returncode == 0


def context(tmp_path, files, name="ctx"):
    """A build context directory with ``files`` ({relative path: text or bytes})."""
    top = tmp_path / name
    top.mkdir(exist_ok=True)
    for rel, content in files.items():
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return str(top)


def build(top, *args):
    return labtool("build", *args, top, timeout=120)


def built_id(p):
    m = re.search(rf"^Successfully built ({ID12})$", p.stdout, re.M)
    assert m, p.stdout + p.stderr
    return m.group(1)


def one_line_error(p, code=125):
    assert p.returncode == code, (p.stdout, p.stderr)
    assert p.stderr.startswith("labtool: ") and p.stderr.count("\n") == 1, p.stderr
    assert "Traceback" not in p.stderr
    return p.stderr.strip()


def containers_left():
    top = os.path.join(os.environ["LABTOOL_ROOT"], "lib", "containers")
    return sorted(os.listdir(top)) if os.path.isdir(top) else []


WEB = """\
# the slide's tomcat Dockerfile, for busybox
FROM busybox
LABEL "maintainer"="me@example.org" appserver=httpd
ENV WWW_HOME /var/www
ENV PATH=$WWW_HOME/bin:$PATH GREETING="hello there"
RUN mkdir -p "$WWW_HOME/html" \\
 && echo built > /built.txt
WORKDIR $WWW_HOME/html
COPY index.html .
EXPOSE 8080
CMD ["httpd", "-f", "-p", "8080"]
"""


def test_build_prints_the_classic_builders_steps_and_makes_a_runnable_image(tmp_path, images):
    top = context(tmp_path, {"Dockerfile": WEB, "index.html": "<h1>hello</h1>\n"})
    p = build(top, "-t", images("lt-web:1"))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert re.fullmatch(r"Sending build context to Docker daemon  [\d.]+kB", lines[0])
    steps = [line for line in lines if line.startswith("Step ")]
    assert steps[0] == "Step 1/9 : FROM busybox"
    assert steps[3] == "Step 4/9 : ENV PATH=$WWW_HOME/bin:$PATH GREETING=\"hello there\""
    assert steps[4] == 'Step 5/9 : RUN mkdir -p "$WWW_HOME/html"  && echo built > /built.txt'
    # a metadata step: a container is made (never started), committed, removed, as on the slide
    i = lines.index("Step 3/9 : ENV WWW_HOME /var/www")
    running = re.fullmatch(rf" ---> Running in ({ID12})", lines[i + 1])
    assert running and re.fullmatch(rf" ---> {ID12}", lines[i + 2])
    assert lines[i + 3] == f"Removing intermediate container {running.group(1)}"
    # COPY needs no container
    i = lines.index("Step 7/9 : COPY index.html .")
    assert re.fullmatch(rf" ---> {ID12}", lines[i + 1]) and lines[i + 2].startswith("Step 8/9")
    assert lines[-2] == f"Successfully built {built_id(p)}"
    assert lines[-1] == "Successfully tagged lt-web:1"
    assert not containers_left()

    out = labtool("run", "--rm", "lt-web:1", "sh", "-c",
                  'pwd; cat index.html /built.txt; echo "$PATH|$GREETING|$WWW_HOME"')
    assert out.stdout.splitlines() == ["/var/www/html", "<h1>hello</h1>", "built",
                                       "/var/www/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                                       "|hello there|/var/www"]
    config = json.loads(labtool("image", "inspect", "lt-web:1").stdout)[0]["Config"]
    assert config["Cmd"] == ["httpd", "-f", "-p", "8080"]
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["Labels"] == {"maintainer": "me@example.org", "appserver": "httpd"}
    assert config["WorkingDir"] == "/var/www/html"


def test_cache_hits_and_misses(tmp_path, images):
    files = {"Dockerfile": "FROM busybox\nARG V=1\nENV A=1\nRUN echo $V > /v\nCOPY f /f\nRUN cat /f\n", "f": "one\n"}
    top = context(tmp_path, files)
    tag = images("lt-cache")
    first = build(top, "-t", tag)
    assert first.returncode == 0 and "Using cache" not in first.stdout
    again = build(top, "-t", tag)
    assert again.stdout.count(" ---> Using cache") == 5 and built_id(again) == built_id(first)
    assert "Running in" not in again.stdout
    # the copied file's content changes: COPY and what follows run again, the steps before do not
    (tmp_path / "ctx" / "f").write_text("two\n")
    changed = build(top, "-t", tag)
    cached = [s.split(" : ")[1] for s in re.findall(r"^(Step .*)\n ---> Using cache", changed.stdout, re.M)]
    assert cached == ["ARG V=1", "ENV A=1", "RUN echo $V > /v"]
    assert "two" in changed.stdout                                  # RUN cat /f ran, with the new file
    # a build argument in effect is part of a RUN's cache key
    other = build(top, "-t", tag, "--build-arg", "V=2")
    cached = [s.split(" : ")[1] for s in re.findall(r"^(Step .*)\n ---> Using cache", other.stdout, re.M)]
    assert cached == ["ARG V=1", "ENV A=1"]                           # the RUN sees V=2: it runs again
    assert labtool("run", "--rm", tag, "cat", "/v").stdout == "2\n"
    fresh = build(top, "-t", tag, "--no-cache")
    assert "Using cache" not in fresh.stdout and built_id(fresh) != built_id(changed)


def test_run_cmd_and_entrypoint_forms(tmp_path, images):
    df = """FROM busybox
RUN ["sh", "-c", "echo exec-form > /exec"]
RUN echo shell-form > /shell
ENTRYPOINT ["echo", "entry"]
CMD ["default", "args"]
"""
    tag = images("lt-forms")
    p = build(context(tmp_path, {"Dockerfile": df}), "-t", tag)
    assert p.returncode == 0, p.stderr
    assert labtool("run", "--rm", tag).stdout == "entry default args\n"          # ENTRYPOINT + CMD
    assert labtool("run", "--rm", tag, "mine").stdout == "entry mine\n"          # args replace CMD
    assert labtool("run", "--rm", "--entrypoint", "cat", tag, "/exec", "/shell").stdout == "exec-form\nshell-form\n"
    # shell form: /bin/sh -c wraps it, and CMD is ignored; a new ENTRYPOINT drops the base's CMD
    shell = images("lt-shellform")
    p = build(context(tmp_path, {"Dockerfile": f"FROM {tag}\nENTRYPOINT echo from the shell\n"}, "c2"),
              "-t", shell)
    assert p.returncode == 0, p.stderr
    config = json.loads(labtool("inspect", shell).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["/bin/sh", "-c", "echo from the shell"] and config["Cmd"] is None
    assert labtool("run", "--rm", shell, "ignored").stdout == "from the shell\n"   # (it is sh's $0)


def test_build_args_and_their_scope(tmp_path, images):
    df = """ARG BASE=busybox
ARG GLOBAL=g
FROM ${BASE}
ARG GLOBAL
ARG WHO=nobody
ARG NOTSET
ENV FROM_ENV=$WHO
RUN echo "$GLOBAL $WHO [$NOTSET] $FROM_ENV" > /args
"""
    tag = images("lt-args")
    top = context(tmp_path, {"Dockerfile": df})
    p = build(top, "-t", tag, "--build-arg", "WHO=world", "--build-arg", "EXTRA=1")
    assert p.returncode == 0, p.stderr
    assert "[Warning] One or more build-args [EXTRA] were not consumed" in p.stdout
    assert labtool("run", "--rm", tag, "cat", "/args").stdout == "g world [] world\n"
    env = json.loads(labtool("inspect", tag).stdout)[0]["Config"]["Env"]
    assert "FROM_ENV=world" in env and not any(e.startswith("WHO=") for e in env)   # ARGs are not kept
    # a global ARG is seen in a stage only when declared again there
    p = build(context(tmp_path, {"Dockerfile": "ARG G=global\nFROM busybox\nRUN echo \"[$G]\" > /g\n"}, "c2"),
              "-t", tag)
    assert labtool("run", "--rm", tag, "cat", "/g").stdout == "[]\n"


def test_multi_stage_copy_from_and_target(tmp_path, images):
    df = """FROM busybox AS builder
RUN mkdir /out && echo compiled > /out/app && dd if=/dev/zero of=/junk bs=1k count=300 2>/dev/null
FROM scratch
COPY --from=builder /bin/busybox /bin/
COPY --from=0 /out/app /app
ENTRYPOINT ["/bin/busybox"]
CMD ["cat", "/app"]
"""
    final, builder = images("lt-multi"), images("lt-multi-builder")
    top = context(tmp_path, {"Dockerfile": df})
    p = build(top, "-t", final)
    assert p.returncode == 0, p.stderr
    assert "Step 3/7 : FROM scratch" in p.stdout
    assert labtool("run", "--rm", final).stdout == "compiled\n"
    assert labtool("run", "--rm", final, "ls", "/").stdout.split() == ["app", "bin", "dev", "etc", "proc", "sys"] \
        or "junk" not in labtool("run", "--rm", final, "ls", "/").stdout
    tagged = [line.split()[0] for line in labtool("images").stdout.splitlines()[1:]]
    assert tagged.count(final) == 1                    # only the last stage is tagged
    p = build(top, "-t", builder, "--target", "builder")
    assert p.returncode == 0 and "Step 2/2 : RUN mkdir" in p.stdout and "Step 3/" not in p.stdout
    assert labtool("run", "--rm", builder, "cat", "/out/app").stdout == "compiled\n"
    sizes = {ref: json.loads(labtool("inspect", ref).stdout)[0]["Size"] for ref in (final, builder)}
    assert sizes[final] < sizes[builder] - 300_000     # the builder's junk stayed behind
    p = build(top, "--target", "nosuch")
    assert "failed to reach build target nosuch" in one_line_error(p)


def test_copy_globs_chown_dockerignore_and_add_archives(tmp_path, images):
    archive = tmp_path / "a.tar.gz"
    src = tmp_path / "tarsrc"
    (src / "deep").mkdir(parents=True)
    (src / "deep" / "file").write_text("from the archive\n")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "deep", arcname="deep")
    df = """FROM busybox
COPY *.txt /txt/
COPY dir/ /copied/
COPY --chown=nobody:nogroup owned /owned
ADD a.tar.gz /unpacked/
ADD plain.dat /added.txt
RUN ls /txt /copied /copied/sub && stat -c '%u:%g %a' /owned /tmp
"""
    files = {"Dockerfile": df, "one.txt": "1", "two.txt": "2", "skip.log": "no", "dir/top": "t",
             "dir/sub/inner": "i", "owned": "o", "plain.dat": "p", "secret/key": "s",
             ".dockerignore": "secret\n*.log\n!keep.log\n", "keep.log": "k"}
    top = context(tmp_path, files)
    (tmp_path / "ctx" / "a.tar.gz").write_bytes(archive.read_bytes())
    tag = images("lt-copy")
    p = build(top, "-t", tag)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "/txt:\none.txt\ntwo.txt\n" in out and "/copied:\nsub\ntop\n" in out and "/copied/sub:\ninner\n" in out
    assert "65534:65534 644\n0:0 1777\n" in out                    # --chown; /tmp keeps its mode
    listing = labtool("run", "--rm", tag, "cat", "/unpacked/deep/file", "/added.txt").stdout
    assert listing == "from the archive\np"
    # .dockerignore: the context sent leaves out secret/ and *.log (but keeps keep.log)
    ignored = build(context(tmp_path, dict(files, Dockerfile="FROM busybox\nCOPY secret/key /\n"), "c2"))
    assert "file not found in build context or excluded by .dockerignore" in one_line_error(ignored)
    kept = build(context(tmp_path, dict(files, Dockerfile="FROM busybox\nCOPY *.log /l/\nRUN ls /l\n"), "c3"))
    assert kept.returncode == 0 and "keep.log\n" in kept.stdout and "skip.log" not in kept.stdout


def test_user_workdir_volume_shell_stopsignal(tmp_path, images):
    df = """FROM busybox
WORKDIR /work
WORKDIR sub
USER nobody
RUN id -u > /tmp/uid; pwd > /tmp/pwd
SHELL ["/bin/echo", "the shell form went to"]
RUN these words
COPY --from=busybox --chmod=700 /etc/group /copied-from-an-image
SHELL ["/bin/sh", "-e", "-c"]
VOLUME /data /other
VOLUME ["/logs"]
STOPSIGNAL SIGINT
MAINTAINER someone
"""
    tag = images("lt-meta")
    p = build(context(tmp_path, {"Dockerfile": df}), "-t", tag)
    assert p.returncode == 0, p.stderr
    assert "\nthe shell form went to these words\n" in p.stdout         # SHELL: what runs a shell-form RUN
    assert labtool("run", "--rm", tag, "sh", "-c", "cat /tmp/uid /tmp/pwd; id -u; pwd").stdout == \
        "65534\n/work/sub\n65534\n/work/sub\n"
    assert labtool("run", "--rm", "-u", "0", tag, "stat", "-c", "%a %s", "/copied-from-an-image").stdout.startswith("700 ")
    info = json.loads(labtool("inspect", tag).stdout)[0]
    assert info["Config"]["User"] == "nobody" and info["Config"]["Shell"] == ["/bin/sh", "-e", "-c"]
    assert set(info["Config"]["Volumes"]) == {"/data", "/other", "/logs"}
    assert info["Config"]["StopSignal"] == "SIGINT" and info["Author"] == "someone"
    assert info["History"][-1]["empty_layer"] is True


def test_continuations_comments_and_the_escape_directive(tmp_path, images):
    df = "# escape=`\n# a comment\nFROM busybox\nRUN echo one `\n# dropped\n    && echo two > /f\nENV P=C:\\path\n"
    tag = images("lt-escape")
    p = build(context(tmp_path, {"Dockerfile": df}), "-t", tag)
    assert p.returncode == 0, p.stderr
    assert "Step 2/3 : RUN echo one     && echo two > /f" in p.stdout
    assert labtool("run", "--rm", tag, "sh", "-c", "cat /f; echo $P").stdout == "two\nC:\\path\n"


def test_a_failed_run_stops_the_build_and_the_last_good_image_runs(tmp_path, images):
    df = "FROM busybox\nRUN echo good > /good\nRUN echo about to fail; exit 3\nRUN echo never\n"
    tag = images("lt-fails")
    before = containers_left()
    p = build(context(tmp_path, {"Dockerfile": df}), "-t", tag)
    assert p.returncode == 1
    assert p.stderr == "labtool: The command '/bin/sh -c echo about to fail; exit 3' returned a non-zero code: 3\n"
    assert "about to fail" in p.stdout and "never" not in p.stdout and "Successfully" not in p.stdout
    assert containers_left() == before                       # the failed step's container is gone
    assert labtool("images", tag).stdout.count("\n") == 1    # no tag
    # the slide's troubleshooting: run the last image that was made
    last_good = re.findall(rf"^ ---> ({ID12})$", p.stdout, re.M)[-1]
    assert labtool("run", "--rm", last_good, "cat", "/good").stdout == "good\n"
    missing = build(context(tmp_path, {"Dockerfile": "FROM busybox\nRUN nosuchcommand\n"}, "c2"))
    assert missing.returncode == 1 and "returned a non-zero code: 127" in missing.stderr


def test_ctrl_c_during_a_run_step_stops_the_build(tmp_path, images):
    """SIGINT (Ctrl-C) while RUN sleeps: the step's container is killed (its PID 1 would ignore the
    signal), the build stops at once with 130, nothing is tagged and no container is left."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    tag = images("lt-interrupted:1")
    top = context(tmp_path, {"Dockerfile": "FROM busybox\nRUN sleep 30\nRUN true\n"})
    before = containers_left()
    p = subprocess.Popen([sys.executable, "-m", "labtool", "build", "-t", tag, top], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith(" ---> Running in"):
            break
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    began = time.monotonic()
    rest, _ = p.communicate(timeout=20)
    assert p.returncode == 130 and time.monotonic() - began < 10
    assert "Successfully" not in rest and "Step 3/3" not in rest
    assert labtool("images", "-q", tag).stdout == ""
    assert containers_left() == before


@pytest.mark.parametrize("dockerfile, message", [
    ("FROM busybox\n\n# comment\nRUN true \\\n  && true\nRUNN false\n", "Dockerfile:6: unknown instruction: RUNN"),
    ("RUN true\n", "Dockerfile:1: RUN: no build stage in current context"),
    ("# only a comment\n", "Dockerfile:1: the Dockerfile has no instructions"),
    ("FROM busybox\nHEALTHCHECK CMD true\n", "Dockerfile:2: labtool runs no health checks: HEALTHCHECK is not supported"),
    ("FROM busybox\nONBUILD RUN true\n", "Dockerfile:2: ONBUILD"),
    ("FROM busybox\nADD http://127.0.0.1:9/x /x\n", "Dockerfile:2: ADD http://127.0.0.1:9/x: cannot download it"),
    ("FROM busybox\nCOPY http://127.0.0.1:9/x /x\n", "Dockerfile:2: COPY cannot fetch a URL"),
    ("FROM busybox\nCOPY nosuch /x\n", "Dockerfile:2: COPY failed: file not found in build context"),
    ("FROM busybox\nCOPY --frm=x a /b\n", "Dockerfile:2: COPY --frm: unknown flag"),
    ("FROM busybox\nEXPOSE http\n", "Dockerfile:2: EXPOSE: invalid port 'http'"),
    ("FROM busybox AS a\nFROM busybox AS A\n", "Dockerfile:2: duplicate stage name 'a'"),
    ("FROM busybox\nCOPY --from=0 /etc/passwd /p\n", "Dockerfile:2: COPY --from=0: a stage cannot copy from itself"),
    ("FROM busybox\nCOPY --chmod=999 Dockerfile /f\n", "Dockerfile:2: COPY --chmod=999: invalid mode"),
    ("FROM busybox\nEXPOSE 99999\n", "Dockerfile:2: EXPOSE: invalid port '99999'"),
    ("FROM busybox\nEXPOSE 53/sctp\n", "Dockerfile:2: EXPOSE: invalid port '53/sctp'"),
    ("FROM nosuchimage\n", "Dockerfile:1: Unable to find image 'nosuchimage:latest' locally"),
    ("FROM busybox\nENV\n", "Dockerfile:2: ENV requires at least one argument"),
    ("FROM busybox\nSTOPSIGNAL SIGNOPE\n", "Dockerfile:2: STOPSIGNAL: invalid signal: 'SIGNOPE'"),
])
def test_dockerfile_mistakes_are_one_line_naming_file_and_line(tmp_path, dockerfile, message):
    before = containers_left()
    p = build(context(tmp_path, {"Dockerfile": dockerfile}))
    assert one_line_error(p).startswith(f"labtool: {message}")
    assert containers_left() == before


def test_expose_range_is_one_key_per_port_and_p_publishes_them(tmp_path, images):
    """EXPOSE 8000-8001 is stored as 8000/tcp and 8001/tcp (as Docker does), so that -P can publish it."""
    p = build(context(tmp_path, {"Dockerfile": "FROM busybox\nEXPOSE 8000-8001 53/udp\n"}), "-q")
    config = json.loads(labtool("image", "inspect", p.stdout.strip()).stdout)[0]["Config"]
    assert sorted(config["ExposedPorts"]) == ["53/udp", "8000/tcp", "8001/tcp"]
    r = labtool("run", "--rm", "-P", "--expose", "9000-9001", p.stdout.strip(), "true")
    assert r.returncode == 0, r.stderr


def test_bad_build_flags(tmp_path):
    top = context(tmp_path, {"Dockerfile": "FROM busybox\n"})
    assert "invalid reference format" in one_line_error(build(top, "-t", "Bad Name"))
    assert "Dockerfile path" in one_line_error(build(top, "-f", "nosuch"))
    assert "not found" in one_line_error(labtool("build", str(tmp_path / "nosuch")))
    assert '"=x" for "--build-arg"' in one_line_error(build(top, "--build-arg", "=x"))
    assert "context must be a directory" in one_line_error(labtool("build", os.path.join(top, "Dockerfile")))
    assert "is a directory" in one_line_error(build(top, "-f", top))
    p = build(top, "-q")
    assert p.returncode == 0 and re.fullmatch(r"sha256:[0-9a-f]{64}\n", p.stdout)


def test_add_downloads_a_url(tmp_path, images):
    """ADD of an http URL (a server on 127.0.0.1 here): the file as it is, mode 0600, not unpacked."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    (served / "page.txt").write_text("from the web\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        tag = images("lt-add-url")
        p = build(context(tmp_path, {"Dockerfile": f"FROM busybox\nADD {url}/page.txt /downloads/\n"}), "-t", tag)
        assert p.returncode == 0, p.stderr
        out = labtool("run", "--rm", tag, "sh", "-c", "stat -c %a /downloads/page.txt; cat /downloads/page.txt")
        assert out.stdout == "600\nfrom the web\n"
        missing = build(context(tmp_path, {"Dockerfile": f"FROM busybox\nADD {url}/nosuch /x\n"}, "c2"))
        assert "ADD " + url + "/nosuch: the server answered 404" in one_line_error(missing)
    finally:
        server.shutdown()
        server.server_close()


def test_stopsignal_is_what_stop_sends(tmp_path, images, names):
    df = """FROM busybox
STOPSIGNAL SIGUSR1
CMD ["sh", "-c", "trap 'echo got USR1; exit 3' USR1; echo ready; while true; do sleep 0.1; done"]
"""
    tag = images("lt-stopsignal")
    assert build(context(tmp_path, {"Dockerfile": df}), "-t", tag).returncode == 0
    name = names("stopsig")
    assert labtool("run", "-d", "--name", name, tag).returncode == 0
    import time
    deadline = time.time() + 5
    while "ready" not in labtool("logs", name).stdout and time.time() < deadline:
        time.sleep(0.05)
    assert labtool("stop", "-t", "5", name).returncode == 0
    assert labtool("logs", name).stdout == "ready\ngot USR1\n"
    assert labtool("wait", name).stdout == "3\n"


def test_dockerignore_patterns(tmp_path):
    """Go's filepath.Match plus ``**``, a directory takes its contents, the last match decides."""
    from labtool.images.context import Context

    (tmp_path / ".dockerignore").write_text("# comment\n**/*.tmp\nbuild/\n*.log\n!keep.log\n/secret?\n")
    c = Context(str(tmp_path))
    assert c.ignored("a.tmp") and c.ignored("x/y/z.tmp")
    assert c.ignored("build") and c.ignored("build/out/bin")
    assert c.ignored("debug.log") and not c.ignored("keep.log") and not c.ignored("sub/debug.log")
    assert c.ignored("secret1") and not c.ignored("secret12")
    assert not c.ignored("Dockerfile") and not c.ignored("src/main.c")
