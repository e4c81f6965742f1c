"""The Vagrant route: the Vagrantfile is valid, and provisioning is idempotent.

`vagrant up` itself needs a box and VirtualBox or libvirt, which CI has not; what runs here:
- `vagrant validate --ignore-provider` (Debian's vagrant package; `make test-tools` installs it,
  and .ci/run does that first) on the Vagrantfile, with each box it offers;
- vagrant/provision.sh twice in a row: the second run changes nothing, says nothing but
  "ready", and is quick. (Without --vm: the VM-only parts never run on a CI host.)

The VM's cgroup v2 side is proven by `make test-vm` (vagrant/test-vm.sh), not here.
"""

import os
import shutil
import subprocess
import time

import pytest

from conftest import REPO

VAGRANT_DIR = os.path.join(REPO, "vagrant")
PROVISION = os.path.join(VAGRANT_DIR, "provision.sh")


@pytest.mark.parametrize("box", ["", "ubuntu"])
def test_vagrantfile_validates(tmp_path, box):
    if not shutil.which("vagrant"):
        pytest.skip("vagrant is not installed: `sudo make test-tools` installs Debian's package")
    env = dict(os.environ, LABTOOL_BOX=box,
               VAGRANT_HOME=str(tmp_path / "home"),            # no ~/.vagrant.d on this machine
               VAGRANT_DOTFILE_PATH=str(tmp_path / "dotfile"))  # no vagrant/.vagrant in the checkout
    p = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=VAGRANT_DIR, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "validated successfully" in p.stdout, p.stdout + p.stderr
    assert not os.path.exists(os.path.join(VAGRANT_DIR, ".vagrant"))


def _provision():
    env = {k: v for k, v in os.environ.items() if k not in ("LABTOOL_ROOT", "PYTHONPATH")}
    start = time.monotonic()
    p = subprocess.run(["bash", PROVISION], capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.splitlines(), time.monotonic() - start


def _marks():
    """What a provisioning run would change: packages, the virtualenv, the command, the image."""
    venv = os.environ.get("LABTOOL_VENV", "/opt/labtool/venv")
    paths = ["/var/lib/dpkg/status", os.path.join(venv, ".labtool-provisioned"), "/usr/local/bin/labtool",
             "/var/lib/labtool/images/index.json"]
    return {p: os.lstat(p).st_mtime_ns for p in paths if os.path.lexists(p)}


def test_provision_twice_changes_nothing():
    _provision()                    # `make test` ran it just before: this is quick too
    before = _marks()
    lines, seconds = _provision()
    assert [line.split(":")[1].strip() for line in lines] == ["ready"], lines
    assert _marks() == before
    assert seconds < 20, f"a second provisioning run took {seconds:.1f} s"


def test_provision_refuses_an_unknown_argument():
    p = subprocess.run(["bash", PROVISION, "--nope"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("usage:")
