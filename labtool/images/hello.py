"""``hello-world``: an image of one tiny program, assembled here byte by byte.

Docker's ``hello-world`` image is ``FROM scratch`` plus a single static program that prints
a greeting and exits. labtool makes its own, offline: the program is a few machine
instructions and the message, wrapped in the smallest ELF file Linux will execute
(man 5 elf). No compiler, no libc: the instructions make two system calls,

    write(1, message, length)       (man 2 write)  syscall 1 on x86_64, 64 on aarch64
    exit(0)                         (man 2 exit)   syscall 60 on x86_64, 93 on aarch64

The file is laid out like this, all in one read+execute segment loaded at 0x400000::

    offset 0     ELF header (64 bytes): "\\x7fELF", 64-bit, little-endian, an executable
                 for this machine, entry point = the address of the code
    offset 64    one program header (56 bytes): PT_LOAD "map the whole file at 0x400000"
    offset 120   the code (the instructions below)
    after it     the message

About 1.1 kB in all, most of it the message: an image can be that small because a
container needs no operating system inside, only the program (the kernel is the host's).
"""

import datetime
import struct

from labtool.images import store

MESSAGE = """
Hello from labtool!
This message shows that your installation appears to be working correctly.

To generate this message, labtool took the following steps:
 1. The labtool command looked for the image "hello-world" in its image store
    (an OCI image layout under /var/lib/labtool/images).
 2. It was not there, so labtool made it, offline: one layer holding a single
    static program of about 1 kB, most of it this message (assembled byte by
    byte by labtool/images/hello.py). Docker would pull such an image from a
    registry; labtool pull can do that too.
 3. labtool created a new container from that image: new namespaces, a cgroup,
    an overlay root filesystem made from the image's layer, and then it ran the
    program, which wrote this message on its standard output.
 4. labtool passed that output on to your terminal.

To try something more ambitious, run a shell in a busybox container:
 $ labtool run -it busybox sh

The notebooks show each of these steps; 04b-images builds, pushes and pulls images.
"""

BASE = 0x400000              # where the file is mapped in memory (a customary address)
CODE_OFFSET = 64 + 56        # right after the ELF header and the one program header


def _x86_64(message_address, length):
    """x86_64 machine code: write(1, msg, len); exit(0)."""
    return b"".join([
        b"\xb8" + struct.pack("<I", 1),               # mov eax, 1        (write)
        b"\xbf" + struct.pack("<I", 1),               # mov edi, 1        (fd 1: stdout)
        b"\xbe" + struct.pack("<I", message_address),  # mov esi, msg      (the buffer)
        b"\xba" + struct.pack("<I", length),          # mov edx, len      (its length)
        b"\x0f\x05",                                  # syscall
        b"\xb8" + struct.pack("<I", 60),              # mov eax, 60       (exit)
        b"\x31\xff",                                  # xor edi, edi      (status 0)
        b"\x0f\x05",                                  # syscall
    ])


def _aarch64(message_address, length):
    """aarch64 machine code: the same two system calls (arguments in x0-x2, number in x8).
    (Checked with aarch64-linux-gnu-objdump; there is no aarch64 machine to run it on here.)"""
    def movz(register, value):                        # movz xN, #value (16 bits)
        return 0xD2800000 | (value << 5) | register

    code_address = BASE + CODE_OFFSET
    adr_offset = message_address - (code_address + 2 * 4)   # adr is the third instruction
    adr = 0x10000000 | ((adr_offset & 3) << 29) | (((adr_offset >> 2) & 0x7FFFF) << 5) | 1
    words = [
        movz(8, 64),              # mov x8, #64   (write)
        movz(0, 1),               # mov x0, #1    (stdout)
        adr,                      # adr x1, msg   (the buffer, relative to this instruction)
        movz(2, length),          # mov x2, #len
        0xD4000001,               # svc #0
        movz(8, 93),              # mov x8, #93   (exit)
        movz(0, 0),               # mov x0, #0
        0xD4000001,               # svc #0
    ]
    return b"".join(struct.pack("<I", w) for w in words)


MACHINES = {"x86_64": (62, _x86_64), "aarch64": (183, _aarch64)}   # e_machine (man 5 elf), assembler


def program(machine, message=MESSAGE):
    """The bytes of a static ELF executable for ``machine`` that prints ``message``."""
    e_machine, assemble = MACHINES[machine]
    text = message.encode()
    code_size = len(assemble(BASE, 0))          # the same length whatever the operands
    message_address = BASE + CODE_OFFSET + code_size
    code = assemble(message_address, len(text))
    size = CODE_OFFSET + code_size + len(text)
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)   # 64-bit, little-endian, ELF version 1, SysV ABI
    header += struct.pack("<HHIQQQIHHHHHH",
                          2,                     # e_type: ET_EXEC, an executable
                          e_machine,             # EM_X86_64 (62) or EM_AARCH64 (183)
                          1,                     # e_version
                          BASE + CODE_OFFSET,    # e_entry: where execution starts
                          64,                    # e_phoff: the program header follows
                          0,                     # e_shoff: no section headers
                          0,                     # e_flags
                          64, 56, 1,             # e_ehsize, e_phentsize, e_phnum
                          0, 0, 0)               # no section headers, no names
    segment = struct.pack("<IIQQQQQQ",
                          1,                     # p_type: PT_LOAD
                          5,                     # p_flags: PF_R | PF_X
                          0, BASE, BASE,         # from file offset 0, at this address
                          size, size,            # file and memory size
                          0x1000)                # alignment: a page
    return header + segment + code + text


def make_hello_world(ref="hello-world:latest"):
    """Make ``hello-world`` (FROM scratch + /hello) for this machine and add it to the store."""
    import os
    import tarfile

    from labtool.errors import LabtoolError

    machine = os.uname().machine
    if machine not in MACHINES:
        raise LabtoolError(f"labtool can assemble hello-world for {' and '.join(MACHINES)}, not {machine}")
    binary = program(machine)
    info = tarfile.TarInfo("hello")
    info.size, info.mode = len(binary), 0o755
    created = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        "created": created,
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}[machine],
        "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "history": [{"created": created,
                     "created_by": "labtool: /hello, a static ELF assembled by labtool/images/hello.py"},
                    {"created": created, "created_by": '/bin/sh -c #(nop)  CMD ["/hello"]', "empty_layer": True}],
    }
    return store.add_image(ref, [store.layer_tar([(info, binary)])], config)
