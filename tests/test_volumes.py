"""Step 04: bind mounts (directory, file, :ro), managed volumes, --volumes-from, rm -v."""

import json
import os
import re

import pytest

from labtool.engine import containers


@pytest.fixture
def host_dir(tmp_path):
    """A host directory with one file, writable by anyone (root of a user namespace too)."""
    d = tmp_path / "host"
    d.mkdir()
    d.chmod(0o777)
    (d / "f.txt").write_text("from the host\n")
    return d


def volume_names(run):
    return run("volume", "ls").stdout.splitlines()[1:]


# --- bind mounts --------------------------------------------------------------------------

def test_bind_mount_shows_host_files_and_writes_reach_the_host(run, host_dir):
    p = run("run", "--rm", "-v", f"{host_dir}:/data", "busybox", "sh", "-c", "cat /data/f.txt; echo back > /data/new")
    assert p.stdout == "from the host\n", p.stderr
    assert (host_dir / "new").read_text() == "back\n"


def test_ro_bind_refuses_writes_with_erofs(run, host_dir):
    p = run("run", "--rm", "-v", f"{host_dir}:/data:ro", "busybox", "sh", "-c",
            "cat /data/f.txt; echo x >> /data/f.txt; touch /data/new")
    assert p.stdout == "from the host\n"
    assert p.stderr.count("Read-only file system") == 2
    assert (host_dir / "f.txt").read_text() == "from the host\n" and not (host_dir / "new").exists()


def test_ro_bind_cannot_be_remounted_rw_inside(run, host_dir):
    """Without CAP_SYS_ADMIN (step 06) the container's root cannot remount its :ro bind."""
    p = run("run", "--rm", "-v", f"{host_dir}:/data:ro", "busybox", "sh", "-c",
            "mount -o remount,rw,bind /data && echo REMOUNTED; touch /data/new")
    assert "REMOUNTED" not in p.stdout and "permission denied" in p.stderr
    assert "Read-only file system" in p.stderr
    assert not (host_dir / "new").exists(), "the container remounted its :ro bind read-write and wrote"


def test_read_only_root_cannot_be_remounted_rw_inside(run):
    p = run("run", "--rm", "--read-only", "busybox", "sh", "-c",
            "mount -o remount,rw,bind / && echo ROOT-RW; touch /x")
    assert "ROOT-RW" not in p.stdout and "Read-only file system" in p.stderr


def test_with_sys_admin_given_back_the_ro_bind_falls(run, host_dir):
    """The other side of the coin: :ro alone is a flag root may change, if it holds CAP_SYS_ADMIN."""
    p = run("run", "--rm", "--cap-add", "SYS_ADMIN", "-v", f"{host_dir}:/data:ro", "busybox", "sh", "-c",
            "mount -o remount,rw,bind /data && touch /data/new")
    assert p.returncode == 0, p.stderr
    assert (host_dir / "new").exists()


def test_ro_bind_is_locked_with_userns(run, host_dir):
    """Made before the container's user namespace: its read-only flag is locked there, even
    for a root that holds CAP_SYS_ADMIN (in its user namespace: given back here on purpose)."""
    p = run("run", "--rm", "--userns", "--cap-add", "SYS_ADMIN", "-v", f"{host_dir}:/data:ro", "busybox", "sh", "-c",
            "mount -o remount,rw,bind /data && echo REMOUNTED; touch /data/new; umount /data && echo GONE; "
            "mount -o remount,rw,bind / && echo ROOT-RW")
    assert p.returncode == 0, p.stderr
    assert "REMOUNTED" not in p.stdout and "GONE" not in p.stdout
    assert "permission denied" in p.stderr                        # EPERM: the flag is locked
    assert "Read-only file system" in p.stderr
    assert not (host_dir / "new").exists()
    p = run("run", "--rm", "--userns", "--cap-add", "SYS_ADMIN", "--read-only", "busybox", "sh", "-c",
            "mount -o remount,rw,bind / && echo ROOT-RW; touch /x")
    assert "ROOT-RW" not in p.stdout and "Read-only file system" in p.stderr


def test_bind_a_single_file_rw_and_ro(run, host_dir):
    p = run("run", "--rm", "-v", f"{host_dir}/f.txt:/etc/motd", "busybox", "sh", "-c",
            "cat /etc/motd; echo added >> /etc/motd")
    assert p.stdout == "from the host\n"
    assert (host_dir / "f.txt").read_text() == "from the host\nadded\n"
    p = run("run", "--rm", "-v", f"{host_dir}/f.txt:/etc/motd:ro", "busybox", "sh", "-c", "echo x >> /etc/motd")
    assert "Read-only file system" in p.stderr


def test_a_missing_host_path_becomes_a_directory_like_docker(run, tmp_path):
    missing = tmp_path / "test.txt"                                # the slide's warning
    p = run("run", "--rm", "-v", f"{missing}:/folder/test.txt", "busybox", "sh", "-c", "test -d /folder/test.txt")
    assert p.returncode == 0, p.stderr
    assert missing.is_dir()


def test_an_image_symlink_never_leads_a_mount_out_of_the_rootfs(run, names, images, host_dir):
    name = names("symlink")
    assert run("run", "--name", name, "busybox", "ln", "-s", "/etc", "/danger").returncode == 0
    assert run("commit", name, images("symlinked")).returncode == 0
    marker = f"/etc/labtool-test-{os.getpid()}"
    p = run("run", "--rm", "-v", f"{host_dir}:/danger/{os.path.basename(marker)}", "symlinked", "cat",
            f"{marker}/f.txt")
    assert p.stdout == "from the host\n", p.stderr                 # the container's /etc ...
    assert not os.path.exists(marker)                              # ... not the host's


# --- managed volumes ---------------------------------------------------------------------

def test_named_volume_persists_across_containers_and_rm(run, names):
    volume = f"persist-{os.getpid()}"
    first = names("writer")
    p = run("run", "--name", first, "-v", f"{volume}:/data", "busybox", "sh", "-c", "echo kept > /data/f")
    assert p.returncode == 0, p.stderr
    assert run("rm", "-v", first).returncode == 0                  # -v: anonymous volumes only
    assert f"local     {volume}" in volume_names(run)
    p = run("run", "--rm", "-v", f"{volume}:/data", "busybox", "cat", "/data/f")
    assert p.stdout == "kept\n"
    assert run("volume", "rm", volume).stdout == f"{volume}\n"


def test_first_use_copies_the_images_files_into_an_empty_volume(run, names):
    volume = f"etc-{os.getpid()}"
    p = run("run", "--rm", "-v", f"{volume}:/etc", "busybox", "sh", "-c",
            "cat /etc/passwd | head -1; echo mine > /etc/mine")
    assert p.stdout == "root:x:0:0:root:/root:/bin/sh\n"
    data = json.loads(run("volume", "inspect", volume).stdout)[0]["Mountpoint"]
    assert sorted(os.listdir(data))[:3] == ["group", "hostname", "hosts"] and os.path.exists(f"{data}/mine")
    os.unlink(f"{data}/passwd")                                  # not empty: no second copy
    p = run("run", "--rm", "-v", f"{volume}:/etc", "busybox", "ls", "/etc/passwd")
    assert p.returncode == 1
    assert run("volume", "rm", volume).returncode == 0


def test_anonymous_volume_is_64_hex_and_rm_v_removes_it(run, names):
    before = set(volume_names(run))
    kept, removed = names("anon-kept"), names("anon-removed")
    for name in (kept, removed):
        assert run("run", "--name", name, "-v", "/data", "busybox", "touch", "/data/f").returncode == 0
    new = set(volume_names(run)) - before
    assert len(new) == 2
    assert all(re.fullmatch(r"local {5}[0-9a-f]{64}", line) for line in new)
    (anon,) = [m["Name"] for m in containers.find(kept).mounts]
    inspect = json.loads(run("volume", "inspect", anon).stdout)[0]
    assert inspect["Labels"] == {"com.docker.volume.anonymous": ""} and inspect["Driver"] == "local"
    assert run("rm", kept).returncode == 0                         # without -v: the volume stays
    assert run("rm", "-v", removed).returncode == 0
    after = set(volume_names(run))
    assert f"local     {anon}" in after and len(after - before) == 1
    assert run("volume", "prune", "-f").stdout.startswith(f"Deleted Volumes:\n{anon}\n")


def test_run_rm_removes_anonymous_volumes_but_not_named_ones(run):
    before = set(volume_names(run))
    volume = f"named-{os.getpid()}"
    assert run("run", "--rm", "-v", "/a", "-v", f"{volume}:/b", "busybox", "true").returncode == 0
    assert set(volume_names(run)) - before == {f"local     {volume}"}
    assert run("volume", "rm", volume).returncode == 0


def test_volumes_from_shares_the_data_and_ro_makes_it_read_only(run, names):
    source = names("data-shared")
    assert run("run", "--name", source, "-v", "/var/lib/data", "busybox", "sh", "-c",
               "echo shared > /var/lib/data/f").returncode == 0
    p = run("run", "--rm", "--volumes-from", source, "busybox", "sh", "-c",
            "cat /var/lib/data/f; echo 2 > /var/lib/data/g")
    assert p.stdout == "shared\n" and p.returncode == 0
    p = run("run", "--rm", "--volumes-from", f"{source}:ro", "busybox", "sh", "-c",
            "cat /var/lib/data/g; touch /var/lib/data/h")
    assert p.stdout == "2\n" and "Read-only file system" in p.stderr


def test_a_volume_in_use_even_by_an_exited_container_cannot_be_removed(run, names):
    volume = f"busy-{os.getpid()}"
    user = names("user")
    assert run("run", "--name", user, "-v", f"{volume}:/d", "busybox", "true").returncode == 0
    p = run("volume", "rm", volume)
    assert p.returncode == 125
    assert p.stderr == f"labtool: remove {volume}: volume is in use - [{containers.find(user).id}]\n"
    assert run("volume", "prune", "-a", "-f").stdout.count(volume) == 0
    assert run("rm", user).returncode == 0
    assert run("volume", "rm", volume).returncode == 0


def test_volume_create_ls_inspect_rm_prune(run):
    volume = f"made-{os.getpid()}"
    assert run("volume", "create", volume).stdout == f"{volume}\n"
    assert run("volume", "create", volume).stdout == f"{volume}\n"   # already there: the same one
    ls = run("volume", "ls").stdout.splitlines()
    assert ls[0] == "DRIVER    VOLUME NAME" and f"local     {volume}" in ls
    inspect = json.loads(run("volume", "inspect", volume).stdout)
    assert inspect[0]["Name"] == volume and inspect[0]["Mountpoint"].endswith(f"/volumes/{volume}/_data")
    assert inspect[0]["Labels"] is None and inspect[0]["Scope"] == "local"
    assert run("volume", "prune", "-f").stdout.count(volume) == 0   # named: only with -a
    assert volume in run("volume", "prune", "-a", "-f").stdout
    p = run("volume", "rm", volume)
    assert p.returncode == 125 and p.stderr == f"labtool: No such volume: {volume}\n"


# --- bad input: one line, 125, nothing made ------------------------------------------------

@pytest.mark.parametrize("flags", [
    ["-v", ":/x"], ["-v", "/a-labtool-test:relative"], ["-v", "/a-labtool-test:/b:xyz"], ["-v", "relative"],
    ["-v", "not/a/name:/x"], ["-v", "/a-labtool-test:/"], ["-v", "/a:/b:ro:x"], ["--tmpfs", "run"],
    ["--tmpfs", "/run:bogus=1"], ["--volumes-from", "nosuch"], ["--volumes-from", "x:rx"],
    ["-v", "/x", "-v", "vol:/x"], ["-v", "bad name:/x"],
])
def test_bad_mount_flags_are_one_line_125_and_nothing_is_made(run, flags, labtool_root):
    top = os.path.join(labtool_root, "lib", "containers")
    containers_before = set(os.listdir(top)) if os.path.isdir(top) else set()
    volumes_before = volume_names(run)
    p = run("run", "--rm", *flags, "busybox", "true")
    assert p.returncode == 125, p.stderr
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("labtool: ") and "Traceback" not in p.stderr
    assert set(os.listdir(top)) == containers_before
    assert volume_names(run) == volumes_before
    assert not os.path.exists("/a-labtool-test")


def test_a_failed_start_with_rm_removes_its_container_and_anonymous_volumes(run, host_dir, labtool_root):
    # (without --rm the container stays, "Created", as in Docker: see test_cli)
    top = os.path.join(labtool_root, "lib", "containers")
    containers_before, volumes_before = set(os.listdir(top)), volume_names(run)
    p = run("run", "--rm", "-v", "/anon", "-v", f"{host_dir}:/d", "busybox", "nosuch")
    assert p.returncode == 127
    p = run("run", "--rm", "-v", "/anon", "-v", f"{host_dir}/f.txt:/bin", "busybox", "true")   # file onto dir
    assert p.returncode == 125 and p.stderr == "labtool: cannot mount a file onto the directory /bin\n"
    assert set(os.listdir(top)) == containers_before
    assert volume_names(run) == volumes_before


def test_a_volume_on_etc_keeps_the_containers_hostname(run, names):
    # labtool's /etc/hostname, hosts and resolv.conf go on after the user's mounts, as in Docker
    name, volume = names("etc"), names("etcvol")
    p = run("run", "--name", name, "--hostname", "lab-host", "-v", f"{volume}:/etc", "busybox",
            "sh", "-c", "cat /etc/hostname; grep -c lab-host /etc/hosts")
    run("rm", "-f", name)
    run("volume", "rm", volume)
    assert p.stdout.split() == ["lab-host", "1"], p.stderr


def test_a_trailing_slash_is_cleaned_from_the_destination(run, names):
    name = names("slash")
    run("run", "--name", name, "-v", "/data/", "busybox", "true")
    mounts = json.loads(run("inspect", name).stdout)[0]["Mounts"]
    run("rm", "-v", name)
    assert [m["Destination"] for m in mounts] == ["/data"]
