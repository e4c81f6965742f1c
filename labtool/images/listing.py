"""Looking at images: ``labtool images``, ``image inspect``, ``history``.

``history`` reads the image config's history, one entry per Dockerfile instruction, newest
first. An entry names an image (IMAGE) when this store holds the image that instruction
made: a local build keeps one per step. Entries of images made elsewhere (a pulled or
loaded base, the built-in busybox's own past) show ``<missing>``: their layers are here,
the intermediate images are not. SIZE is what the step's layer holds (0B for ENV, CMD and
the other metadata-only steps, ``"empty_layer": true``).
"""

import datetime

from labtool.errors import LabtoolError
from labtool.images import store
from labtool.images.build import short
from labtool.units import human_size


class NoSuchImage(LabtoolError):
    def __init__(self, name):
        super().__init__(f"No such image: {name}")


def get(name):
    image = store.find(name)
    if image is None:
        raise NoSuchImage(name)
    return image


def size_of(image):
    """The image's size as Docker shows it: its layers unpacked, added up."""
    return sum(store.layer_size(layer) for layer in image.layers)


def ago(timestamp, now=None):
    """Docker's "5 months ago" (go-units HumanDuration)."""
    try:
        when = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return "N/A"
    seconds = ((now or datetime.datetime.now(datetime.timezone.utc)) - when).total_seconds()
    minutes, hours, days = seconds / 60, seconds / 3600, seconds / 86400
    if seconds < 1:
        text = "Less than a second"
    elif int(seconds) == 1:
        text = "1 second"
    elif seconds < 60:
        text = f"{int(seconds)} seconds"
    elif minutes < 2:
        text = "About a minute"
    elif minutes < 60:
        text = f"{int(minutes)} minutes"
    elif hours < 2:
        text = "About an hour"
    elif hours < 48:
        text = f"{int(hours)} hours"
    elif days < 14:
        text = f"{int(days)} days"
    elif days < 90:
        text = f"{int(days / 7)} weeks"
    elif days < 730:
        text = f"{int(days / 30)} months"
    else:
        text = f"{int(days / 365)} years"
    return text + " ago"


def table(rows, header):
    """Columns as Docker's tabwriter makes them: each as wide as its longest cell + 3."""
    rows = [header] + rows
    widths = [max(len(r[i]) for r in rows) + 3 for i in range(len(header) - 1)]
    return "\n".join("".join(cell.ljust(w) for cell, w in zip(r, widths)) + r[-1] for r in rows)


def images_rows(everything=False, wanted=""):
    """``labtool images``: (repository, tag, id, created, size) of each tagged image, and of
    untagged ones that are nobody's parent ("dangling", ``<none>``); ``-a``: all of them."""
    rows, entries = [], store.entries()
    parents = {e.parent for e in entries}
    for entry in entries:
        image = store.from_manifest(entry.manifest)
        if not entry.refs and image.id in parents and not everything:
            continue                               # an intermediate image: shown with -a
        for ref in entry.refs or ["<none>:<none>"]:
            repo, _, tag = ref.rpartition(":")
            if wanted and wanted not in (repo, ref):
                continue
            rows.append((repo, tag, short(image.id), ago(image.config.get("created", "")),
                         human_size(size_of(image)), image.config.get("created", "")))
    rows.sort(key=lambda r: r[5], reverse=True)
    return [r[:5] for r in rows]


def images_table(everything=False, wanted=""):
    rows = images_rows(everything, wanted)
    widths = [max([20] + [len(r[0]) + 3 for r in rows]), max([10] + [len(r[1]) + 3 for r in rows]), 15,
              max([23] + [len(r[3]) + 3 for r in rows])]
    lines = ["".join(h.ljust(w) for h, w in zip(("REPOSITORY", "TAG", "IMAGE ID", "CREATED"), widths)) + "SIZE"]
    for row in rows:
        lines.append("".join(cell.ljust(w) for cell, w in zip(row, widths)) + row[4])
    return "\n".join(lines)


def inspect(image):
    """An image as ``docker image inspect`` shows it."""
    entry = store.entry_of(image)
    config = image.config
    settings = config.get("config") or {}
    return {
        "Id": image.id,
        "RepoTags": entry.refs,
        "RepoDigests": [],
        "Parent": entry.parent,
        "Comment": (config.get("history") or [{}])[-1].get("comment", ""),
        "Created": config.get("created", ""),
        "Author": config.get("author", ""),
        "Config": {
            "User": settings.get("User", ""),
            "ExposedPorts": settings.get("ExposedPorts"),
            "Env": settings.get("Env"),
            "Cmd": settings.get("Cmd"),
            "Volumes": settings.get("Volumes"),
            "WorkingDir": settings.get("WorkingDir", ""),
            "Entrypoint": settings.get("Entrypoint"),
            "Labels": settings.get("Labels"),
            "StopSignal": settings.get("StopSignal"),
            "Shell": settings.get("Shell"),
        },
        "Architecture": config.get("architecture", ""),
        "Os": config.get("os", ""),
        "Size": size_of(image),
        "RootFS": {"Type": "layers", "Layers": config.get("rootfs", {}).get("diff_ids", [])},
        "History": config.get("history", []),
        "Manifest": image.manifest,
        "GraphDriver": {"Name": "overlay", "Data": {"LowerDir": ":".join(reversed(image.layers))}},
    }


def history_rows(image, full=False, human=True):
    """(image id or <missing>, created, created by, size, comment), newest first."""
    history = image.config.get("history") or []
    # which entry each image of the chain ends with: image -> parent -> ...
    ids, current, seen = {}, image, set()
    while current is not None and current.id not in seen:
        seen.add(current.id)
        ids[len(current.config.get("history") or []) - 1] = current.id
        parent = store.parent_of(current.id)
        current = store.find_by_id(parent) if parent else None
    layers = list(image.layers)
    rows, layer_index = [], 0
    sizes = []
    for entry in history:
        if entry.get("empty_layer"):
            sizes.append(0)
        else:
            sizes.append(store.layer_size(layers[layer_index]) if layer_index < len(layers) else 0)
            layer_index += 1
    for i in reversed(range(len(history))):
        entry = history[i]
        image_id = ids.get(i)
        shown_id = (image_id if full else short(image_id)) if image_id else "<missing>"
        created_by = entry.get("created_by", "")
        if not full and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        created = ago(entry.get("created", "")) if human else entry.get("created", "")
        size = human_size(sizes[i]) if human else str(sizes[i])
        rows.append((shown_id, created, created_by, size, entry.get("comment", "")))
    return rows


def history_table(image, full=False, human=True):
    return table([list(r) for r in history_rows(image, full, human)],
                 ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"])
