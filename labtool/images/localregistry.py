"""A real registry on 127.0.0.1, for the notebooks and the tests: Docker Distribution.

Debian's ``docker-registry`` package is Docker Distribution, the reference implementation
of the registry API that ``labtool push`` and ``labtool pull`` speak. ``LocalRegistry``
writes it a config, starts ``docker-registry serve CONFIG`` listening on 127.0.0.1 only
(its packaged config would listen on every interface), waits until ``GET /v2/`` answers,
and stops it again::

    with LocalRegistry(storage="/tmp/reg") as reg:      # or reg = LocalRegistry(...).start()
        print(reg.host)                                 # "127.0.0.1:40123"
        ...                                             # labtool push 127.0.0.1:40123/busybox
    # stopped here (or reg.stop())

``config`` may name a config template (tests/registry/*.yml) with the placeholders
``@ADDR@`` (127.0.0.1:PORT), ``@STORAGE@``, ``@DIR@`` (the template's own directory) and any
of ``extra`` (``{"@HTPASSWD@": path}``).
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

PROGRAM = "docker-registry"

PLAIN = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: @STORAGE@
  delete:
    enabled: true
http:
  addr: @ADDR@
"""


def free_port():
    """A TCP port nobody listens on at the moment (the kernel picks it: bind to port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    def __init__(self, storage=None, config=None, port=None, extra=None):
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.workdir = tempfile.mkdtemp(prefix="labtool-registry-")
        self.storage = storage or os.path.join(self.workdir, "storage")
        self.template, self.extra = config, extra or {}
        self.process = None
        self.log = os.path.join(self.workdir, "registry.log")

    def _config(self):
        text = PLAIN
        here = self.workdir
        if self.template:
            with open(self.template) as f:
                text = f.read()
            here = os.path.dirname(os.path.abspath(self.template))
        for key, value in {"@ADDR@": self.host, "@STORAGE@": self.storage, "@DIR@": here, **self.extra}.items():
            text = text.replace(key, str(value))
        path = os.path.join(self.workdir, "config.yml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def start(self, timeout=15):
        if not shutil.which(PROGRAM):
            raise RuntimeError(f"{PROGRAM} is missing: apt-get install docker-registry "
                               "(vagrant/provision.sh installs it)")
        os.makedirs(self.storage, exist_ok=True)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([PROGRAM, "serve", self._config()], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                with open(self.log) as f:
                    tail = f.read()[-2000:]
                self.stop()
                raise RuntimeError(f"{PROGRAM} exited with {self.process.returncode}: {tail}")
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).close()
                return self
            except urllib.error.HTTPError:        # 401: it answers, and wants credentials
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{PROGRAM} did not answer on {self.host} within {timeout} s")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start() if self.process is None else self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        running = self.process is not None and self.process.poll() is None
        return f"<registry {self.host}: {'running' if running else 'stopped'}>"
