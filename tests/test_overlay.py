"""Step 04: overlayfs root, copy-up and whiteouts on disk, diff, commit, --read-only, --tmpfs."""

import errno
import json
import os
import stat
import subprocess
import sys
import tarfile
import time
import types

from conftest import REPO
from labtool import overlay
from labtool.engine import containers


def image_layers():
    from labtool.images import store

    return store.find("busybox").layers


def containers_dir():
    return os.path.join(os.environ["LABTOOL_ROOT"], "lib", "containers")


def snapshot(top):
    """Every path below ``top`` with its type, mode, size, mtime and content digest."""
    import hashlib

    seen = {}
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest = ""
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            seen[os.path.relpath(path, top)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return seen


CHANGES = ("echo hi > /hello; echo more >> /etc/passwd; rm /etc/group; "
           "rm -rf /var/spool; mkdir /var/spool; touch /var/spool/new")
EXPECTED_DIFF = ["C /etc", "D /etc/group", "C /etc/passwd", "A /hello", "C /var", "C /var/spool",
                 "D /var/spool/cron", "A /var/spool/new"]


def test_root_is_an_overlay_of_the_image_layers(run, names):
    name = names("ov")
    p = run("run", "--name", name, "busybox", "grep", " / ", "/proc/mounts")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("overlay / overlay")
    s = overlay.storage(name)
    assert s["Driver"] == "overlay"
    assert s["LowerDir"][:-1] == image_layers()          # the image's, shared ...
    assert s["LowerDir"][-1].endswith("/init")                      # ... and the init layer on top
    assert os.listdir(s["UpperDir"]) == []                          # no changes yet


def test_every_container_shares_one_init_layer(run, names, labtool_root):
    """The init layer is the same for every container: made once (lib/init), never written."""
    first, second = names("init-a"), names("init-b")
    for name in (first, second):
        assert run("run", "--name", name, "busybox", "true").returncode == 0
    init = overlay.storage(first)["LowerDir"][-1]
    assert init == overlay.storage(second)["LowerDir"][-1] == os.path.join(labtool_root, "lib", "init")
    assert sorted(os.listdir(init)) == ["dev", "etc", "proc", "sys"]
    assert sorted(os.listdir(os.path.join(init, "etc"))) == ["hostname", "hosts", "resolv.conf"]
    assert all(os.path.getsize(os.path.join(init, "etc", f)) == 0 for f in os.listdir(os.path.join(init, "etc")))
    p = run("run", "--rm", "busybox", "sh", "-c", "echo changed > /etc/motd")
    assert p.returncode == 0, p.stderr
    assert not os.path.exists(os.path.join(init, "etc", "motd"))       # changes go to the upper layer


def test_only_a_run_rm_upper_layer_is_volatile(run, names):
    """--rm: overlayfs never syncs what the container wrote (it is deleted at the end)."""
    p = run("run", "--rm", "busybox", "grep", " / ", "/proc/mounts")
    assert p.returncode == 0 and p.stdout.startswith("overlay / overlay") and "volatile" in p.stdout, p
    p = run("run", "--name", names("keep"), "busybox", "grep", " / ", "/proc/mounts")
    assert p.returncode == 0 and p.stdout.startswith("overlay / overlay") and "volatile" not in p.stdout, p


def test_copy_up_lands_in_the_upperdir_and_the_image_stays_as_it_was(run, names):
    layer = image_layers()[0]
    before = snapshot(layer)
    name = names("copyup")
    assert run("run", "--name", name, "busybox", "sh", "-c", CHANGES).returncode == 0
    upper = overlay.storage(name)["UpperDir"]
    with open(os.path.join(upper, "etc", "passwd")) as f:
        copied = f.read()
    with open(os.path.join(layer, "etc", "passwd")) as f:
        original = f.read()
    assert copied == original + "more\n"                            # the whole file, copied up
    assert open(os.path.join(upper, "hello")).read() == "hi\n"
    assert snapshot(layer) == before                                # the image did not change


def test_a_deleted_file_is_a_whiteout_and_a_remade_directory_is_opaque(run, names):
    name = names("wh")
    assert run("run", "--name", name, "busybox", "sh", "-c", CHANGES).returncode == 0
    upper = overlay.storage(name)["UpperDir"]
    st = os.lstat(os.path.join(upper, "etc", "group"))
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0
    assert os.getxattr(os.path.join(upper, "var", "spool"), "trusted.overlay.opaque") == b"y"


def test_diff_lists_what_changed_like_docker(run, names):
    name = names("diff")
    assert run("run", "--name", name, "busybox", "sh", "-c", CHANGES).returncode == 0
    p = run("diff", name)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == EXPECTED_DIFF
    fresh = names("fresh")
    assert run("run", "--name", fresh, "busybox", "true").returncode == 0
    assert run("diff", fresh).stdout == ""                          # mount points are not changes


def test_vfs_driver_copies_and_finds_the_same_changes(run, names):
    env = dict(os.environ, LABTOOL_STORAGE="vfs")
    name = names("vfs")
    p = run("run", "--explain", "--name", name, "busybox", "sh", "-c", CHANGES + "; grep ' / ' /proc/mounts",
            env=env)
    assert p.returncode == 0, p.stderr
    assert "vfs driver: copy" in p.stderr and "LABTOOL_STORAGE=vfs" in p.stderr
    assert not p.stdout.startswith("overlay")
    assert overlay.storage(name)["Driver"] == "vfs"
    assert run("diff", name).stdout.splitlines() == EXPECTED_DIFF    # by comparing, file by file


def test_without_overlayfs_the_runtime_falls_back_to_vfs_and_says_why(tmp_path, monkeypatch, capfd):
    from labtool import explain, syscalls

    def no_overlay(source, target, fstype=None, flags=0, data=None):
        raise OSError(errno.ENODEV, "mount: No such device")

    monkeypatch.setattr(syscalls, "mount", no_overlay)
    monkeypatch.setattr(explain, "enabled", True)
    image = types.SimpleNamespace(layers=image_layers(), id="sha256:x", ref="busybox:latest",
                                  manifest="sha256:y")
    spec = types.SimpleNamespace(mounts=[], volumes_from=[], read_only=False)
    c = types.SimpleNamespace(dir=str(tmp_path), rootfs=str(tmp_path / "rootfs"), image=image, spec=spec,
                              namespaces={"mnt": None}, storage="overlay", mounts=[])
    overlay.prepare(c)
    assert c.storage == "vfs"
    assert os.path.isfile(tmp_path / "rootfs" / "bin" / "busybox")
    assert "overlay cannot be mounted here: No such device" in capfd.readouterr().err


def test_commit_makes_an_image_that_runs_with_the_changes(run, names, images):
    layer = image_layers()[0]
    before = snapshot(layer)
    name = names("commit")
    assert run("run", "--name", name, "busybox", "sh", "-c", CHANGES).returncode == 0
    p = run("commit", name, images("committed:v1"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("sha256:")
    look = "cat /hello; ls /etc/group; ls /var/spool; tail -1 /etc/passwd"
    for env in (None, dict(os.environ, LABTOOL_STORAGE="vfs")):        # both drivers read the new layer
        p = run("run", "--rm", "committed:v1", "sh", "-c", look, env=env)
        assert p.stdout.splitlines() == ["hi", "new", "more"], (env, p.stdout, p.stderr)
        assert "/etc/group: No such file or directory" in p.stderr
    assert snapshot(layer) == before
    assert any(line.split()[:2] == ["committed", "v1"] for line in run("images").stdout.splitlines())
    names_in_layer = _top_layer_names("committed:v1")
    assert "etc/.wh.group" in names_in_layer                       # OCI whiteouts in the tar
    assert "var/spool/.wh..wh..opq" in names_in_layer


def _top_layer_names(ref):
    from labtool.images import store

    image = store.find(ref)
    manifest = json.loads(store.read_blob(image.manifest))
    path = os.path.join(os.environ["LABTOOL_ROOT"], "lib", "images", "blobs", "sha256",
                        manifest["layers"][-1]["digest"].split(":")[1])
    with tarfile.open(path) as tar:
        return tar.getnames()


def test_commit_keeps_the_containers_command_as_docker_does(run, names, images):
    name = names("cmd")
    assert run("run", "--name", name, "busybox", "sh", "-c", "echo made > /m; cat /m").returncode == 0
    assert run("commit", name, images("with-cmd")).returncode == 0
    assert run("run", "--rm", "with-cmd").stdout == "made\n"


def test_read_only_root_refuses_writes_but_dev_shm_proc_and_tmpfs_work(run):
    p = run("run", "--rm", "--read-only", "--tmpfs", "/run", "busybox", "sh", "-c",
            "touch /x; touch /tmp/x; echo ok > /dev/shm/x && cat /dev/shm/x; touch /run/x && echo run-ok; "
            "cat /proc/1/comm; grep ' / ' /proc/mounts")
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("Read-only file system") == 2          # EROFS, for / and /tmp
    lines = p.stdout.splitlines()
    assert lines[:3] == ["ok", "run-ok", "sh"]
    assert lines[3].split()[3].startswith("ro,")


def test_tmpfs_takes_options_and_is_noexec_by_default(run):
    p = run("run", "--rm", "--tmpfs", "/run:size=1m,mode=1777", "busybox", "sh", "-c",
            "grep ' /run ' /proc/mounts; cp /bin/busybox /run/true; /run/true")
    options = p.stdout.split()[3].split(",")
    assert "noexec" in options and "nosuid" in options and "size=1024k" in options
    assert p.returncode == 126                                    # noexec: Permission denied
    p = run("run", "--rm", "--tmpfs", "/run:exec", "busybox", "sh", "-c", "cp /bin/busybox /run/true; /run/true")
    assert p.returncode == 0, p.stderr


def test_upto_overlay_has_mounts_and_earlier_steps_refuse_them(run, tmp_path):
    assert run("run", "--rm", "--upto", "overlay", "-v", f"{tmp_path}:/d", "busybox", "true").returncode == 0
    p = run("run", "--rm", "--upto", "namespaces", "--read-only", "busybox", "true")
    assert p.returncode == 125 and p.stderr.startswith("labtool: ") and "step 04" in p.stderr


def test_explain_narrates_the_mounts(run, tmp_path):
    p = run("run", "--rm", "--explain", "--read-only", "--tmpfs", "/run", "-v", f"{tmp_path}:/d:ro",
            "-v", "/anon", "busybox", "true")
    assert p.returncode == 0, p.stderr
    for words in ("mount -t overlay", "volume ", f"mount --bind {tmp_path} <rootfs>/d",
                  "mount -o remount,bind,ro <rootfs>/d", "mount -t tmpfs", "mount --rbind <rootfs> <rootfs>",
                  "mount -o remount,bind,ro <rootfs> "):
        assert words in p.stderr, words
    # in the child, before pivot_root
    assert p.stderr.index("remount,bind,ro <rootfs> ") < p.stderr.index("pivot_root")


def test_info_shows_driver_cgroups_kernel_and_root(run, labtool_root):
    p = run("info")
    assert p.returncode == 0, p.stderr
    info = dict(line.split(": ", 1) for line in p.stdout.splitlines())
    assert info["Storage Driver"] == "overlay"
    assert info["Cgroup Version"] in ("v1", "v1 (hybrid)", "v2")
    assert info["Kernel Version"] == os.uname().release
    assert info["Labtool Root Dir"] == os.path.join(labtool_root, "lib")
    assert int(info["Images"]) >= 1
    assert run("info", env=dict(os.environ, LABTOOL_STORAGE="vfs")).stdout.count("Storage Driver: vfs") == 1


def test_rm_refuses_a_running_container_and_rm_f_kills_it(run):
    name = f"running-{os.getpid()}"
    p = subprocess.Popen([sys.executable, "-m", "labtool", "run", "--name", name, "-v", "/anon", "busybox",
                          "sleep", "30"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if containers.find(name).running_pid:
                break
        except Exception:
            pass
        time.sleep(0.05)
    record = containers.find(name)
    (volume,) = [m["Name"] for m in record.mounts]
    r = run("rm", name)
    assert r.returncode == 1          # as docker rm: 1 when one of them could not be removed
    assert r.stderr == (f"labtool: You cannot remove a running container {record.id}. Stop the container "
                        "before attempting removal or force remove (rm -f)\n")
    assert run("rm", "-f", "-v", name).stdout == f"{name}\n"
    assert p.wait(timeout=10) == 137
    assert not os.path.exists(os.path.join(containers_dir(), record.id))
    assert volume not in run("volume", "ls").stdout


def test_bad_diff_commit_rm_are_one_line_and_125(run, names, images):
    name = names("bad")
    assert run("run", "--name", name, "busybox", "true").returncode == 0
    for args in (["diff", "nosuch"], ["commit", "nosuch", images("x")], ["commit", name, "Bad Name"], ["rm", "nosuch"]):
        p = run(*args)
        assert p.returncode == (1 if args[0] == "rm" else 125), args    # docker rm says 1
        assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("labtool: "), (args, p.stderr)
