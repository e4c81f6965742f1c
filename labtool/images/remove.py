"""Removing images: ``labtool rmi`` and ``labtool image prune``, with Docker's rules.

    rmi NAME:TAG    removes the tag ("Untagged: ..."); when it was the image's last tag and
                    nothing else needs the image, the image too ("Deleted: sha256:..."),
                    and then its untagged parents (a build's intermediate images) that no
                    other image is built on
    rmi ID          the same, by id; an image with several tags needs -f
    refused         an image a container uses (even a stopped one): -f removes its tags,
                    the image stays as long as the container needs it; an image other
                    images are built on is never deleted by id (its children first)

After that, the blobs and unpacked layers that no image and no container refers to any more
are deleted (``store.collect_garbage``): layers shared with other images stay.
"""

from labtool import overlay, paths
from labtool.engine import containers
from labtool.errors import LabtoolError
from labtool.images import store
from labtool.images.build import short
from labtool.images.listing import get


def users_of(image_id):
    """The containers (records) whose root filesystem comes from image ``image_id``."""
    found = []
    for record in containers.all_records():
        storage = overlay.storage_of(paths.container_dir(record.id))
        used = storage.get("Image")
        if not used:
            try:
                image = store.find(record.config.get("image", ""))
            except LabtoolError:
                image = None
            used = image.id if image else ""
        if used == image_id:
            found.append(record)
    return found


def container_manifests():
    """The image manifests containers were made from (kept by the garbage collector)."""
    found = []
    for record in containers.all_records():
        manifest = overlay.storage_of(paths.container_dir(record.id)).get("ImageManifest")
        if manifest:
            found.append(manifest)
    return found


def rmi(name, force=False):
    """Remove one image by name or id; return Docker's lines ("Untagged: ...", "Deleted: ...")."""
    image = get(name)
    entry = store.entry_of(image)
    by_tag = store.normalize(name) in entry.refs
    users = users_of(image.id)
    if by_tag and len(entry.refs) > 1:
        store.untag(name)
        return [f"Untagged: {store.normalize(name)}"]
    if users and not force:
        user = users[0]
        if by_tag:
            raise LabtoolError(f'conflict: unable to remove repository reference "{name}" (must force) - '
                               f"container {short(user.id)} is using its referenced image {short(image.id)}")
        state = "running" if user.running_pid else "stopped"
        raise LabtoolError(f"conflict: unable to delete {short(image.id)} (must be forced) - image is being used "
                           f"by {state} container {short(user.id)}")
    if not by_tag and len(entry.refs) > 1 and not force:
        raise LabtoolError(f"conflict: unable to delete {short(image.id)} (must be forced) - image is referenced "
                           f"in multiple repositories")
    children = store.children_of(image.id)
    if children and not by_tag:
        raise LabtoolError(f"conflict: unable to delete {short(image.id)} (cannot be forced) - image has "
                           f"dependent child images")
    lines = []
    for ref in entry.refs:
        store.untag(ref)
        lines.append(f"Untagged: {ref}")
    if users or children:
        return lines                 # the image stays: a container or a child image needs it
    lines += _delete_with_parents(image)
    store.collect_garbage(container_manifests())
    return lines


def _delete_with_parents(image):
    """Delete ``image``, then each parent that is untagged, unused and has no other child."""
    lines = []
    while image is not None:
        parent_id = store.parent_of(image.id)
        store.delete(image)
        lines.append(f"Deleted: {image.id}")
        parent = store.find_by_id(parent_id) if parent_id else None
        if parent is None or store.entry_of(parent).refs or store.children_of(parent.id) or users_of(parent.id):
            break
        image = parent
    return lines


def prune(everything=False):
    """``image prune``: delete dangling images (untagged, nobody's parent, unused);
    ``-a``: every image no container uses. Returns (lines, bytes freed)."""
    lines = []
    while True:
        parents = {e.parent for e in store.entries()}
        doomed = []
        for entry in store.entries():
            image = store.from_manifest(entry.manifest)
            if image.id in parents or users_of(image.id):
                continue
            if entry.refs and not everything:
                continue
            doomed.append((entry, image))
        if not doomed:
            break
        for entry, image in doomed:
            lines += [f"untagged: {ref}" for ref in entry.refs]
            store.delete(image)
            lines.append(f"deleted: {image.id}")
        if not everything:
            # a dangling image's untagged parents become dangling in turn
            continue
    freed = store.collect_garbage(container_manifests())
    return lines, freed
