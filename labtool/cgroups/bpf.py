"""The cgroup v2 device controller: a tiny BPF program that says yes or no.

cgroup v1 keeps a container's device rules in files (``devices.allow``, ``devices.deny``,
see ``devices.py``). cgroup v2 has no such files. Documentation/admin-guide/cgroup-v2.rst,
section "Device controller", says instead: write a program of type
BPF_PROG_TYPE_CGROUP_DEVICE, attach it to the cgroup with attach type BPF_CGROUP_DEVICE,
and the kernel runs it on every attempt to create (mknod) or open a device file by a
process of that cgroup. The program returns 1 (allow) or 0 (the attempt fails with EPERM).

The kernel hands the program one argument, in register r1: a pointer to ::

    struct bpf_cgroup_dev_ctx {
        u32 access_type;   /* low 16 bits: BPF_DEVCG_DEV_BLOCK (1) or _CHAR (2)
                              high 16 bits: BPF_DEVCG_ACC_MKNOD (1) | _READ (2) | _WRITE (4) */
        u32 major;
        u32 minor;
    };

BPF programs are machine code for a small virtual CPU (eleven 64-bit registers r0..r10;
Documentation/bpf/standardization/instruction-set.rst). Each instruction is 8 bytes ::

    opcode (8 bits) | dst register (4) | src register (4) | offset (16, signed) | immediate (32, signed)

A runtime written in Go or Rust uses an assembler library (runc uses cilium/ebpf's ``asm``
package). We have no such library, so this module *is* the assembler: one small function
per instruction kind (``load_u32``, ``and32``, ``jump_if_not_equal``, ``exit_program``...),
and ``program(rules)`` strings them together. Then the bpf(2) system call (man 2 bpf) does
the rest: BPF_PROG_LOAD hands the bytes to the kernel's *verifier*, which proves the
program safe (every path ends in ``exit`` with r0 set, no loops, only allowed reads of
the context) before it accepts it and returns a file descriptor; BPF_PROG_ATTACH hangs
that program on a cgroup2 directory.

On a v1 "hybrid" host (v1 controllers, plus a controller-less cgroup2 at
/sys/fs/cgroup/unified) this still works: BPF programs attach to cgroup2 directories
whether or not the cgroup2 tree has controllers, and the kernel asks *both* the BPF
programs of the process's cgroup2 cgroup and the v1 devices cgroup; either can say no.

The whole module in one picture::

    rules  --program()-->  bytes  --load()-->  prog fd  --attach()-->  cgroup2 directory
"""

import ctypes
import os
import struct
import sys

from labtool import explain
from labtool.errors import LabtoolError

# --- numbers from <linux/bpf.h> (man 2 bpf) -------------------------------------------------
# bpf(2) commands: the first argument says what to do with the attribute block.
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16

BPF_PROG_TYPE_CGROUP_DEVICE = 15   # the kind of program: "answers device access questions"
BPF_CGROUP_DEVICE = 6              # the hook it attaches to on a cgroup
BPF_F_ALLOW_MULTI = 1 << 1         # attach flag: see attach() for why we use it

# struct bpf_cgroup_dev_ctx, as described in the docstring above
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2
BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4
DEVICE_TYPES = {"b": BPF_DEVCG_DEV_BLOCK, "c": BPF_DEVCG_DEV_CHAR}
ACCESS_BITS = {"m": BPF_DEVCG_ACC_MKNOD, "r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE}
ALL_ACCESS = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE
CTX_ACCESS_TYPE, CTX_MAJOR, CTX_MINOR = 0, 4, 8    # byte offsets of the three fields

# Linux device numbers: 12 bits of major, 20 bits of minor (MINORBITS in <linux/kdev_t.h>).
MAX_MAJOR = (1 << 12) - 1
MAX_MINOR = (1 << 20) - 1

# bpf(2) has no glibc wrapper: we call syscall(2) with its number.
_BPF_NR = {"x86_64": 321, "aarch64": 280}
_libc = ctypes.CDLL(None, use_errno=True)

# --- the registers our program uses ------------------------------------------------------
R0 = 0   # the return value: 1 allow, 0 deny
R1 = 1   # on entry: pointer to struct bpf_cgroup_dev_ctx; after that, a scratch register
R2 = 2   # device type (1 block, 2 char)
R3 = 3   # requested access bits that no rule has decided yet
R4 = 4   # major
R5 = 5   # minor


# --- the assembler: one function per instruction kind -------------------------------------
# Opcode = instruction class (low 3 bits) | operation | operand source.
_BPF_LDX, _BPF_ALU, _BPF_JMP = 0x01, 0x04, 0x05          # classes: load into register, 32-bit math, jump
_BPF_MEM, _BPF_W = 0x60, 0x00                            # load mode "from memory", size "word" (4 bytes)
_BPF_AND, _BPF_RSH, _BPF_MOV = 0x50, 0x70, 0xB0          # math operations
_BPF_JEQ, _BPF_JNE, _BPF_EXIT = 0x10, 0x50, 0x90          # jump operations
_BPF_K, _BPF_X = 0x00, 0x08                              # operand: the immediate, or the src register

INSN_SIZE = 8


def instruction(opcode, dst=0, src=0, offset=0, imm=0):
    """Encode one BPF instruction: 8 bytes, ``struct bpf_insn`` of <linux/bpf.h>.

    The two 4-bit register numbers share one byte; C bit-fields put ``dst`` in the low half on
    a little-endian machine (x86_64, aarch64) and in the high half on a big-endian one.
    """
    regs = (src << 4) | dst if sys.byteorder == "little" else (dst << 4) | src
    return struct.pack("=BBhi", opcode, regs, offset, imm)


def load_u32(dst, src, offset):
    """``dst = *(u32 *)(src + offset)``: read 4 bytes of memory (here: of the context)."""
    return instruction(_BPF_LDX | _BPF_MEM | _BPF_W, dst, src, offset)


def and32(dst, imm):
    """``dst &= imm`` on the low 32 bits (32-bit math clears the upper half of ``dst``)."""
    return instruction(_BPF_ALU | _BPF_AND | _BPF_K, dst, imm=imm)


def shift_right32(dst, imm):
    """``dst >>= imm`` on the low 32 bits."""
    return instruction(_BPF_ALU | _BPF_RSH | _BPF_K, dst, imm=imm)


def move32(dst, imm):
    """``dst = imm``."""
    return instruction(_BPF_ALU | _BPF_MOV | _BPF_K, dst, imm=imm)


def move32_register(dst, src):
    """``dst = src``."""
    return instruction(_BPF_ALU | _BPF_MOV | _BPF_X, dst, src)


def jump_if_equal(dst, imm, skip):
    """``if dst == imm: skip the next `skip` instructions`` (jumps only go forward here)."""
    return instruction(_BPF_JMP | _BPF_JEQ | _BPF_K, dst, offset=skip, imm=imm)


def jump_if_not_equal(dst, imm, skip):
    """``if dst != imm: skip the next `skip` instructions``."""
    return instruction(_BPF_JMP | _BPF_JNE | _BPF_K, dst, offset=skip, imm=imm)


def exit_program():
    """``return r0``: the program's answer."""
    return instruction(_BPF_JMP | _BPF_EXIT)


def return_value(value):
    """The two instructions that end the program with ``value`` (1 allow, 0 deny)."""
    return [move32(R0, value), exit_program()]


# --- the meaning of a list of rules, in plain Python ----------------------------------------

def _access_bits(access):
    return sum(ACCESS_BITS[letter] for letter in set(access))


def _matches_device(rule, kind, major, minor):
    return ((rule.type == "a" or DEVICE_TYPES[rule.type] == kind)
            and rule.major in (None, major) and rule.minor in (None, minor))


def allowed(rules, kind, major, minor, access):
    """Would ``rules`` let a process make or open this device? The program computes this.

    ``kind`` is BPF_DEVCG_DEV_BLOCK or _CHAR, ``access`` a mask of BPF_DEVCG_ACC_* bits
    (an O_RDWR open asks for READ|WRITE at once). As in a v1 devices list, the rules apply in
    order and a later rule overrides an earlier one, for the devices *and* the access letters
    it names: after "allow c 1:3 rw", "deny c 1:3 w" takes back only writing. So, per
    requested access bit, the last rule that names this device and this bit decides; the
    attempt succeeds only if every requested bit is allowed. A bit no rule names is allowed,
    like in a fresh v1 cgroup, which inherits "a *:* rwm" from the root (labtool's rules
    always start with "deny all", so this never happens for them).
    """
    undecided = access
    for rule in reversed(rules):
        if not _matches_device(rule, kind, major, minor):
            continue
        named = undecided & _access_bits(rule.access)
        if named and not rule.allow:
            return False
        undecided &= ~named
        if not undecided:
            return True
    return True


# --- the compiler: rules -> instructions ----------------------------------------------------

def _check_rule(rule):
    if rule.type not in ("a", "b", "c"):
        raise LabtoolError(f"device rule {rule}: type must be 'a', 'b' or 'c'")
    if set(rule.access) - set(ACCESS_BITS):
        raise LabtoolError(f"device rule {rule}: access must be made of r, w and m")
    for name, number, top in (("major", rule.major, MAX_MAJOR), ("minor", rule.minor, MAX_MINOR)):
        if number is not None and not 0 <= number <= top:
            raise LabtoolError(f"device rule {rule}: {name} must be between 0 and {top}")


def read_context():
    """The program's first six instructions: unpack struct bpf_cgroup_dev_ctx into r2..r5."""
    return [
        # r2 = device type: the low 16 bits of access_type
        load_u32(R2, R1, CTX_ACCESS_TYPE),
        and32(R2, 0xFFFF),
        # r3 = requested access: the high 16 bits of access_type
        load_u32(R3, R1, CTX_ACCESS_TYPE),
        shift_right32(R3, 16),
        # r4 = major, r5 = minor
        load_u32(R4, R1, CTX_MAJOR),
        load_u32(R5, R1, CTX_MINOR),
    ]


def rule_block(rule):
    """The instructions of one rule. They either end the program with an answer or fall
    through to the next block ("skip": jump past the end of this block).

    1. Does the rule name this device? For each part the rule fixes (type, major, minor),
       one "if different, skip this block". A "*" costs nothing.
    2. If it does, decide the requested access bits the rule names:
       - allow rwm / deny rwm: every undecided bit is named: answer 1 / 0 at once;
       - allow some letters: mark those bits decided (clear them in r3); if none is left
         undecided, answer 1, else go on to earlier rules for the rest;
       - deny some letters: if any undecided bit is among them, answer 0, else go on.
    """
    bits = _access_bits(rule.access)
    if bits == ALL_ACCESS:
        decide = return_value(1 if rule.allow else 0)
    elif rule.allow:
        decide = [and32(R3, ~bits),                       # these bits are allowed: decided
                  jump_if_not_equal(R3, 0, 2),            # some bits still undecided: skip
                  *return_value(1)]                       # all decided, all allowed
    else:
        decide = [move32_register(R1, R3),                # r1 = undecided bits ...
                  and32(R1, bits),                        # ... that this rule denies
                  jump_if_equal(R1, 0, 2),                # none of them: skip
                  *return_value(0)]
    checks = []                                           # (register, the rule's value)
    if rule.type != "a":
        checks.append((R2, DEVICE_TYPES[rule.type]))
    if rule.major is not None:
        checks.append((R4, rule.major))
    if rule.minor is not None:
        checks.append((R5, rule.minor))
    block = []
    for i, (register, value) in enumerate(checks):
        rest = len(checks) - i - 1 + len(decide)          # instructions after this one
        block.append(jump_if_not_equal(register, value, rest))
    return block + decide


def _decides_everything(rule):
    """A rule that names every device and every access letter (like the leading "deny all"):
    the rules before it can never matter."""
    return rule.type == "a" and rule.major is None and rule.minor is None and \
        _access_bits(rule.access) == ALL_ACCESS


def program(rules):
    """Compile a list of ``DeviceRule`` (``devices.py``) into a BPF_PROG_TYPE_CGROUP_DEVICE
    program; return its instructions as bytes (8 per instruction), ready for ``load``.

    The blocks come in *reverse* order: the last rule is asked first, because the last rule
    that names a device has the final say (see ``allowed``). The first rule that decides
    everything ends the program: the kernel's verifier refuses instructions that can never
    run, so the rules before it are left out. If no rule decides everything, the program
    ends with "allow", the answer for bits no rule names.
    """
    insns = read_context()
    for rule in reversed(rules):
        _check_rule(rule)
        if not rule.access:
            continue                                      # names no access: decides nothing
        insns += rule_block(rule)
        if _decides_everything(rule):
            break
    else:                                                 # no break: some bits may be left undecided
        insns += return_value(1)
    return b"".join(insns)


# --- reading a program back, for lectures and for tests -------------------------------------

def listing(insns):
    """Disassemble ``insns`` in the syntax of ``bpftool prog dump xlated``: one line per
    instruction, such as ``3: (74) w3 >>= 16``."""
    lines = []
    for pc in range(len(insns) // INSN_SIZE):
        opcode, regs, off, imm = struct.unpack_from("=BBhi", insns, pc * INSN_SIZE)
        dst, src = (regs & 0xF, regs >> 4) if sys.byteorder == "little" else (regs >> 4, regs & 0xF)
        op = opcode & 0xF0
        if opcode == _BPF_LDX | _BPF_MEM | _BPF_W:
            text = f"r{dst} = *(u32 *)(r{src} {'+' if off >= 0 else '-'}{abs(off)})"
        elif opcode & 0x07 == _BPF_ALU:
            symbol = {_BPF_AND: "&=", _BPF_RSH: ">>=", _BPF_MOV: "="}[op]
            operand = f"w{src}" if opcode & _BPF_X else str(imm)
            text = f"w{dst} {symbol} {operand}"
        elif opcode == _BPF_JMP | _BPF_EXIT:
            text = "exit"
        elif opcode & 0x07 == _BPF_JMP:
            symbol = {_BPF_JEQ: "==", _BPF_JNE: "!="}[op]
            text = f"if r{dst} {symbol} {imm:#x} goto pc{off:+d}"
        else:
            text = f"opcode {opcode:#04x}"
        lines.append(f"{pc}: ({opcode:02x}) {text}")
    return "\n".join(lines)


# --- the bpf(2) system call ---------------------------------------------------------------
# bpf(cmd, attr, size): attr points to a block of fields (union bpf_attr in <linux/bpf.h>),
# a different layout per command. The kernel accepts a block shorter than its own union and
# treats the missing fields as zero, so each command gets a ctypes Structure of just the
# fields it needs.

class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16)]


class _ProgAttachAttr(ctypes.Structure):       # BPF_PROG_ATTACH and BPF_PROG_DETACH
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32)]


class _ProgQueryAttr(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("query_flags", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("prog_ids", ctypes.c_uint64), ("prog_cnt", ctypes.c_uint32)]


class _GetFdByIdAttr(ctypes.Structure):
    _fields_ = [("prog_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32),
                ("open_flags", ctypes.c_uint32)]


def _bpf(cmd, attr):
    """Call bpf(2); return its result, or raise OSError with the real errno."""
    nr = _BPF_NR.get(os.uname().machine)
    if nr is None:
        raise LabtoolError(f"bpf(2): labtool does not know its syscall number on {os.uname().machine}")
    result = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), ctypes.byref(attr),
                           ctypes.c_uint(ctypes.sizeof(attr)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def load(insns, license="GPL"):
    """Hand the program to the kernel: bpf(BPF_PROG_LOAD) (man 2 bpf). Return its fd.

    The verifier checks it first and writes what it did into a log buffer we pass along
    (log_level 1); if it refuses, the end of that log says why, and goes into the error.
    The license matters only to programs calling GPL-only kernel helpers; ours calls none.
    """
    count = len(insns) // INSN_SIZE
    explain.say("cgroups", f"bpf(BPF_PROG_LOAD, CGROUP_DEVICE, {count} insns)",
                "the verifier checks the device program; we get a file descriptor")
    code = ctypes.create_string_buffer(bytes(insns), len(insns))
    license_text = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(64 * 1024)
    attr = _ProgLoadAttr(prog_type=BPF_PROG_TYPE_CGROUP_DEVICE, insn_cnt=count,
                         insns=ctypes.addressof(code), license=ctypes.addressof(license_text),
                         log_level=1, log_size=len(log), log_buf=ctypes.addressof(log),
                         prog_name=b"labtool_devices")   # seen in `bpftool prog list`
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        said = [line.strip() for line in log.value.decode(errors="replace").splitlines()
                if line.strip() and not line.startswith(("processed ", "verification time"))]
        verifier = f"; the verifier said: {' | '.join(said[-3:])}" if said else ""
        hint = " (loading BPF programs needs root: CAP_BPF and CAP_SYS_ADMIN)" if e.errno == 1 and not said else ""
        raise LabtoolError(f"bpf(BPF_PROG_LOAD) of the device program failed: {e.strerror}{hint}{verifier}") from None


def _open_cgroup(cgroup_dir):
    try:
        return os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise LabtoolError(f"cannot open cgroup {cgroup_dir}: {e.strerror}") from None


def _not_cgroup2(cgroup_dir, e):
    if e.errno in (9, 22):   # EBADF, EINVAL: the fd is not a cgroup2 directory
        return LabtoolError(f"{cgroup_dir} is not a cgroup2 directory: device programs attach only to "
                            "the unified hierarchy (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host)")
    return None


def attached_ids(cgroup_dir):
    """The ids of the device programs attached to ``cgroup_dir`` itself (bpf(BPF_PROG_QUERY));
    ``bpftool cgroup show DIR`` lists the same."""
    fd = _open_cgroup(cgroup_dir)
    try:
        ids = (ctypes.c_uint32 * 64)()            # the kernel allows at most 64 per hook
        attr = _ProgQueryAttr(target_fd=fd, attach_type=BPF_CGROUP_DEVICE,
                              prog_ids=ctypes.addressof(ids), prog_cnt=len(ids))
        try:
            _bpf(BPF_PROG_QUERY, attr)
        except OSError as e:
            raise _not_cgroup2(cgroup_dir, e) or LabtoolError(
                f"bpf(BPF_PROG_QUERY) on {cgroup_dir} failed: {e.strerror}") from None
        return list(ids[:attr.prog_cnt])
    finally:
        os.close(fd)


def _detach(cgroup_fd, prog_id, cgroup_dir):
    """Detach one program, named by its id: an attached program with BPF_F_ALLOW_MULTI is
    detached by giving its fd, and BPF_PROG_GET_FD_BY_ID turns the id into one."""
    try:
        prog_fd = _bpf(BPF_PROG_GET_FD_BY_ID, _GetFdByIdAttr(prog_id=prog_id))
    except OSError as e:
        if e.errno == 2:     # ENOENT: it went away meanwhile
            return
        raise LabtoolError(f"bpf(BPF_PROG_GET_FD_BY_ID, {prog_id}) failed: {e.strerror}") from None
    try:
        explain.say("cgroups", f"bpf(BPF_PROG_DETACH, {cgroup_dir}, BPF_CGROUP_DEVICE, prog {prog_id})",
                    "take an old device program off the cgroup")
        _bpf(BPF_PROG_DETACH, _ProgAttachAttr(target_fd=cgroup_fd, attach_bpf_fd=prog_fd,
                                              attach_type=BPF_CGROUP_DEVICE))
    except OSError as e:
        if e.errno != 2:     # ENOENT: not attached (any more)
            raise LabtoolError(f"bpf(BPF_PROG_DETACH) on {cgroup_dir} failed: {e.strerror}") from None
    finally:
        os.close(prog_fd)


def attach(cgroup_dir, rules):
    """Make ``rules`` the device rules of the cgroup2 directory ``cgroup_dir``: compile, load,
    then bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE) (man 2 bpf; cgroup-v2.rst "Device
    controller"). Return the program's fd: the caller may close it at once, since the
    attachment holds its own reference and keeps the program alive until it is detached or
    the cgroup is removed.

    We attach with BPF_F_ALLOW_MULTI, as runc does. Without it (flags 0) a program forbids
    every program in the cgroups *below*: a container could not run its own containers
    (docker-in-docker, systemd) with their own device rules. With it, the kernel runs the
    programs of the cgroup and of all its ancestors, and access needs a yes from each, so a
    nested cgroup can only narrow what its parent allows, never widen it, like the v1
    devices hierarchy. The price: a second attach adds a program instead of replacing the
    first. So when ``cgroup_dir`` already has device programs (``labtool update``, or a
    second call), we attach the new one first and detach the old ones after: in between
    both apply, the stricter of the two, and the container is never left without rules.
    """
    insns = program(rules)
    fd = _open_cgroup(cgroup_dir)
    try:
        old = attached_ids(cgroup_dir)
        prog_fd = load(insns)
        explain.say("cgroups", f"bpf(BPF_PROG_ATTACH, {cgroup_dir}, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)",
                    "every open and mknod of a device in this cgroup now asks the program")
        try:
            _bpf(BPF_PROG_ATTACH, _ProgAttachAttr(target_fd=fd, attach_bpf_fd=prog_fd,
                                                  attach_type=BPF_CGROUP_DEVICE,
                                                  attach_flags=BPF_F_ALLOW_MULTI))
        except OSError as e:
            os.close(prog_fd)
            if e.errno == 1:   # EPERM: a program attached without ALLOW_MULTI, here or above
                raise LabtoolError(f"bpf(BPF_PROG_ATTACH) on {cgroup_dir}: operation not permitted (this cgroup or "
                                   "a parent holds a device program attached without BPF_F_ALLOW_MULTI)") from None
            raise _not_cgroup2(cgroup_dir, e) or LabtoolError(
                f"bpf(BPF_PROG_ATTACH) on {cgroup_dir} failed: {e.strerror}") from None
        for prog_id in old:
            _detach(fd, prog_id, cgroup_dir)
        return prog_fd
    finally:
        os.close(fd)


def detach_all(cgroup_dir):
    """Detach every device program from ``cgroup_dir``; return how many there were.

    Rarely needed: removing the cgroup (rmdir) drops its programs too.
    """
    fd = _open_cgroup(cgroup_dir)
    try:
        ids = attached_ids(cgroup_dir)
        for prog_id in ids:
            _detach(fd, prog_id, cgroup_dir)
        return len(ids)
    finally:
        os.close(fd)
