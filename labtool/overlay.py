"""Step 04: overlayfs, so containers share the image instead of copying it.

The union filesystem of the slides ("Union FS"): overlayfs stacks directories
(Documentation/filesystems/overlayfs.rst in the kernel sources, man 8 mount)::

    lowerdir=L2:L1   the image's layers, read-only, shared by every container of the image
    upperdir=U       this container's own changes: new files, copied-up files, whiteouts
    workdir=W        overlayfs's scratch space, on the same filesystem as U

Reading a file finds it in the highest layer that has it. Writing a file of the image
first copies it up into U ("copy-up"); deleting one leaves a "whiteout" in U. Starting a
container costs one mount(2) instead of a copy of the whole image.
"""

import os

from labtool import explain, syscalls


def mount_overlay(layers, upper, work, target):
    """Mount ``layers`` (lowest first) + ``upper`` at ``target``."""
    for d in (upper, work, target):
        os.makedirs(d, exist_ok=True)
    # overlayfs lists lowerdirs top first: the last layer of the image wins.
    options = f"lowerdir={':'.join(reversed(layers))},upperdir={upper},workdir={work}"
    explain.say("overlay", f"mount -t overlay -o lowerdir=<{len(layers)} layer(s)>,upperdir,workdir {target}",
                "image layers shared, changes go to upperdir")
    syscalls.mount("overlay", target, "overlay", 0, options)


# --- the step, as runtime.py calls it ----------------------------------------------------

def prepare(c):
    """Host side: the container's root is the image's layers with its own upper layer on top.

    Like Docker's overlay2 "merged" directory, the mount is made on the host, so that
    ``findmnt`` there shows it; teardown (rootfs.teardown) unmounts it.
    """
    from labtool.rootfs import make_mountpoints

    upper = os.path.join(c.dir, "upper")
    make_mountpoints(upper)                   # /proc, /etc/hosts ... as the first changes
    mount_overlay(c.image.layers, upper, os.path.join(c.dir, "work"), c.rootfs)
