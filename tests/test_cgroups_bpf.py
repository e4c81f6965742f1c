"""Step 03: the cgroup v2 device controller, a BPF program, checked by the real kernel.

The unit tests read the program back (encoding, and a small interpreter that runs it
against the rules' meaning); the enforcement tests attach it to a scratch cgroup2
directory, move a forked child there, and let the child try to open and make devices.
"""

import errno
import json
import os
import secrets
import shutil
import stat
import struct
import tempfile
import time

import pytest

from labtool.cgroups import bpf
from labtool.cgroups.devices import DEFAULT_RULES, DeviceRule
from labtool.errors import LabtoolError

BLOCK, CHAR = bpf.BPF_DEVCG_DEV_BLOCK, bpf.BPF_DEVCG_DEV_CHAR
M, R, W = bpf.BPF_DEVCG_ACC_MKNOD, bpf.BPF_DEVCG_ACC_READ, bpf.BPF_DEVCG_ACC_WRITE
WITH_LOOP0_READ = DEFAULT_RULES + [DeviceRule(True, "b", 7, 0, "r")]


# --- the program as bytes ----------------------------------------------------------------

def decode(insns):
    """(opcode, dst, src, offset, imm) of each instruction (little-endian hosts)."""
    out = []
    for i in range(0, len(insns), bpf.INSN_SIZE):
        opcode, regs, off, imm = struct.unpack_from("<BBhi", insns, i)
        out.append((opcode, regs & 0xF, regs >> 4, off, imm))
    return out


def run_program(insns, kind, major, minor, access):
    """Interpret the instructions bpf.program() emits, as the kernel would run them."""
    regs = [0] * 11
    ctx = struct.pack("<III", (access << 16) | kind, major, minor)
    code = decode(insns)
    pc = 0
    for _ in range(len(code)):            # forward jumps only: at most one pass
        opcode, dst, src, off, imm = code[pc]
        pc += 1
        if opcode == 0x61:                # ldx word from the context (r1 points to it)
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif opcode == 0x54:
            regs[dst] = (regs[dst] & imm) & 0xFFFFFFFF
        elif opcode == 0x74:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif opcode == 0xB4:
            regs[dst] = imm & 0xFFFFFFFF
        elif opcode == 0xBC:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif opcode == 0x15:
            pc += off if regs[dst] == imm else 0
        elif opcode == 0x55:
            pc += off if regs[dst] != imm else 0
        elif opcode == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {opcode:#x}")
    raise AssertionError("ran off the end of the program")


RULE_SETS = {
    "default": DEFAULT_RULES,
    "default + b 7:0 r": WITH_LOOP0_READ,
    "default, then deny writing /dev/null": DEFAULT_RULES + [DeviceRule(False, "c", 1, 3, "w")],
    "allow all, deny block devices but mknod": [DeviceRule(True), DeviceRule(False, "b", None, None, "rw")],
    "r and w from different rules": [DeviceRule(False), DeviceRule(True, "c", 1, None, "r"),
                                     DeviceRule(True, "c", None, 3, "w")],
    "no rules": [],
}


def test_default_program_shape():
    insns = bpf.program(DEFAULT_RULES)
    code = decode(insns)
    assert len(insns) % 8 == 0 and len(code) == 62
    assert code[0] == (0x61, bpf.R2, bpf.R1, 0, 0)               # r2 = ctx->access_type
    assert code[-2] == (0xB4, bpf.R0, 0, 0, 0)                   # deny all: w0 = 0 ...
    assert code[-1] == (0x95, 0, 0, 0, 0)                        # ... exit
    assert all(0 <= pc + 1 + off < len(code) for pc, (op, _, _, off, _) in enumerate(code) if op in (0x15, 0x55))
    assert bpf.listing(insns).splitlines()[-1] == "61: (95) exit"


def test_rules_before_deny_all_are_left_out():
    shorter = bpf.program([DeviceRule(True, "c", 1, 3)] + DEFAULT_RULES)
    assert shorter == bpf.program(DEFAULT_RULES)
    assert decode(bpf.program([]))[-2:] == [(0xB4, 0, 0, 0, 1), (0x95, 0, 0, 0, 0)]   # nothing named: allow


@pytest.mark.parametrize("name", RULE_SETS)
def test_program_computes_what_the_rules_mean(name):
    rules = RULE_SETS[name]
    insns = bpf.program(rules)
    for kind in (BLOCK, CHAR):
        for major, minor in ((1, 3), (1, 5), (7, 0), (10, 237), (136, 4), (5, 1), (4095, 1048575)):
            for access in (M, R, W, R | W, M | R | W):
                want = bpf.allowed(rules, kind, major, minor, access)
                got = run_program(insns, kind, major, minor, access)
                assert got == int(want), (name, kind, major, minor, access)


def test_rules_meaning():
    assert bpf.allowed(DEFAULT_RULES, CHAR, 1, 3, R | W)
    assert bpf.allowed(DEFAULT_RULES, CHAR, 10, 237, M)
    assert not bpf.allowed(DEFAULT_RULES, CHAR, 10, 237, R)
    assert not bpf.allowed(DEFAULT_RULES, BLOCK, 7, 0, R)
    assert bpf.allowed(WITH_LOOP0_READ, BLOCK, 7, 0, R)
    assert not bpf.allowed(WITH_LOOP0_READ, BLOCK, 7, 0, R | W)
    assert not bpf.allowed(RULE_SETS["default, then deny writing /dev/null"], CHAR, 1, 3, W)
    assert bpf.allowed(RULE_SETS["r and w from different rules"], CHAR, 1, 3, R | W)


@pytest.mark.parametrize("rule", [DeviceRule(True, "x"), DeviceRule(True, "c", 1, 3, "rx"),
                                  DeviceRule(True, "c", 4096, 0), DeviceRule(True, "c", 1, -1)])
def test_bad_rule_is_refused(rule):
    with pytest.raises(LabtoolError):
        bpf.program([rule])


def test_verifier_refusal_is_explained():
    bad = bpf.load_u32(bpf.R2, bpf.R1, 12) + bpf.move32(bpf.R0, 1) + bpf.exit_program()   # no field at +12
    with pytest.raises(LabtoolError, match="invalid bpf_context access"):
        bpf.load(bad)


def test_load_gives_a_program_fd():
    fd = bpf.load(bpf.program(DEFAULT_RULES))
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:bpf-prog"
    finally:
        os.close(fd)


# --- the real kernel -----------------------------------------------------------------------

def _cgroup2_top():
    with open("/proc/self/mountinfo") as f:
        tops = [line.split()[4] for line in f if line.split(" - ")[1].split()[0] == "cgroup2"]
    if not tops:
        pytest.skip("no cgroup2 hierarchy mounted")
    return min(tops, key=len)       # /sys/fs/cgroup (pure v2) or /sys/fs/cgroup/unified (hybrid)


@pytest.fixture
def cgroup():
    path = os.path.join(_cgroup2_top(), f"labtool-test-bpf-{secrets.token_hex(4)}")
    os.mkdir(path)
    try:
        yield path
    finally:
        for _ in range(50):           # the last child is reaped; the kernel may lag a moment
            try:
                os.rmdir(path)
                break
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
                time.sleep(0.02)


@pytest.fixture
def scratch():
    """A directory for device nodes, on a filesystem mounted without nodev."""
    path = tempfile.mkdtemp(prefix="labtool-test-bpf-")
    try:
        if os.statvfs(path).f_flag & os.ST_NODEV:
            pytest.skip(f"{path} is on a nodev filesystem: device nodes there cannot be opened")
        yield path
    finally:
        shutil.rmtree(path)


def _outcome(action):
    try:
        result = action()
        if isinstance(result, int) and result > 2:
            os.close(result)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def in_cgroup(cgroup_dir, actions):
    """Fork a child that joins ``cgroup_dir`` and tries each action; return
    {name: "ok" or errno name}, as the child reported it through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                       # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            results = {name: _outcome(action) for name, action in actions.items()}
            os.write(write_end, json.dumps(results).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"the child failed: {report!r}"
    return json.loads(report)


def _mknod(path, kind, major, minor):
    return lambda: os.mknod(path, kind | 0o600, os.makedev(major, minor))


def _needs_loop0():
    if not (os.path.exists("/dev/loop0") and stat.S_ISBLK(os.stat("/dev/loop0").st_mode)):
        pytest.skip("no /dev/loop0 on this host")


def test_default_rules_are_enforced(cgroup, scratch):
    _needs_loop0()
    fd = bpf.attach(cgroup, DEFAULT_RULES)
    os.close(fd)                       # the attachment keeps the program alive
    assert len(bpf.attached_ids(cgroup)) == 1
    null, control, disk = (os.path.join(scratch, n) for n in ("null", "loop-control", "disk"))
    got = in_cgroup(cgroup, {
        "open /dev/null": lambda: os.open("/dev/null", os.O_RDWR),
        "open /dev/loop0": lambda: os.open("/dev/loop0", os.O_RDONLY),
        "mknod c 1:3": _mknod(null, stat.S_IFCHR, 1, 3),
        "open own c 1:3": lambda: os.open(null, os.O_RDWR),
        "mknod c 10:237": _mknod(control, stat.S_IFCHR, 10, 237),
        "open own c 10:237": lambda: os.open(control, os.O_RDWR),
        "mknod b 7:0": _mknod(disk, stat.S_IFBLK, 7, 0),
        "open own b 7:0": lambda: os.open(disk, os.O_RDONLY),
    })
    assert got == {
        "open /dev/null": "ok",
        "open /dev/loop0": "EPERM",
        "mknod c 1:3": "ok",
        "open own c 1:3": "ok",
        "mknod c 10:237": "ok",            # making a node is harmless ...
        "open own c 10:237": "EPERM",      # ... opening it is what the rules refuse
        "mknod b 7:0": "ok",
        "open own b 7:0": "EPERM",
    }
    # outside the cgroup nothing changed
    os.close(os.open("/dev/loop0", os.O_RDONLY))


def test_a_later_rule_allows_reading_only(cgroup):
    _needs_loop0()
    os.close(bpf.attach(cgroup, WITH_LOOP0_READ))
    got = in_cgroup(cgroup, {
        "read /dev/loop0": lambda: os.open("/dev/loop0", os.O_RDONLY),
        "write /dev/loop0": lambda: os.open("/dev/loop0", os.O_WRONLY),
        "read+write /dev/loop0": lambda: os.open("/dev/loop0", os.O_RDWR),
        "open /dev/null": lambda: os.open("/dev/null", os.O_RDWR),
    })
    assert got == {"read /dev/loop0": "ok", "write /dev/loop0": "EPERM",
                   "read+write /dev/loop0": "EPERM", "open /dev/null": "ok"}


def test_a_later_deny_takes_back_one_letter(cgroup):
    os.close(bpf.attach(cgroup, RULE_SETS["default, then deny writing /dev/null"]))
    got = in_cgroup(cgroup, {
        "read /dev/null": lambda: os.open("/dev/null", os.O_RDONLY),
        "write /dev/null": lambda: os.open("/dev/null", os.O_WRONLY),
        "read /dev/zero": lambda: os.open("/dev/zero", os.O_RDONLY),
    })
    assert got == {"read /dev/null": "ok", "write /dev/null": "EPERM", "read /dev/zero": "ok"}


def test_attach_again_replaces_the_program(cgroup):
    _needs_loop0()
    os.close(bpf.attach(cgroup, DEFAULT_RULES))
    first = bpf.attached_ids(cgroup)
    os.close(bpf.attach(cgroup, WITH_LOOP0_READ))
    second = bpf.attached_ids(cgroup)
    assert len(second) == 1 and second != first      # not both: that would still deny loop0
    assert in_cgroup(cgroup, {"read": lambda: os.open("/dev/loop0", os.O_RDONLY)}) == {"read": "ok"}
    assert bpf.detach_all(cgroup) == 1 and bpf.attached_ids(cgroup) == []


def test_not_a_cgroup2_directory(scratch):
    with pytest.raises(LabtoolError, match="not a cgroup2 directory"):
        bpf.attach(scratch, DEFAULT_RULES)
