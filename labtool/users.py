"""``--user``: run the command as another user (man 2 setresuid, man 5 passwd).

The name is looked up in the *container's* /etc/passwd and /etc/group, like Docker does:
the host's users mean nothing inside.
"""

import os

from labtool import explain
from labtool.errors import LabtoolError


def _table(path):
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.count(":") >= 2]
    except OSError:
        return []


def resolve(user):
    """"UID[:GID]" or "NAME[:GROUP]" -> (uid, gid, supplementary gids), read from /etc."""
    name, _, group = user.partition(":")
    passwd = _table("/etc/passwd")
    if name.isdigit():
        uid = int(name)
        gid = next((int(e[3]) for e in passwd if e[2] == name and len(e) > 3), uid)
    else:
        entry = next((e for e in passwd if e[0] == name), None)
        if entry is None:
            raise LabtoolError(f"unable to find user {name}: no matching entries in passwd file")
        uid, gid = int(entry[2]), int(entry[3])
    groups = _table("/etc/group")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            entry = next((e for e in groups if e[0] == group), None)
            if entry is None:
                raise LabtoolError(f"unable to find group {group}: no matching entries in group file")
            gid = int(entry[2])
    user_name = name if not name.isdigit() else next((e[0] for e in passwd if e[2] == name), None)
    extra = sorted({int(e[2]) for e in groups if len(e) > 3 and user_name and user_name in e[3].split(",")})
    return uid, gid, extra


def become(user):
    """Switch this process to ``user`` for good: groups first, while we still may."""
    uid, gid, extra = resolve(user)
    explain.say("user", f"setgroups({extra}); setresgid({gid}); setresuid({uid})",
                "give up root before exec")
    os.setgroups(extra)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
