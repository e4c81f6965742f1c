"""A registry client: ``pull``, ``push``, ``login``, ``logout`` over the Docker Registry HTTP API v2.

A registry is a web server that stores two kinds of things per repository (the OCI
distribution-spec, and Docker's "Registry HTTP API V2" it grew from):

    GET/HEAD/PUT /v2/<name>/manifests/<tag or digest>   the manifest: which config, which layers
    GET/HEAD     /v2/<name>/blobs/<digest>              a blob: a config or a gzip'd layer tar
    POST         /v2/<name>/blobs/uploads/              start an upload; answers 202 + Location
    PUT          <Location>?digest=<digest>             the blob's bytes, in one request
    GET          /v2/                                   "do you speak v2, and who are you?"

Everything is named by the sha256 of its bytes, so a client checks each download by
hashing it, and skips a layer the other side already has (``Already exists`` when pulling,
``Layer already exists`` when pushing).

Authentication starts with a 401 answer whose ``WWW-Authenticate`` header says how:

    Basic realm="..."                                send ``Authorization: Basic base64(user:pass)``
    Bearer realm="URL",service="S",scope="repository:NAME:pull,push"
                                                     GET URL?service=S&scope=... (with Basic
                                                     credentials, or none: anonymous), get a
                                                     JSON {"token": ...}, then send
                                                     ``Authorization: Bearer <token>``

Tokens are kept per registry and scope for the run of one command. ``labtool login``
stores ``user:password`` base64-encoded (not encrypted!) under ``auths`` in labtool's
config file, the way Docker's ``~/.docker/config.json`` does without a credential helper.

Plain HTTP is used for registries on 127.0.0.1, ::1 and localhost (Docker treats those
as insecure registries too); HTTPS for every other host.

Only urllib from the standard library: no new dependency.
"""

import base64
import hashlib
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from labtool import units
from labtool.errors import LabtoolError, UsageError
from labtool.images import reference, store

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
LISTS = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join(MANIFESTS + LISTS)
TIMEOUT = 30          # seconds without an answer before giving up


class RegistryError(LabtoolError):
    """The registry answered with an error, or could not be reached."""


# --- credentials ------------------------------------------------------------------------

def _write_config(config):
    path = reference.config_file()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)   # root only: it holds passwords
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=1)
    os.replace(tmp, path)


def credentials(host):
    """(user, password) stored by ``labtool login`` for ``host``, or None."""
    entry = reference.read_config().get("auths", {}).get(host)
    if not entry or "auth" not in entry:
        return None
    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    return user, password


def login(host, user, password):
    """Check ``user``/``password`` against the registry at ``host``; store them if they work.
    Returns the path of the file they were stored in."""
    if not user or not password:
        raise UsageError("login needs a username and a password")
    client = Client(host, "", creds=(user, password))
    client.login()
    config = reference.read_config()
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    config.setdefault("auths", {})[host] = {"auth": token}
    _write_config(config)
    return reference.config_file()


def logout(host):
    """Forget the credentials for ``host``; False if there were none."""
    config = reference.read_config()
    if host not in config.get("auths", {}):
        return False
    del config["auths"][host]
    _write_config(config)
    return True


def resolve_host(server):
    """``labtool login [SERVER]``: the host named, or the default registry."""
    server = server or reference.default_registry()
    if not server:
        raise UsageError("no registry given and none configured: labtool login HOST[:PORT] "
                         "(or set LABTOOL_REGISTRY)")
    for prefix in ("http://", "https://"):
        if server.startswith(prefix):
            server = server[len(prefix):]
    return server.rstrip("/")


# --- HTTP with the registry's authentication challenges -------------------------------

def _scheme(host):
    """http for a registry on this machine's loopback (as Docker's insecure default), else https."""
    name = urllib.parse.urlsplit("//" + host).hostname or ""
    return "http" if name in ("localhost", "::1") or name.startswith("127.") else "https"


def _parse_challenge(header):
    """``Bearer realm="x",service="y"`` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = header.strip().partition(" ")
    params, key, value, i = {}, "", "", 0
    while i < len(rest):
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip(" ,")
        i = eq + 1
        if rest[i:i + 1] == '"':
            end = rest.find('"', i + 1)
            end = len(rest) if end < 0 else end
            value, i = rest[i + 1:end], end + 1
        else:
            end = rest.find(",", i)
            end = len(rest) if end < 0 else end
            value, i = rest[i:end].strip(), end
        params[key.lower()] = value
    return scheme.lower(), params


def _error_text(body):
    """The registry's JSON error body -> ``code: message`` (as the docker CLI prints it)."""
    try:
        errors = json.loads(body)["errors"]
        return "; ".join(f"{e.get('code', '').lower().replace('_', ' ')}: {e.get('message', '')}" for e in errors)
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace").strip()[:200]


class Response:
    def __init__(self, status, headers, body=b"", stream=None):
        self.status, self.headers, self.body, self.stream = status, headers, body, stream


class Client:
    """One registry, one repository: sends requests and answers its auth challenges."""

    def __init__(self, host, repository, actions="pull", creds=None):
        self.host, self.repository = host, repository
        self.base = f"{_scheme(host)}://{host}"
        self.creds = creds if creds is not None else credentials(host)
        self.scope = f"repository:{repository}:{actions}" if repository else ""
        self.authorization = None          # the header value that worked last
        self.tokens = {}                   # (realm, service, scope) -> bearer token

    # One request. A 401 is answered once with the credentials or token its challenge asks for.
    def request(self, method, path, data=None, headers=None, stream=False, ok=(200,)):
        url = path if path.startswith(("http://", "https://")) else self.base + path
        response = self._send(method, url, data, headers, stream)
        if response.status == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            self.authorization = self._answer(challenge, url)
            response = self._send(method, url, data, headers, stream)
        if response.status == 401:
            raise Unauthorized(response.body)
        if response.status not in ok:
            raise HTTPFailure(response.status, response.body, method, url)
        return response

    def _send(self, method, url, data, headers, stream):
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        if self.authorization:
            # unredirected: a blob GET may be redirected to a storage server that must not
            # see the registry's credentials
            req.add_unredirected_header("Authorization", self.authorization)
        try:
            resp = urllib.request.urlopen(req, timeout=TIMEOUT)
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers, e.read())
        except urllib.error.URLError as e:
            raise RegistryError(_unreachable(self.host, url, e.reason)) from None
        except (OSError, socket.timeout) as e:
            raise RegistryError(_unreachable(self.host, url, e)) from None
        if stream:
            return Response(resp.status, resp.headers, stream=resp)
        with resp:
            return Response(resp.status, resp.headers, resp.read())

    def _answer(self, challenge, url):
        """The Authorization header for a 401's challenge (Basic, or Bearer via a token)."""
        scheme, params = _parse_challenge(challenge)
        if scheme == "basic":
            if not self.creds:
                raise Unauthorized(b"", need_login=True)
            return "Basic " + base64.b64encode(":".join(self.creds).encode()).decode()
        if scheme == "bearer" and "realm" in params:
            return "Bearer " + self._token(params)
        raise RegistryError(f"{url}: cannot answer the registry's challenge '{challenge}'")

    def _token(self, params):
        # Ask for what this command will do (pull, or pull+push) at once, as docker does:
        # one token then serves every request of the command, whatever the first 401 named.
        scope = self.scope or params.get("scope", "")
        key = (params["realm"], params.get("service", ""), scope)
        if key not in self.tokens:
            query = {k: v for k, v in (("service", params.get("service")), ("scope", scope)) if v}
            url = params["realm"] + ("&" if "?" in params["realm"] else "?") + urllib.parse.urlencode(query)
            req = urllib.request.Request(url)
            if self.creds:
                req.add_header("Authorization", "Basic " + base64.b64encode(":".join(self.creds).encode()).decode())
            try:
                with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                    answer = json.loads(resp.read())
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    raise Unauthorized(e.read(), token_server=True) from None
                raise RegistryError(f"token server {params['realm']}: {e.code} {_error_text(e.read())}") from None
            except urllib.error.URLError as e:
                raise RegistryError(_unreachable(params["realm"], url, e.reason)) from None
            except ValueError:
                raise RegistryError(f"token server {params['realm']}: the answer is not JSON") from None
            token = answer.get("token") or answer.get("access_token")
            if not token:
                raise RegistryError(f"token server {params['realm']}: the answer has no token")
            self.tokens[key] = token
        return self.tokens[key]

    def login(self):
        """GET /v2/ with the credentials: succeeds if they are accepted (or none are needed)."""
        try:
            self.request("GET", "/v2/")
        except Unauthorized as e:
            raise RegistryError(f"login to {self.host} failed: {e.reason}") from None


class Unauthorized(RegistryError):
    def __init__(self, body, need_login=False, token_server=False):
        text = _error_text(body) if body else ""
        if need_login or not text:
            text = "unauthorized: authentication required"
        if token_server and "incorrect" not in text:
            text = "unauthorized: incorrect username or password"
        self.reason = text
        super().__init__(text)


class HTTPFailure(RegistryError):
    def __init__(self, status, body, method, url):
        self.status, self.text = status, _error_text(body) if body else ""
        super().__init__(f"{method} {url}: {status} {self.text}".rstrip())


def _unreachable(host, url, reason):
    reason = getattr(reason, "strerror", None) or str(reason)
    return f"cannot reach the registry {host} ({url}): {str(reason).lower()}"


# --- pull -------------------------------------------------------------------------------

def _arch():
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


def _manifest(client, ref):
    """GET the manifest of ``ref``; for a list/index pick linux on this machine's arch.
    Returns (media type, bytes, digest)."""
    path = f"/v2/{client.repository}/manifests/{ref.wanted}"
    try:
        resp = client.request("GET", path, headers={"Accept": ACCEPT})
    except HTTPFailure as e:
        if e.status == 404:
            raise RegistryError(f"manifest for {ref.local} not found: {e.text or 'manifest unknown'}") from None
        raise
    except Unauthorized:
        raise RegistryError(f"pull access denied for {ref.name}, repository does not exist or may "
                            f"require 'labtool login {ref.host}'") from None
    body = resp.body
    media = resp.headers.get("Content-Type", "").split(";")[0].strip() or json.loads(body).get("mediaType", "")
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    if ref.digest and digest != ref.digest:
        raise RegistryError(f"manifest for {ref.local}: its content has digest {digest}")
    if media in LISTS:
        wanted = [m for m in json.loads(body).get("manifests", [])
                  if m.get("platform", {}).get("os") == "linux"
                  and m.get("platform", {}).get("architecture") == _arch()]
        if not wanted:
            raise RegistryError(f"no matching manifest for linux/{_arch()} in the manifest list of {ref.local}")
        sub = reference.Reference(ref.host, ref.repository, "", wanted[0]["digest"], ref.local)
        _media, body, _digest = _manifest(client, sub)
        return _media, body, digest          # the list's digest is what names the image
    if media not in MANIFESTS:
        raise RegistryError(f"{ref.local}: unsupported manifest type '{media}'")
    return media, body, digest


def _download(client, descriptor, directory, say, tty=False):
    """GET one blob into ``directory``, checking its sha256 as it streams; return the path.
    On a terminal, a ``Downloading 1.2MB/3.4MB`` line is rewritten as the bytes come."""
    digest = descriptor["digest"]
    short = digest.split(":", 1)[1][:12]
    resp = client.request("GET", f"/v2/{client.repository}/blobs/{digest}", stream=True)
    path = os.path.join(directory, digest.split(":", 1)[1])
    sha, size = hashlib.sha256(), 0
    with resp.stream, open(path, "wb") as f:
        while True:
            chunk = resp.stream.read(1 << 20)
            if not chunk:
                break
            sha.update(chunk)
            size += len(chunk)
            f.write(chunk)
            if say and tty:
                total = descriptor.get("size", 0)
                say(f"\r{short}: Downloading  {units.human_size(size)}/{units.human_size(total)}", end="")
    if say:
        say(("\r\033[K" if tty else "") + f"{short}: Verifying Checksum")
    if "sha256:" + sha.hexdigest() != digest:
        raise RegistryError(f"blob {digest}: the bytes received have digest sha256:{sha.hexdigest()} "
                            f"(a corrupt or tampered download); nothing was stored")
    return path


def pull(ref_text, out=None):
    """Pull an image from its registry into the store; return the ``store.Image``.

    Progress goes to ``out`` (stdout by default; ``labtool run`` passes stderr), in
    Docker's words. Blobs are downloaded into a temporary directory and checked first;
    only when every one is good does anything enter the store.
    """
    out = out or sys.stdout
    ref = reference.parse(ref_text)
    if not ref.host:
        raise UsageError(f"no registry to pull '{ref_text}' from: name one (HOST[:PORT]/{ref_text}) "
                         "or set LABTOOL_REGISTRY=HOST[:PORT]")

    def say(line, end="\n"):
        print(line, file=out, flush=True, end=end)

    tty = out.isatty()
    if not ref.digest and ":" not in ref_text.rsplit("/", 1)[-1]:
        say("Using default tag: latest")
    client = Client(ref.host, ref.repository, "pull")
    media, manifest_bytes, digest = _manifest(client, ref)
    manifest = json.loads(manifest_bytes)
    say(f"{ref.wanted}: Pulling from {ref.repository}")
    existing = store.find(ref.local)
    if existing is not None and store.repo_digest(ref.local) == digest:
        say(f"Digest: {digest}")
        say(f"Status: Image is up to date for {ref.local}")
        return existing
    tmp = tempfile.mkdtemp(prefix=".pull-", dir=store.staging_dir())
    try:
        config_path = _download(client, manifest["config"], tmp, None)
        with open(config_path, "rb") as f:
            config_bytes = f.read()
        layers = []
        for layer in manifest["layers"]:
            short = layer["digest"].split(":", 1)[1][:12]
            if store.has_blob(layer["digest"]):
                say(f"{short}: Already exists")
                layers.append((layer, None))
            else:
                say(f"{short}: Pulling fs layer")
                layers.append((layer, short))
        for layer, short in layers:
            if short:
                _download(client, layer, tmp, say, tty)
                say(f"{short}: Download complete")
        image = store.import_pulled(ref.local, media, manifest_bytes, config_bytes, tmp, digest,
                                    progress=lambda blob: say(f"{blob.split(':', 1)[1][:12]}: Pull complete"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"Digest: {digest}")
    say(f"Status: Downloaded newer image for {ref.local}")
    return image


# --- push -------------------------------------------------------------------------------

def push(ref_text, out=None):
    """Push a local image to the registry its name says; return the manifest's digest."""
    out = out or sys.stdout

    def say(line):
        print(line, file=out, flush=True)

    ref = reference.parse(ref_text)
    if not ref.host:
        raise UsageError(f"no registry to push '{ref_text}' to: tag it with one first "
                         f"(HOST[:PORT]/{ref_text}) or set LABTOOL_REGISTRY=HOST[:PORT]")
    if ref.digest:
        raise UsageError(f"cannot push a digest reference '{ref_text}': push a tag")
    image = store.find(ref.local)
    if image is None:
        raise LabtoolError(f"An image does not exist locally with the tag: {ref.name}")
    media, manifest_bytes, blobs = store.image_blobs(image)
    say(f"The push refers to repository [{ref.name}]")
    client = Client(ref.host, ref.repository, "pull,push")
    layers = blobs[1:]
    for descriptor in layers:
        say(f"{descriptor['digest'].split(':', 1)[1][:12]}: Preparing")
    for descriptor in reversed(layers):                   # the top layer first, as docker shows
        short = descriptor["digest"].split(":", 1)[1][:12]
        say(f"{short}: {'Layer already exists' if _upload(client, descriptor) else 'Pushed'}")
    _upload(client, blobs[0])                              # the config
    try:
        resp = client.request("PUT", f"/v2/{ref.repository}/manifests/{ref.tag}", data=manifest_bytes,
                              headers={"Content-Type": media}, ok=(201, 200))
    except HTTPFailure as e:
        raise RegistryError(f"push of {ref.local} failed: {e.text or e.status}") from None
    digest = resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    say(f"{ref.tag}: digest: {digest} size: {len(manifest_bytes)}")
    return digest


def _upload(client, descriptor):
    """Upload one blob unless the registry has it; True if it was there already."""
    digest, name = descriptor["digest"], client.repository
    try:
        client.request("HEAD", f"/v2/{name}/blobs/{digest}")
        return True
    except HTTPFailure as e:
        if e.status != 404:
            raise
    except Unauthorized as e:
        raise RegistryError(f"push access denied for {client.host}/{name}: {e.reason} "
                            f"(try 'labtool login {client.host}')") from None
    try:
        resp = client.request("POST", f"/v2/{name}/blobs/uploads/", data=b"", ok=(202,))
        location = urllib.parse.urljoin(client.base + "/", resp.headers["Location"])
        location += ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
        client.request("PUT", location, data=store.read_blob(digest),
                       headers={"Content-Type": "application/octet-stream"}, ok=(201,))
    except Unauthorized as e:
        raise RegistryError(f"push access denied for {client.host}/{name}: {e.reason} "
                            f"(try 'labtool login {client.host}')") from None
    return False
