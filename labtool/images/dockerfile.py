"""Reading a Dockerfile: lines into instructions, words into values.

The format (Docker's "Dockerfile reference")::

    # escape=`                    a parser directive: only at the very top
    # a comment                   a line whose first non-blank character is #
    FROM busybox AS base          INSTRUCTION arguments   (the keyword in any case)
    RUN echo one \\               a line ending in the escape character goes on
        && echo two               on the next one (comment lines in between are dropped)
    CMD ["httpd", "-f"]           "exec form": a JSON array, run as it is
    CMD httpd -f                  "shell form": run by the SHELL, /bin/sh -c "httpd -f"

Words of ENV, LABEL, ARG, COPY, ADD, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL and FROM
go through a small shell-like lexer: quotes group, the escape character protects, and
``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:+instead}`` are replaced by the
values of ENV and ARG so far. RUN, CMD and ENTRYPOINT are left alone: the shell in the
container expands those when it runs them.

This module only reads; ``build.py`` does what the instructions say.
"""

import json
import re
from dataclasses import dataclass, field

from labtool.errors import LabtoolError

INSTRUCTIONS = ("FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL")
# the --flags each instruction accepts
FLAGS = {"COPY": ("from", "chown", "chmod"), "ADD": ("chown", "chmod"), "FROM": ("platform",)}


class DockerfileError(LabtoolError):
    """A mistake in the Dockerfile: ``Dockerfile:7: unknown instruction: RUNN``."""

    def __init__(self, filename, line, message):
        super().__init__(f"{filename}:{line}: {message}")


@dataclass
class Instruction:
    line: int                 # where it starts in the file, from 1
    keyword: str              # "RUN", upper case
    args: str                 # the rest of it, continuation lines joined
    original: str             # as written (after joining): what "Step 3/13 : ..." shows
    flags: dict = field(default_factory=dict)   # COPY --from=builder -> {"from": "builder"}


@dataclass
class Dockerfile:
    name: str                 # "Dockerfile", for error messages
    escape: str
    instructions: list

    def error(self, instruction, message):
        return DockerfileError(self.name, instruction.line, message)


def parse(text, name="Dockerfile"):
    """The instructions of a Dockerfile's text, or a ``DockerfileError`` naming the line."""
    lines = text.splitlines()
    escape, first = _directives(lines, name)
    continued = re.compile(re.escape(escape) + r"[ \t]*$")
    instructions, pending, start = [], None, 0
    for number, raw in enumerate(lines[first:], first + 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and pending is None):
            continue                       # comments go, even between continued lines
        if not stripped:
            continue                       # an empty line inside a continued instruction
        if pending is None:
            pending, start = "", number
        m = continued.search(raw)
        if m:
            pending += raw[:m.start()]
            continue
        instructions.append(_instruction(pending + raw, start, name))
        pending = None
    if pending is not None and pending.strip():
        instructions.append(_instruction(pending, start, name))
    if not instructions:
        raise DockerfileError(name, 1, "the Dockerfile has no instructions (it needs at least a FROM)")
    return Dockerfile(name, escape, instructions)


def _directives(lines, name):
    """``# escape=\\`` and ``# syntax=...`` at the very top; return the escape character and
    the index of the first line after the directives."""
    escape, i = "\\", 0
    while i < len(lines):
        m = re.fullmatch(r"#\s*([A-Za-z]+)\s*=\s*(\S*)\s*", lines[i])
        if not m or m.group(1).lower() not in ("escape", "syntax"):
            break
        if m.group(1).lower() == "escape":
            if m.group(2) not in ("\\", "`"):
                raise DockerfileError(name, i + 1, f"invalid escape token '{m.group(2)}': use \\ or `")
            escape = m.group(2)
        i += 1
    return escape, i


def _instruction(text, line, name):
    text = text.strip()
    word, rest = (re.split(r"\s+", text, maxsplit=1) + [""])[:2]
    keyword = word.upper()
    if keyword not in INSTRUCTIONS:
        raise DockerfileError(name, line, f"unknown instruction: {keyword}")
    rest, flags = _flags(rest.strip(), keyword, line, name)
    if not rest and keyword not in ("CMD", "ENTRYPOINT"):
        raise DockerfileError(name, line, f"{keyword} requires at least one argument")
    return Instruction(line, keyword, rest, text, flags)


def _flags(rest, keyword, line, name):
    """Leading ``--name=value`` words (COPY --from=..., --chown=...)."""
    flags = {}
    while rest.startswith("--"):
        word, _, after = rest.partition(" ")
        key, sep, value = word[2:].partition("=")
        if key not in FLAGS.get(keyword, ()):
            raise DockerfileError(name, line, f"{keyword} --{key}: unknown flag"
                                  + (" (labtool does not support it)" if keyword == "RUN" else ""))
        if not sep:
            raise DockerfileError(name, line, f"{keyword} --{key} needs a value: --{key}=VALUE")
        flags[key] = value
        rest = after.strip()
    return rest, flags


# --- the two forms -----------------------------------------------------------------------

def exec_form(args):
    """``["httpd", "-f"]`` -> the list; None when the text is not a JSON array of strings
    (then it is the shell form, as Docker decides)."""
    if not args.lstrip().startswith("["):
        return None
    try:
        value = json.loads(args)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


# --- words and variables -------------------------------------------------------------------

def words(text, env, escape="\\"):
    """Split ``text`` into words like a shell: whitespace separates, quotes group, the
    escape character protects the next one, and variables are replaced (see ``expand``)."""
    return [w for w, _ in _lex(text, env, escape, split=True)]


def expand(text, env, escape="\\"):
    """One word: quotes removed, variables replaced by their values in ``env``."""
    return "".join(w for w, _ in _lex(text, env, escape, split=False))


def _lex(text, env, escape, split):
    out, word, quoted, i = [], "", False, 0
    in_double = False
    while i < len(text):
        ch = text[i]
        if ch == escape and i + 1 < len(text) and not (in_double and text[i + 1] not in '"$' + escape):
            word += text[i + 1]
            quoted = True
            i += 2
            continue
        if ch == "'" and not in_double:
            end = text.find("'", i + 1)
            if end < 0:
                raise LabtoolError(f"unexpected end of statement while looking for matching single-quote: {text}")
            word += text[i + 1:end]
            quoted = True
            i = end + 1
            continue
        if ch == '"':
            in_double = not in_double
            quoted = True
            i += 1
            continue
        if ch == "$":
            value, i = _variable(text, i, env, escape)
            word += value
            continue
        if split and ch in " \t\n" and not in_double:
            if word or quoted:
                out.append((word, quoted))
            word, quoted = "", False
            i += 1
            continue
        word += ch
        i += 1
    if in_double:
        raise LabtoolError(f"unexpected end of statement while looking for matching double-quote: {text}")
    if word or quoted or not split:
        out.append((word, quoted))
    return out


def _variable(text, i, env, escape):
    """``$NAME`` or ``${NAME...}`` at text[i]; return its value and where the text goes on."""
    if i + 1 < len(text) and text[i + 1] == "{":
        end = text.find("}", i + 2)
        if end < 0:
            raise LabtoolError(f"missing '}}' in: {text}")
        inner = text[i + 2:end]
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])(.*))?", inner, re.S)
        if not m:
            raise LabtoolError(f"bad substitution: ${{{inner}}}")
        name, op, word = m.groups()
        value = env.get(name)
        if op == ":-":
            value = value if value else expand(word, env, escape)
        elif op == ":+":
            value = expand(word, env, escape) if value else ""
        return value or "", end + 1
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i + 1:])
    if not m:
        return "$", i + 1
    return env.get(m.group(0), ""), i + 1 + m.end()


def key_values(text, env, escape, keyword):
    """``ENV A=1 B="two words"`` -> [("A", "1"), ("B", "two words")]; the old form
    ``ENV A the rest of the line`` -> [("A", "the rest of the line")]. LABEL and ARG too."""
    parts = words(text, env, escape)
    if parts and "=" not in parts[0]:
        if keyword == "LABEL" or keyword == "ARG":
            return [(p, None) for p in parts] if keyword == "ARG" else [(parts[0], " ".join(parts[1:]))]
        key, _, value = text.strip().partition(" ")
        if not value.strip():
            raise LabtoolError(f"{keyword} {key} needs a value: {keyword} {key}=VALUE")
        return [(expand(key, env, escape), expand(value.strip(), env, escape))]
    pairs = []
    for part in parts:
        key, sep, value = part.partition("=")
        if not key:
            raise LabtoolError(f"{keyword} names can not be blank")
        pairs.append((key, value if sep else None))
    return pairs
