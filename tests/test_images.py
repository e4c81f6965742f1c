"""Notebook 04b: the image store and the commands around it: images, history, inspect, tag,
rmi, save and load, run by image id; skopeo and umoci read what labtool writes."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO, labtool
from test_build import ID12, build, built_id, context, one_line_error

STORE = lambda: os.path.join(os.environ["LABTOOL_ROOT"], "lib", "images")   # noqa: E731
LAYERS = lambda: os.path.join(os.environ["LABTOOL_ROOT"], "lib", "layers")  # noqa: E731

SMALL = "FROM busybox\nENV A=1\nRUN echo one > /one\nRUN rm /etc/group && echo two > /two\nCMD [\"cat\", \"/one\"]\n"


@pytest.fixture
def small(tmp_path, images):
    """A four-step image built in this test's context; its name."""
    tag = images("lt-small:v1")
    p = build(context(tmp_path, {"Dockerfile": SMALL}), "-t", tag)
    assert p.returncode == 0, p.stderr
    return tag


def image_id(ref):
    return json.loads(labtool("image", "inspect", ref).stdout)[0]["Id"]


def test_history_names_each_steps_image_and_missing_for_the_rest(small):
    p = labtool("history", small)
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert re.match(r"IMAGE +CREATED +CREATED BY +SIZE +COMMENT$", lines[0])
    rows = lines[1:]
    assert len(rows) == 5                                       # 4 steps + busybox's own entry
    assert rows[0].startswith(image_id(small).split(":")[1][:12])
    assert '/bin/sh -c #(nop)  CMD ["cat" "/one"]' in rows[0] and re.search(r" 0B +$", rows[0])
    assert "/bin/sh -c rm /etc/group && echo two > /two" in rows[1] and re.search(r" [1-9]\d*B +$", rows[1])
    assert "/bin/sh -c #(nop)  ENV A=1" in rows[3]
    assert all(re.match(ID12, r) for r in rows)                 # every step's image is here
    full = labtool("history", "--no-trunc", small).stdout.splitlines()[1]
    assert full.startswith(image_id(small) + " ")
    # an image loaded from elsewhere has its history, but not the images in between
    archive = os.path.join(os.environ["LABTOOL_ROOT"], "small.tar")
    assert labtool("save", "-o", archive, small).returncode == 0
    assert labtool("rmi", small).returncode == 0
    assert labtool("load", "-i", archive).stdout == f"Loaded image: {small}\n"
    rows = labtool("history", small).stdout.splitlines()[1:]
    assert rows[0].startswith(image_id(small).split(":")[1][:12])
    assert all(r.startswith("<missing> ") for r in rows[1:])
    os.unlink(archive)


def test_images_lists_tagged_and_dangling_and_all_with_a(tmp_path, small, images):
    lines = labtool("images").stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    mine = [line for line in lines if line.startswith("lt-small ")]
    assert len(mine) == 1 and mine[0].split()[1] == "v1" and re.search(r"\d(\.\d+)?MB$", mine[0])
    assert labtool("images", "lt-small").stdout.count("\n") == 2
    step_ids = re.findall(rf"^ ---> ({ID12})$", labtool("build", "-t", small,
                                                          str(tmp_path / "ctx")).stdout, re.M)
    everything = labtool("images", "-a").stdout
    assert all(i in everything for i in step_ids)               # -a: the intermediate images too
    assert not any(i in labtool("images").stdout for i in step_ids[1:-1])


def test_tag_and_rmi_follow_dockers_rules(tmp_path, small, names, images):
    the_id = image_id(small)
    other = images("lt-small:other")
    assert labtool("tag", small, other).returncode == 0
    assert image_id(other) == the_id
    # an image with two names: by id it needs -f; by name only the name goes
    p = labtool("rmi", the_id[7:19])
    assert p.returncode == 1 and "image is referenced in multiple repositories" in p.stderr
    assert labtool("rmi", other).stdout == f"Untagged: {other}\n"
    # an image a container uses (even a stopped one) is refused without -f
    name = names("user")
    assert labtool("run", "--name", name, small, "true").returncode == 0
    p = labtool("rmi", small)
    assert p.returncode == 1
    assert re.fullmatch(rf'labtool: conflict: unable to remove repository reference "{small}" \(must force\) - '
                        rf"container {ID12} is using its referenced image {the_id[7:19]}\n", p.stderr)
    assert labtool("rm", name).returncode == 0
    # an image other images are built on: by id, never
    parent = json.loads(labtool("image", "inspect", small).stdout)[0]["Parent"]
    p = labtool("rmi", parent)
    assert "image has dependent child images" in p.stderr
    # rmi by name: untag, delete, and the untagged parents nobody else uses; their layers go
    layers = json.loads(labtool("image", "inspect", small).stdout)[0]["RootFS"]["Layers"]
    p = labtool("rmi", small)
    assert p.returncode == 0
    out = p.stdout.splitlines()
    assert out[0] == f"Untagged: {small}" and out[1] == f"Deleted: {the_id}"
    assert len(out) == 5 and all(line.startswith("Deleted: sha256:") for line in out[1:])   # 4 steps' images
    on_disk = set(os.listdir(LAYERS()))
    assert layers[0].split(":")[1] in on_disk                   # busybox's layer is shared: it stays
    assert not any(layer.split(":")[1] in on_disk for layer in layers[1:])
    blobs = set(os.listdir(os.path.join(STORE(), "blobs", "sha256")))
    assert the_id.split(":")[1] not in blobs
    assert "No such image: lt-small:v1" in one_line_error(labtool("rmi", small), code=1)


def test_rmi_force_keeps_what_a_container_still_needs(small, names):
    name = names("keeper")
    assert labtool("run", "--name", name, small, "true").returncode == 0
    p = labtool("rmi", "-f", small)
    assert p.returncode == 0 and p.stdout == f"Untagged: {small}\n"
    assert labtool("start", "-a", name).returncode == 0         # its image is still there, untagged
    assert labtool("diff", name).returncode == 0


def test_run_takes_an_image_id_full_short_or_with_sha256(small):
    full = image_id(small)
    for ref in (full, full[7:], full[7:19], full[7:12]):
        p = labtool("run", "--rm", ref)
        assert p.returncode == 0 and p.stdout == "one\n", (ref, p.stderr)
    assert "Unable to find image" in one_line_error(labtool("run", "--rm", "0000000000ff"))


def test_inspect_an_image(small):
    by_image = json.loads(labtool("image", "inspect", small).stdout)[0]
    assert json.loads(labtool("inspect", small).stdout)[0] == by_image      # inspect falls back to images
    assert by_image["RepoTags"] == [small]
    assert by_image["Config"]["Env"] and by_image["Config"]["Cmd"] == ["cat", "/one"]
    assert by_image["RootFS"]["Type"] == "layers" and len(by_image["RootFS"]["Layers"]) == 3
    assert [h.get("empty_layer", False) for h in by_image["History"]] == [False, True, False, False, True]
    assert "No such object: nosuch" in one_line_error(labtool("inspect", "nosuch"))
    assert "No such image: nosuch" in one_line_error(labtool("image", "inspect", "nosuch"))


def test_save_and_load_round_trip(tmp_path, small, images):
    archive = str(tmp_path / "small.tar")
    assert labtool("save", "-o", archive, small, "busybox").returncode == 0
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile("index.json").read())
    assert "oci-layout" in names and any(n.startswith("blobs/sha256/") for n in names)
    refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert refs == [small, "busybox:latest"]
    the_id = image_id(small)
    assert labtool("rmi", small).returncode == 0
    p = labtool("load", "-i", archive)
    assert p.stdout == f"Loaded image: {small}\nLoaded image: busybox:latest\n"
    assert image_id(small) == the_id
    assert labtool("run", "--rm", small, "sh", "-c", "cat /one /two; ls /etc/group").stdout == "one\ntwo\n"
    # a damaged archive is refused, and nothing of it enters the store
    bad = str(tmp_path / "bad.tar")
    with tarfile.open(archive) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.startswith("blobs/") and data.startswith(b"{") and b'"history"' in data:
                data = data.replace(b"cat", b"dog")
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    assert "does not match its digest" in one_line_error(labtool("load", "-i", bad))
    assert "not a tar archive" in one_line_error(labtool("load", "-i", __file__))


def test_save_to_stdout_and_load_from_stdin(tmp_path, small):
    """``labtool save IMAGE > FILE`` and ``labtool load < FILE``, as a learner types them from Docker's docs."""
    archive = tmp_path / "piped.tar"
    with open(archive, "wb") as out:
        p = subprocess.run([sys.executable, "-m", "labtool", "save", small], stdout=out, stderr=subprocess.PIPE,
                           cwd=REPO, timeout=60)
    assert p.returncode == 0, p.stderr
    with tarfile.open(archive) as tar:
        assert "index.json" in tar.getnames()
    with open(archive, "rb") as given:
        p = subprocess.run([sys.executable, "-m", "labtool", "load"], stdin=given, capture_output=True, cwd=REPO,
                           timeout=60)
    assert p.returncode == 0 and p.stdout == f"Loaded image: {small}\n".encode(), p.stderr
    p = subprocess.run([sys.executable, "-m", "labtool", "load"], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, cwd=REPO)
    assert "stdin is not a tar archive" in one_line_error(p)


@pytest.mark.skipif(not shutil.which("skopeo") or not shutil.which("umoci"),
                    reason="skopeo and umoci come with vagrant/provision.sh")
def test_skopeo_and_umoci_read_what_labtool_writes(tmp_path, small):
    layout = f"{STORE()}:{small}"
    p = subprocess.run(["skopeo", "inspect", f"oci:{layout}"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    seen = json.loads(p.stdout)
    assert len(seen["Layers"]) == 3 and seen["Env"][0].startswith("PATH=")
    config = json.loads(subprocess.run(["skopeo", "inspect", "--config", f"oci:{layout}"],
                                       capture_output=True, text=True).stdout)
    assert config["config"]["Cmd"] == ["cat", "/one"]
    copied = tmp_path / "copied"
    p = subprocess.run(["skopeo", "copy", "-q", f"oci:{layout}", f"dir:{copied}"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (copied / "manifest.json").exists()
    # umoci unpacks the layers, whiteouts included: /etc/group was deleted by a RUN step
    bundle = tmp_path / "bundle"
    p = subprocess.run(["umoci", "unpack", "--image", layout, str(bundle)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    root = bundle / "rootfs"
    assert (root / "one").read_text() == "one\n" and (root / "two").read_text() == "two\n"
    assert (root / "etc" / "passwd").exists() and not (root / "etc" / "group").exists()
    assert not any(n.startswith(".wh.") for n in os.listdir(root / "etc"))
    # and an archive of labtool save is skopeo's oci-archive
    archive = tmp_path / "a.tar"
    assert labtool("save", "-o", str(archive), small).returncode == 0
    p = subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}:{small}"], capture_output=True, text=True)
    assert p.returncode == 0 and json.loads(p.stdout)["Digest"] == seen["Digest"]


def test_image_prune_removes_dangling_images(tmp_path, images):
    tag = images("lt-prune")
    top = context(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo a > /a\n"})
    first = built_id(build(top, "-t", tag))
    second = built_id(build(top, "-t", tag, "--no-cache"))
    assert first != second
    assert re.search(rf"^<none> +<none> +{first} ", labtool("images").stdout, re.M)   # the old build: dangling
    p = labtool("image", "prune", "-f")
    assert p.returncode == 0
    assert any(line.startswith(f"deleted: sha256:{first}") for line in p.stdout.splitlines())
    assert first not in labtool("images", "-a").stdout and second in labtool("images").stdout
    assert p.stdout.splitlines()[-1].startswith("Total reclaimed space: ")


def test_bad_image_commands_are_one_line(small):
    assert "No such image: nosuch" in one_line_error(labtool("history", "nosuch"))
    assert "invalid reference format" in one_line_error(labtool("tag", small, "Bad Name"))
    assert "No such image" in one_line_error(labtool("tag", "nosuch", "x"))
    assert "usage: labtool image history IMAGE" in one_line_error(labtool("image", "history"))
    assert one_line_error(labtool("save", "-o", "/nonexistent/dir/x.tar", small))


def test_no_garbage_collection_while_a_build_writes(small):
    """A build writes its blobs and layers before index.json names them: an rmi meanwhile
    must not take them for garbage. It skips collecting; a later one collects."""
    from labtool.images import store

    layers = json.loads(labtool("image", "inspect", small).stdout)[0]["RootFS"]["Layers"]
    top = layers[-1].split(":")[1]
    with store.writing():                                  # as `labtool build` holds it
        assert labtool("rmi", small).returncode == 0
        assert top in os.listdir(LAYERS())                # untouched: someone is writing
    p = labtool("image", "prune", "-f")
    assert p.returncode == 0 and top not in os.listdir(LAYERS())
