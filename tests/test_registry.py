"""Step 04b: pull, push, login against a real registry (Docker Distribution) on 127.0.0.1.

Each fixture starts ``docker-registry serve`` with a config of tests/registry/ on a free
port of 127.0.0.1 and a storage directory in tmp_path, and stops it afterwards:
``plain.yml`` (no authentication), ``basic.yml`` (htpasswd, HTTP Basic) and ``token.yml``
(Bearer tokens from a token server this file runs, signing its JWTs with ``openssl``).
skopeo is the independent reader of what labtool pushed. Pulling back goes into a fresh
labtool root, so the layers really travel and get unpacked.
"""

import base64
import http.server
import json
import os
import shutil
import stat
import subprocess
import threading
import time

import pytest

from conftest import REPO, labtool
from labtool.images import localregistry, store

CONFIGS = os.path.join(REPO, "tests", "registry")
USER, PASSWORD = "learner", "s3cret-pass"


def tag(source, target):
    """``labtool tag`` (another step brings it): one more name for the same manifest."""
    image = store.find(source)
    target = store.normalize(target)
    store._update_index(target, {"mediaType": store.MEDIA_MANIFEST, "digest": image.manifest,
                                 "size": len(store.read_blob(image.manifest)),
                                 "annotations": {store.REF_ANNOTATION: target}})


def in_root(root, *args, input=None):
    """labtool with another (fresh) labtool root: a second machine, as far as images go."""
    return labtool(*args, input=input, env=dict(os.environ, LABTOOL_ROOT=str(root)))


def skopeo(*args):
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def registry(tmp_path):
    with localregistry.LocalRegistry(storage=str(tmp_path / "storage"),
                                     config=os.path.join(CONFIGS, "plain.yml")) as reg:
        yield reg


@pytest.fixture
def basic_registry(tmp_path):
    htpasswd = tmp_path / "htpasswd"
    line = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True).stdout
    htpasswd.write_text(line.strip() + "\n")
    with localregistry.LocalRegistry(storage=str(tmp_path / "storage"), config=os.path.join(CONFIGS, "basic.yml"),
                                     extra={"@HTPASSWD@": htpasswd}) as reg:
        yield reg


@pytest.fixture
def other_root(tmp_path):
    root = tmp_path / "other-root"
    root.mkdir()
    yield root
    # its containers ran with --rm, but its default bridge and iptables chains stay (as docker0
    # does): reset takes them down before the directory that names them goes
    labtool("reset", env=dict(os.environ, LABTOOL_ROOT=str(root)))
    shutil.rmtree(root)


def test_hello_world_runs_offline(run):
    p = run("run", "--rm", "hello-world")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("\nHello from labtool!\n")
    assert "labtool took the following steps" in p.stdout
    image = store.find("hello-world")
    assert image.cmd == ["/hello"]
    assert len(image.layers) == 1 and os.listdir(image.layers[0]) == ["hello"]   # FROM scratch + one file
    hello = os.path.join(image.layers[0], "hello")
    assert os.path.getsize(hello) < 2000
    with open(hello, "rb") as f:
        assert f.read(4) == b"\x7fELF"


def test_hello_world_program_for_both_machines():
    from labtool.images import hello

    for machine, e_machine in (("x86_64", 62), ("aarch64", 183)):
        elf = hello.program(machine)
        assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == e_machine
        entry = int.from_bytes(elf[24:32], "little")
        assert entry == hello.BASE + hello.CODE_OFFSET
        assert elf.endswith(hello.MESSAGE.encode())


def test_push_pull_run_round_trip(registry, other_root, run):
    name = f"{registry.host}/busybox:latest"
    tag("busybox", name)
    p = run("push", name)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == f"The push refers to repository [{registry.host}/busybox]"
    layer = store.read_blob(store.find("busybox").manifest)
    layer_id = json.loads(layer)["layers"][0]["digest"].split(":")[1][:12]
    assert f"{layer_id}: Pushed" in lines
    digest = lines[-1].split("digest: ")[1].split()[0]
    assert lines[-1] == f"latest: digest: {digest} size: {len(layer)}"
    assert digest == store.find("busybox").manifest          # the manifest went as it is stored

    again = run("push", name)
    assert f"{layer_id}: Layer already exists" in again.stdout.splitlines()

    # skopeo, another registry client, reads what labtool pushed
    inspect = skopeo("inspect", "--tls-verify=false", f"docker://{name}")
    assert inspect.returncode == 0, inspect.stderr
    info = json.loads(inspect.stdout)
    assert info["Digest"] == digest and len(info["Layers"]) == 1 and info["Architecture"] in ("amd64", "arm64")

    # a fresh labtool root has nothing: every layer is downloaded, checked and unpacked
    pulled = in_root(other_root, "pull", name)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.splitlines() == [
        "latest: Pulling from busybox", f"{layer_id}: Pulling fs layer", f"{layer_id}: Verifying Checksum",
        f"{layer_id}: Download complete", f"{layer_id}: Pull complete", f"Digest: {digest}",
        f"Status: Downloaded newer image for {name}", name]
    same = in_root(other_root, "pull", name)
    assert f"Status: Image is up to date for {name}" in same.stdout
    ran = in_root(other_root, "run", "--rm", name, "sh", "-c", "echo pulled; ls /bin | wc -l")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["pulled", str(len(os.listdir(os.path.join(store.find("busybox").layers[0], "bin"))))]

    # here, with the tag removed, the layer is still in the store: "Already exists"
    store.untag(name)
    back = run("pull", name)
    assert back.returncode == 0, back.stderr
    assert f"{layer_id}: Already exists" in back.stdout.splitlines()
    assert run("run", "--rm", name, "true").returncode == 0


def test_run_pulls_a_missing_image(registry, other_root, run):
    name = f"{registry.host}/tools/busybox:v1"
    tag("busybox", name)
    assert run("push", name).returncode == 0
    p = in_root(other_root, "run", "--rm", name, "echo", "from the registry")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "from the registry\n"
    assert p.stderr.startswith(f"Unable to find image '{name}' locally\nv1: Pulling from tools/busybox\n")
    assert "Status: Downloaded newer image for" in p.stderr


def test_default_registry_from_the_environment(registry, other_root, run):
    tag("busybox", f"{registry.host}/library/busybox:1.35")
    assert run("push", f"{registry.host}/library/busybox:1.35").returncode == 0
    env = dict(os.environ, LABTOOL_ROOT=str(other_root), LABTOOL_REGISTRY=registry.host)
    p = labtool("run", "--rm", "busybox:1.35", "true", env=env)     # a one-part name means library/NAME
    assert p.returncode == 0, p.stderr
    assert "1.35: Pulling from library/busybox" in p.stderr
    listed = in_root(other_root, "images").stdout.splitlines()
    assert any(line.split()[:2] == ["busybox", "1.35"] for line in listed)    # named as typed


def test_missing_image_without_a_registry(run, other_root):
    env = dict(os.environ, LABTOOL_ROOT=str(other_root))
    env.pop("LABTOOL_REGISTRY", None)
    p = labtool("run", "--rm", "nosuchimage", "true", env=env)
    assert (p.returncode, p.stderr) == (125, "labtool: Unable to find image 'nosuchimage:latest' locally\n")
    p = labtool("pull", "nosuchimage", env=env)
    assert p.returncode == 125 and p.stderr.count("\n") == 1 and "no registry to pull" in p.stderr


def test_pull_unknown_repository_is_one_line(registry, other_root):
    p = in_root(other_root, "pull", f"{registry.host}/nobody/here:1.0")
    assert p.returncode == 125
    assert p.stderr == (f"labtool: manifest for {registry.host}/nobody/here:1.0 not found: "
                        "manifest unknown: manifest unknown\n")
    assert not os.path.exists(other_root / "lib" / "images" / "index.json")


def test_unreachable_registry_is_one_line(other_root):
    port = localregistry.free_port()
    p = in_root(other_root, "pull", f"127.0.0.1:{port}/busybox")
    assert p.returncode == 125
    assert p.stderr.startswith(f"labtool: cannot reach the registry 127.0.0.1:{port} ")
    assert "connection refused" in p.stderr
    assert p.stderr.count("\n") == 1


def test_a_tampered_blob_is_refused_and_nothing_is_stored(registry, other_root, run, tmp_path):
    name = f"{registry.host}/busybox:tampered"
    tag("busybox", name)
    assert run("push", name).returncode == 0
    layer = json.loads(store.read_blob(store.find(name).manifest))["layers"][0]["digest"].split(":")[1]
    data = tmp_path / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256" / layer[:2] / layer / "data"
    with open(data, "r+b") as f:                 # flip one byte in the registry's copy
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    p = in_root(other_root, "pull", name)
    assert p.returncode == 125
    assert p.stderr.startswith(f"labtool: blob sha256:{layer}: the bytes received have digest")
    images = other_root / "lib" / "images"
    assert not os.path.exists(images / "index.json")
    assert not os.path.exists(images / "blobs")
    assert [n for n in os.listdir(images) if n.startswith(".pull-")] == []
    assert not os.path.exists(other_root / "lib" / "layers") or os.listdir(other_root / "lib" / "layers") == []


def test_basic_auth_login_push_pull(basic_registry, other_root, run):
    host = basic_registry.host
    name = f"{host}/private/busybox:latest"
    tag("busybox", name)
    denied = in_root(other_root, "pull", name)
    assert denied.returncode == 125
    assert denied.stderr == (f"labtool: pull access denied for {host}/private/busybox, "
                             f"repository does not exist or may require 'labtool login {host}'\n")
    refused = run("push", name)
    assert refused.returncode == 125 and refused.stderr.splitlines()[-1] == (
        f"labtool: push access denied for {host}/private/busybox: unauthorized: authentication required "
        f"(try 'labtool login {host}')")

    wrong = in_root(other_root, "login", "-u", USER, "--password-stdin", host, input="wrong\n")
    assert wrong.returncode == 125
    assert wrong.stderr == f"labtool: login to {host} failed: unauthorized: authentication required\n"
    assert not os.path.exists(other_root / "lib" / "config.json")

    ok = run("login", "-u", USER, "--password-stdin", host, input=PASSWORD + "\n")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "Login Succeeded\n" and "stored unencrypted" in ok.stderr
    config = os.path.join(os.environ["LABTOOL_ROOT"], "lib", "config.json")
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    with open(config) as f:
        assert base64.b64decode(json.load(f)["auths"][host]["auth"]).decode() == f"{USER}:{PASSWORD}"

    pushed = run("push", name)
    assert pushed.returncode == 0, pushed.stderr
    assert skopeo("inspect", "--tls-verify=false", f"docker://{name}").returncode != 0     # skopeo needs creds
    inspect = skopeo("inspect", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", f"docker://{name}")
    assert inspect.returncode == 0, inspect.stderr

    assert in_root(other_root, "login", "-u", USER, "-p", PASSWORD, host).returncode == 0
    pulled = in_root(other_root, "pull", name)
    assert pulled.returncode == 0, pulled.stderr
    assert in_root(other_root, "run", "--rm", name, "true").returncode == 0
    out = in_root(other_root, "logout", host)
    assert out.stdout == f"Removing login credentials for {host}\n"
    assert run("logout", host).returncode == 0
    assert host not in open(config).read()


# --- Bearer tokens: a real registry and a token server of our own ------------------------

class TokenServer:
    """What a registry's auth service does: check Basic credentials, and answer with a JWT
    (RS256, signed by ``openssl dgst -sha256 -sign``) granting the scope asked for. The
    certificate goes in the JWT header (x5c); the registry trusts it via rootcertbundle."""

    def __init__(self, directory):
        self.key, self.cert = directory / "token.key", directory / "token.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=labtool-test-token-server", "-keyout", self.key, "-out", self.cert],
                       capture_output=True, check=True)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"], capture_output=True,
                             check=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                self.send_answer(*server.answer(self.path, self.headers.get("Authorization", "")))

            def send_answer(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(body).encode())

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path, authorization):
        from urllib.parse import parse_qs, urlparse

        query = parse_qs(urlparse(path).query)
        user = None
        if authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if (user, password) != (USER, PASSWORD):
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "incorrect username or password"}]}
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            if user:                          # the learner may do anything; anonymous nothing
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        return 200, {"token": self.jwt(user or "", query.get("service", [""])[0], access)}

    def jwt(self, subject, service, access):
        def b64(data):
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": "labtool-test-token-server", "sub": subject, "aud": service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input.encode(),
                                   capture_output=True, check=True).stdout
        return signing_input + "." + b64(signature)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def token_registry(tmp_path):
    tokens = TokenServer(tmp_path)
    try:
        with localregistry.LocalRegistry(storage=str(tmp_path / "storage"), config=os.path.join(CONFIGS, "token.yml"),
                                         extra={"@REALM@": tokens.realm, "@CERT@": tokens.cert}) as reg:
            yield reg, tokens
    finally:
        tokens.stop()


def test_bearer_token_login_push_pull(token_registry, other_root, run):
    reg, tokens = token_registry
    name = f"{reg.host}/team/busybox:latest"
    tag("busybox", name)
    anonymous = in_root(other_root, "pull", name)             # an anonymous token grants nothing here
    assert anonymous.returncode == 125 and "pull access denied" in anonymous.stderr
    assert any("scope=repository%3Ateam%2Fbusybox%3Apull" in r for r in tokens.requests)

    wrong = run("login", "-u", USER, "-p", "nope", reg.host)
    assert (wrong.returncode, wrong.stderr.splitlines()[-1]) == (
        125, f"labtool: login to {reg.host} failed: unauthorized: incorrect username or password")
    assert run("login", "-u", USER, "--password-stdin", reg.host, input=PASSWORD).returncode == 0

    tokens.requests.clear()
    pushed = run("push", name)
    assert pushed.returncode == 0, pushed.stderr
    assert "Pushed" in pushed.stdout
    # one token for the whole push: cached per scope, reused for every blob and the manifest
    assert len(tokens.requests) == 1 and "pull%2Cpush" in tokens.requests[0]

    inspect = skopeo("inspect", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", f"docker://{name}")
    assert inspect.returncode == 0, inspect.stderr
    assert in_root(other_root, "login", "-u", USER, "-p", PASSWORD, reg.host).returncode == 0
    pulled = in_root(other_root, "pull", name)
    assert pulled.returncode == 0, pulled.stderr
    ran = in_root(other_root, "run", "--rm", name, "echo", "token ok")
    assert ran.stdout == "token ok\n"
    assert run("logout", reg.host).returncode == 0


def test_notebook_registry_and_its_check(run, capsys):
    from labtool import check, notebook

    reg = notebook.local_registry()
    try:
        assert reg.host.startswith("127.0.0.1:")
        with pytest.raises(AssertionError, match="has no course/busybox:v1"):
            check.pushed(reg.host, "course/busybox:v1")
        tag("busybox", f"{reg.host}/course/busybox:v1")
        assert run("push", f"{reg.host}/course/busybox:v1").returncode == 0
        check.pushed(reg.host, "course/busybox:v1")
        assert capsys.readouterr().out.splitlines()[-1].startswith("✔ ")
    finally:
        reg.stop()
    assert reg.process.poll() is not None and not os.path.exists(reg.workdir)


def test_pull_a_manifest_list_picks_this_machine(registry, other_root, run):
    """An OCI index (a "multi-arch" image): pull takes the linux manifest for this machine."""
    import hashlib
    import platform
    import urllib.request

    from labtool.images import registry as client

    here = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
    other = "arm64" if here == "amd64" else "amd64"
    run("run", "--rm", "hello-world")                   # made if missing
    for image in ("busybox", "hello-world"):
        tag(image, f"{registry.host}/multi:{image}")
        assert run("push", f"{registry.host}/multi:{image}").returncode == 0
    entries = []
    for image, arch in (("hello-world", other), ("busybox", here)):
        digest = store.find(image).manifest
        entries.append({"mediaType": client.OCI_MANIFEST, "digest": digest, "size": len(store.read_blob(digest)),
                        "platform": {"os": "linux", "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": client.OCI_INDEX, "manifests": entries}).encode()
    req = urllib.request.Request(f"http://{registry.host}/v2/multi/manifests/both", data=index, method="PUT",
                                 headers={"Content-Type": client.OCI_INDEX})
    urllib.request.urlopen(req, timeout=10).close()

    p = in_root(other_root, "pull", f"{registry.host}/multi:both")
    assert p.returncode == 0, p.stderr
    assert f"Digest: sha256:{hashlib.sha256(index).hexdigest()}" in p.stdout     # the index names the image
    ran = in_root(other_root, "run", "--rm", f"{registry.host}/multi:both", "echo", "busybox it is")
    assert ran.stdout == "busybox it is\n"
