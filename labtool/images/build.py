"""``labtool build``: an image from a Dockerfile, one instruction at a time (Docker's classic builder).

Every instruction makes a new image on top of the previous one, and every one of them is
kept (untagged: Docker's "intermediate images"). Three kinds of steps::

    RUN cmd        a container from the previous image runs ``/bin/sh -c cmd``; what it
                   changed (its overlay upperdir, ``changes.py``) becomes a new layer
                   " ---> Running in <container>"  ...its output...  " ---> <image>"
                   "Removing intermediate container <container>"
    COPY / ADD     files of the build context (or of another stage: ``--from``) packed
                   into a new layer directly, no container needed
    ENV, CMD ...   only the image's config changes: no layer, the history entry says
                   ``"empty_layer": true`` (Docker commits a container it never starts)

The cache: before running a step, look for an image already made *from the same parent*
by *the same instruction* (its history's ``created_by``, which for COPY includes a hash
of the files' contents, and for RUN the build arguments in effect). Found: " ---> Using
cache", and the step costs nothing. So the order of a Dockerfile matters: what changes
often goes last.

Multi-stage builds: each ``FROM`` starts a stage; ``COPY --from=NAME`` takes files from an
earlier one; only the last stage (or ``--target``) is tagged.
"""

import copy
import datetime
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
from dataclasses import dataclass, field

from labtool import changes, process, units
from labtool.errors import LabtoolError, UsageError
from labtool.images import context as ctx
from labtool.images import dockerfile, reference, store
from labtool.spec import DEFAULT_PATH

# ARGs every build knows without declaring them (Docker's predefined proxy arguments)
PREDEFINED_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
                   "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")
NOT_SUPPORTED = {
    "HEALTHCHECK": "labtool runs no health checks: HEALTHCHECK is not supported by labtool",
    "ONBUILD": "ONBUILD (instructions for images built FROM this one) is not supported by labtool",
}


class BuildFailed(LabtoolError):
    """A RUN step's command failed: docker build exits 1, and so do we."""

    exit_code = 1


@dataclass
class Stage:
    """One ``FROM ... [AS name]`` and the instructions after it."""

    index: int
    name: str
    start: dockerfile.Instruction
    instructions: list
    image: object = None                 # the latest store.Image of this stage (None: scratch, nothing yet)
    args: dict = field(default_factory=dict)   # ARGs in scope: name -> value (None: declared, no value)
    meta: dict = field(default_factory=dict)   # the global ARGs (before the first FROM)
    cmd_set: bool = False                # a CMD in this stage (then ENTRYPOINT keeps it)


@dataclass
class Options:
    context: str
    dockerfile: str = ""                 # -f; default: CONTEXT/Dockerfile
    tags: list = field(default_factory=list)
    build_args: dict = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    quiet: bool = False


def build(options):
    """Build; return the final ``store.Image``. Prints Docker's classic output unless quiet."""
    with store.writing():                 # no garbage collection meanwhile (see store.collect_garbage)
        return Builder(options).run()


class Builder:
    def __init__(self, options):
        self.o = options
        self.say = (lambda *a: None) if options.quiet else (lambda text: print(text, flush=True))
        self.used_args = set()
        self.step = 0

    # --- the whole build -------------------------------------------------------------------

    def run(self):
        o = self.o
        if os.path.isfile(o.context):           # "labtool build Dockerfile": the directory is meant
            raise UsageError(f"unable to prepare context: context must be a directory: {o.context} "
                             f"(give the directory that holds it, e.g. {os.path.dirname(o.context) or '.'})")
        if not os.path.isdir(o.context):
            raise UsageError(f"unable to prepare context: path \"{o.context}\" not found")
        path = o.dockerfile or os.path.join(o.context, "Dockerfile")
        if not os.path.isabs(path) and o.dockerfile and not os.path.exists(path):
            path = os.path.join(o.context, o.dockerfile)
        try:
            with open(path) as f:
                text = f.read()
        except IsADirectoryError:
            raise UsageError(f"unable to prepare context: -f {path} is a directory: name the Dockerfile in it") \
                from None
        except OSError:
            raise UsageError(f"unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
                             f"lstat {path}: no such file or directory") from None
        for ref in o.tags:
            try:
                reference.parse(ref, default="")
            except UsageError:
                raise UsageError(f"invalid argument \"{ref}\" for \"-t, --tag\" flag: invalid reference format") \
                    from None
        self.df = dockerfile.parse(text, os.path.basename(path))
        meta, stages = self.stages()
        self.context = ctx.Context(o.context)
        self.say(f"Sending build context to Docker daemon  {units.human_size(self.context.size(), 4)}")
        self.total = len(self.meta_args) + sum(1 + len(s.instructions) for s in stages)
        for ins in self.meta_args:              # Docker counts and shows the ARGs before FROM too
            self.begin(ins)
        self.stages_done = []
        image = None
        for stage in stages:
            image = self.run_stage(stage, meta)
            self.stages_done.append(stage)
        if image is None:
            raise LabtoolError("the build made no image: FROM scratch needs at least one more instruction")
        unused = sorted(set(o.build_args) - self.used_args - set(PREDEFINED_ARGS))
        if unused:
            self.say(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed")
        self.say(f"Successfully built {short(image.id)}")
        for ref in o.tags:
            store.tag(image, ref)
            self.say(f"Successfully tagged {store.normalize(ref)}")
        return image

    def stages(self):
        """The global ARGs (before the first FROM) and the stages up to the target."""
        meta, stages = {}, []
        self.meta_args = []
        for ins in self.df.instructions:
            if ins.keyword == "FROM":
                parts = dockerfile.words(ins.args, self.values_of(meta), self.df.escape)
                name = parts[2].lower() if len(parts) == 3 and parts[1].upper() == "AS" else ""
                if len(parts) not in (1, 3) or (len(parts) == 3 and not name):
                    raise self.df.error(ins, "FROM requires either one or three arguments: FROM IMAGE [AS NAME]")
                if name and name in (s.name for s in stages):     # COPY --from=NAME would be ambiguous
                    raise self.df.error(ins, f"duplicate stage name {name!r}: each FROM ... AS NAME needs its own")
                stages.append(Stage(len(stages), name, ins, []))
            elif not stages:
                if ins.keyword != "ARG":
                    raise self.df.error(ins, f"{ins.keyword}: no build stage in current context "
                                             "(a Dockerfile starts with FROM, or ARGs before FROM)")
                self.meta_args.append(ins)
                for key, value in self.key_values(ins, self.values_of(meta)):
                    meta[key] = self.o.build_args.get(key, value)
                    if key in self.o.build_args:
                        self.used_args.add(key)
            else:
                stages[-1].instructions.append(ins)
        if not stages:
            raise dockerfile.DockerfileError(self.df.name, self.df.instructions[-1].line,
                                             "no build stage: the Dockerfile needs a FROM")
        if self.o.target:
            names = [s.name for s in stages]
            if self.o.target.lower() not in names:
                raise UsageError(f"failed to reach build target {self.o.target} in Dockerfile "
                                 f"(stages: {', '.join(n for n in names if n) or 'none named'})")
            stages = stages[:names.index(self.o.target.lower()) + 1]
        return meta, stages

    def run_stage(self, stage, meta):
        self.begin(stage.start)
        words = dockerfile.words(stage.start.args, self.values_of(meta), self.df.escape)
        stage.image = self.base_image(words[0], stage.start)
        if stage.image is not None:
            self.say(f" ---> {short(stage.image.id)}")
        stage.meta = meta
        for ins in stage.instructions:
            self.begin(ins)
            try:
                self.do(stage, ins)
            except (BuildFailed, dockerfile.DockerfileError, KeyboardInterrupt):
                raise
            except LabtoolError as e:
                raise dockerfile.DockerfileError(self.df.name, ins.line, str(e)) from None
        return stage.image

    def base_image(self, name, ins):
        if name == "scratch":
            return None
        for done in self.stages_done:
            if done.name and done.name == name.lower():
                return done.image
        from labtool import images

        try:
            return images.find_or_make(name)
        except LabtoolError as e:
            raise self.df.error(ins, str(e)) from None

    def begin(self, ins):
        self.step += 1
        self.say(f"Step {self.step}/{self.total} : {ins.original}")

    # --- one instruction -------------------------------------------------------------------

    def do(self, stage, ins):
        kw = ins.keyword
        if kw in NOT_SUPPORTED:
            raise self.df.error(ins, NOT_SUPPORTED[kw])
        if kw == "RUN":
            return self.run_step(stage, ins)
        if kw in ("COPY", "ADD"):
            return self.copy_step(stage, ins)
        if kw == "ARG":
            return self.arg_step(stage, ins)
        return self.metadata_step(stage, ins)

    def metadata_step(self, stage, ins):
        """ENV LABEL EXPOSE VOLUME USER WORKDIR CMD ENTRYPOINT STOPSIGNAL SHELL MAINTAINER."""
        kw, config = ins.keyword, self.config(stage)
        settings = config.setdefault("config", {})
        values = self.values(stage)
        layer = None
        if kw in ("ENV", "LABEL"):
            pairs = self.key_values(ins, values)
            if kw == "ENV":
                env = dict(e.partition("=")[::2] for e in settings.get("Env") or [])
                env.update(pairs)
                settings["Env"] = [f"{k}={v}" for k, v in env.items()]
            else:
                settings["Labels"] = dict(settings.get("Labels") or {}, **dict(pairs))
            shown = " ".join(f"{k}={v}" for k, v in pairs)
        elif kw in ("CMD", "ENTRYPOINT"):
            argv = self.command(stage, ins.args)
            settings["Cmd" if kw == "CMD" else "Entrypoint"] = argv
            if kw == "ENTRYPOINT" and not stage.cmd_set:
                settings.pop("Cmd", None)        # a new ENTRYPOINT drops the base image's CMD
            if kw == "CMD":
                stage.cmd_set = True
            shown = "[" + " ".join(json.dumps(a) for a in argv) + "]"
        elif kw == "EXPOSE":
            from labtool.network.ports import expand_exposed
            ports = {}
            for port in dockerfile.words(ins.args, values, self.df.escape):
                try:                                    # a range is stored as one key per port, as Docker does
                    ports.update(dict.fromkeys(expand_exposed(port), {}))
                except UsageError:
                    raise LabtoolError(f"EXPOSE: invalid port '{port}': use PORT, PORT/tcp, PORT/udp "
                                       f"or a range LOW-HIGH (1-65535)") from None
            settings["ExposedPorts"] = dict(settings.get("ExposedPorts") or {}, **ports)
            shown = " ".join(ports)
        elif kw == "VOLUME":
            found = self.list_or_words(ins.args, values)
            settings["Volumes"] = dict(settings.get("Volumes") or {}, **{v: {} for v in found})
            shown = "[" + " ".join(found) + "]"
        elif kw == "USER":
            settings["User"] = shown = dockerfile.expand(ins.args.strip(), values, self.df.escape)
        elif kw == "STOPSIGNAL":
            shown = dockerfile.expand(ins.args.strip(), values, self.df.escape)
            if process.parse_signal(shown) is None:
                raise self.df.error(ins, f"STOPSIGNAL: invalid signal: {shown!r} (a name like SIGINT, or a number)")
            settings["StopSignal"] = shown
        elif kw == "MAINTAINER":
            config["author"] = shown = ins.args.strip()
        elif kw == "SHELL":
            argv = dockerfile.exec_form(ins.args)
            if not argv:
                raise LabtoolError('SHELL requires the arguments to be in JSON form: SHELL ["/bin/sh", "-c"]')
            settings["Shell"] = argv
            shown = "[" + " ".join(json.dumps(a) for a in argv) + "]"
        elif kw == "WORKDIR":
            path = dockerfile.expand(ins.args.strip(), values, self.df.escape)
            path = os.path.normpath(os.path.join(settings.get("WorkingDir") or "/", path))
            settings["WorkingDir"] = shown = path
            if stage.image is None or changes.find_in_layers(stage.image.layers, path) is None:
                layer = self.layer(stage, [(path, None, None)], chown=None)   # WORKDIR makes the directory
        else:                                                                 # pragma: no cover
            raise LabtoolError(f"{kw}: not handled")
        created_by = f"/bin/sh -c #(nop) {'' if kw == 'WORKDIR' else ' '}{kw} {shown}"
        self.commit(stage, created_by, config, layer, container=True)

    def arg_step(self, stage, ins):
        """ARG inside a stage: declares a build argument from here to the end of the stage."""
        pairs = self.key_values(ins, self.values(stage))
        for key, default in pairs:
            if key in self.o.build_args:
                value = self.o.build_args[key]
                self.used_args.add(key)
            elif default is not None:
                value = default
            else:
                value = stage.meta.get(key)            # a global ARG, declared again to use it here
            stage.args[key] = value
        shown = " ".join(k if v is None else f"{k}={v}" for k, v in pairs)
        self.commit(stage, f"/bin/sh -c #(nop)  ARG {shown}", self.config(stage), None, container=True)

    def run_step(self, stage, ins):
        import signal

        from labtool import runtime
        from labtool.engine import lifecycle, supervisor
        from labtool.spec import ContainerSpec, Process

        argv = self.command(stage, ins.args)
        settings = self.config(stage).get("config", {})
        env = dict(e.partition("=")[::2] for e in settings.get("Env") or [])
        args = {k: v for k, v in stage.args.items() if v is not None}
        prefix = f"|{len(args)} " + " ".join(f"{k}={v}" for k, v in sorted(args.items())) + " " if args else ""
        created_by = prefix + " ".join(argv)
        if self.cached(stage, created_by):
            return
        if stage.image is None:
            raise LabtoolError("RUN needs a base image with a shell: FROM scratch has no files to run")
        extra = [f"{k}={v}" for k, v in sorted(args.items()) if k not in env]
        if "PATH" not in env:
            extra.append(f"PATH={DEFAULT_PATH}")
        spec = ContainerSpec(image=stage.image.id, entrypoint=[],
                             process=Process(args=argv, env=extra, cwd=settings.get("WorkingDir") or "/",
                                             user=settings.get("User") or ""))
        c = lifecycle.create(spec)
        handlers = {sig: signal.getsignal(sig) for sig in process.PASSED_ON}
        try:
            self.say(f" ---> Running in {short(c.id)}")
            sys.stdout.flush()
            watcher = supervisor.Supervisor(c, attached=not self.o.quiet)
            process.cancel_on_interrupt, process.interrupted[:] = True, []
            try:
                code = watcher.run()
            finally:        # the runtime passed our signals on to the step's container: take them back
                process.cancel_on_interrupt = False
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)
            if process.interrupted:                     # Ctrl-C: the build stops here, as Docker's does
                raise KeyboardInterrupt
            if code != 0:
                if watcher.error is not None:
                    print(f"labtool: {watcher.error}", file=sys.stderr, flush=True)
                raise BuildFailed(f"The command '{' '.join(argv)}' returned a non-zero code: {code}")
            layer = _layer_of_container(c.dir)
            self.commit(stage, created_by, self.config(stage), layer)
        finally:
            runtime.remove(c.dir)
        self.say(f"Removing intermediate container {short(c.id)}")

    def copy_step(self, stage, ins):
        """COPY [--from=STAGE] [--chown=U:G] [--chmod=MODE] SRC... DEST; ADD also unpacks
        local tar archives."""
        values = self.values(stage)
        parts = self.list_or_words(ins.args, values)
        if len(parts) < 2:
            raise LabtoolError(f"{ins.keyword} requires at least two arguments: {ins.keyword} SOURCE... DEST")
        *sources, dest = parts
        tree, where = self.source_tree(stage, ins)
        urls = [source for source in sources if "://" in source]
        if urls and ins.keyword == "COPY":
            raise LabtoolError(f"COPY cannot fetch a URL ({urls[0]}): use ADD, or download it into the context")
        if urls:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="labtool-add-") as downloads:
                return self.add_step(stage, ins, sources, dest, tree, where, _download(urls, downloads))
        return self.add_step(stage, ins, sources, dest, tree, where, {})

    def add_step(self, stage, ins, sources, dest, tree, where, downloaded):
        """The files of a COPY or ADD into a new layer (``downloaded``: URL -> a local copy)."""
        workdir = self.config(stage).get("config", {}).get("WorkingDir") or "/"
        target = os.path.normpath(os.path.join(workdir, dest))
        matched = [source for source in sources if source in downloaded]
        for source in sources:
            if source in downloaded:
                continue
            rel = os.path.normpath(source.lstrip("/"))
            if rel == ".." or rel.startswith("../"):
                raise LabtoolError(f"{ins.keyword} failed: forbidden path outside the build context: {source}")
            found = ctx.glob(tree, rel) if rel != "." else [""]
            if not found:
                raise LabtoolError(f"{ins.keyword} failed: file not found in {where}: stat {source}: "
                                   "file does not exist")
            matched += found
        into_dir = dest.endswith("/") or dest in (".", "./") or len(matched) > 1 or (
            stage.image is not None and _is_dir(changes.find_in_layers(stage.image.layers, target)))
        if len(matched) > 1 and not into_dir:
            raise LabtoolError(f"When using {ins.keyword} with more than one source file, "
                               "the destination must be a directory and end with a /")
        entries = []                              # (path in the image, host path, tar member or None)
        for rel in matched:
            host = downloaded.get(rel) or tree.lookup(rel)
            if rel in downloaded:                 # a URL: saved as a file, never unpacked (as in Docker)
                name = os.path.basename(rel.split("?")[0].rstrip("/")) or "index.html"
                entries.append((os.path.join(target, name) if into_dir else target, host, None))
            elif _is_dir(host):
                entries.append((target, host, None))
                entries += [(os.path.join(target, os.path.relpath(inside, rel or ".")), tree.lookup(inside), None)
                            for inside in ctx.walk(tree, rel)]
            elif ins.keyword == "ADD" and _is_tar(host):
                entries += _tar_entries(host, target)
            else:
                entries.append((os.path.join(target, os.path.basename(rel)) if into_dir else target, host, None))
        chown = self.owner(stage, ins.flags.get("chown"))
        chmod = _octal_mode(ins.keyword, ins.flags["chmod"]) if ins.flags.get("chmod") else None
        kind = "dir" if len(matched) == 1 and matched[0] not in downloaded and _is_dir(tree.lookup(matched[0])) else \
            "file" if len(matched) == 1 else "multi"
        digest = _content_hash(entries, chown, chmod)
        flags = "".join(f"--{k}={v} " for k, v in sorted(ins.flags.items()))
        created_by = f"/bin/sh -c #(nop) {ins.keyword} {flags}{kind}:{digest} in {dest} "
        if self.cached(stage, created_by):
            return
        layer = self.layer(stage, entries, chown, chmod)
        self.commit(stage, created_by, self.config(stage), layer)

    # --- helpers ---------------------------------------------------------------------------

    def source_tree(self, stage, ins):
        """Where COPY reads: the context, or with --from a stage (name or number) or an image."""
        name = ins.flags.get("from")
        if not name:
            return self.context, "build context or excluded by .dockerignore"
        if name.lower() == stage.name or name == str(stage.index):
            raise LabtoolError(f"COPY --from={name}: a stage cannot copy from itself")
        for done in self.stages_done:
            if name.lower() == done.name or name == str(done.index):
                if done.image is None:
                    raise LabtoolError(f"COPY --from={name}: that stage has no files")
                return ctx.ImageTree(done.image.layers), f"stage {name}"
        from labtool import images

        image = images.find_or_make(name)
        return ctx.ImageTree(image.layers), f"image {name}"

    def owner(self, stage, chown):
        """--chown=USER[:GROUP] as numbers, names read from the image's /etc/passwd and /etc/group."""
        if not chown:
            return None
        user, _, group = chown.partition(":")

        def number(name, table, what):
            if name.isdigit():
                return int(name)
            path = changes.find_in_layers(stage.image.layers, table) if stage.image else None
            for line in open(path).read().splitlines() if path else []:
                fields = line.split(":")
                if len(fields) > 2 and fields[0] == name:
                    return int(fields[2])
            raise LabtoolError(f"--chown: unable to find {what} {name} in the image's {table}")
        uid = number(user, "/etc/passwd", "user")
        gid = number(group, "/etc/group", "group") if group else uid
        return uid, gid

    def layer(self, stage, entries, chown, chmod=None):
        """A layer tar of ``entries``, with the directories above them: those the image has
        keep their owner and mode (overlayfs shows the upper layer's), new ones are 0755."""
        buf = io.BytesIO()
        layers = stage.image.layers if stage.image else []
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            written = set()
            for path, host, member in sorted(entries, key=lambda e: e[0]):
                for parent in _parents(path):
                    if parent in written:
                        continue
                    written.add(parent)
                    existing = changes.find_in_layers(layers, parent)
                    info = tarfile.TarInfo(parent.lstrip("/"))
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    if existing and os.path.isdir(existing):
                        st = os.lstat(existing)
                        info.mode, info.uid, info.gid, info.mtime = st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime
                    tar.addfile(_plain(info))
                if path in written:
                    continue
                written.add(path)
                name = path.lstrip("/")
                if member is not None:                    # from a tar archive (ADD)
                    data = member.pop("data")
                    info = member.pop("info")
                    info.name = name
                    tar.addfile(_plain(info), io.BytesIO(data) if data is not None else None)
                    continue
                if host is None:                           # a directory to make (WORKDIR, dest)
                    info = tarfile.TarInfo(name)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    info.mtime = int(datetime.datetime.now().timestamp())
                else:
                    info = tar.gettarinfo(host, arcname=name)
                    if info is None:
                        continue                           # a socket: nothing to copy
                    if chmod is not None:
                        info.mode = chmod
                if host is not None and self.from_context(host):
                    info.uid = info.gid = 0                # the context's files belong to root, as in Docker
                if chown:
                    info.uid, info.gid = chown
                if info.isreg():
                    with open(host, "rb") as f:
                        tar.addfile(_plain(info), f)
                else:
                    tar.addfile(_plain(info))
        return buf.getvalue()

    def from_context(self, host):
        return host == self.context.root or host.startswith(self.context.root + os.sep)

    def cached(self, stage, created_by):
        """Use the image an earlier build made from the same parent by the same instruction."""
        if self.o.no_cache:
            return False
        parent = stage.image.id if stage.image else ""
        for entry in store.children_of(parent) if parent else []:
            image = store.from_manifest(entry.manifest, entry.refs[0] if entry.refs else "")
            if (image.config.get("history") or [{}])[-1].get("created_by") == created_by:
                stage.image = image
                self.say(" ---> Using cache")
                self.say(f" ---> {short(image.id)}")
                return True
        return False

    def commit(self, stage, created_by, config, layer, container=False):
        """A new image: the stage's image + ``layer`` (None: metadata only) + ``config``.

        ``container``: do as Docker's classic builder does for a metadata step, and make a
        container of the parent (never started) to commit: " ---> Running in ...".
        """
        made = None
        if container:
            if self.cached(stage, created_by):
                return
            made = self.intermediate(stage, created_by)
        try:
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            history = {"created": now, "created_by": created_by}
            if stage.image is None:
                config = copy.deepcopy(config)
                config["history"] = config.get("history", []) + [history if layer is not None
                                                                 else dict(history, empty_layer=True)]
                config["created"] = now
                stage.image = store.add_image(None, [layer] if layer is not None else [], config)
            else:
                stage.image = store.add_layer(stage.image, None, layer, history, config)
            self.say(f" ---> {short(stage.image.id)}")
        finally:
            if made is not None:
                from labtool import runtime

                runtime.remove(made.dir)
        if made is not None:
            self.say(f"Removing intermediate container {short(made.id)}")

    def intermediate(self, stage, created_by):
        if stage.image is None:
            return None
        from labtool.engine import lifecycle
        from labtool.spec import ContainerSpec, Process

        c = lifecycle.create(ContainerSpec(image=stage.image.id, entrypoint=[],
                                           process=Process(args=["/bin/sh", "-c", created_by.split(" -c ", 1)[1]])))
        self.say(f" ---> Running in {short(c.id)}")
        return c

    def config(self, stage):
        """A copy of the stage's image config (for scratch: an empty one)."""
        if stage.image is not None:
            return copy.deepcopy(stage.image.config)
        return {"architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
                "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}, "history": []}

    def values(self, stage):
        """What $VAR means in this stage: its ARGs, then its ENV (ENV wins)."""
        found = self.values_of(stage.args)
        env = self.config(stage).get("config", {}).get("Env") or []
        found.update(e.partition("=")[::2] for e in env)
        return found

    @staticmethod
    def values_of(args):
        return {k: v for k, v in args.items() if v is not None}

    def key_values(self, ins, values):
        return dockerfile.key_values(ins.args, values, self.df.escape, ins.keyword)

    def list_or_words(self, text, values):
        as_list = dockerfile.exec_form(text)
        if as_list is not None:
            return [dockerfile.expand(w, values, self.df.escape) for w in as_list]
        return dockerfile.words(text, values, self.df.escape)

    def command(self, stage, text):
        """Exec form as it is; shell form run by the SHELL (default ``/bin/sh -c``)."""
        argv = dockerfile.exec_form(text)
        if argv is not None:
            return argv
        shell = self.config(stage).get("config", {}).get("Shell") or ["/bin/sh", "-c"]
        return list(shell) + [text.strip()] if text.strip() else []


def _plain(info):
    info.uname = info.gname = ""           # numeric owners only: names differ between hosts
    return info


def _parents(path):
    """/a/b/c -> /a, /a/b (the directories a layer must hold above c)."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[:n]) for n in range(1, len(parts))]


def _is_dir(path):
    return bool(path) and os.path.isdir(path) and not os.path.islink(path)


def _is_tar(path):
    if not path or not os.path.isfile(path):
        return False
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _tar_entries(archive, target):
    """ADD of a local tar archive (plain, gzip, bzip2 or xz): its members, below ``target``."""
    found = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = os.path.normpath(member.name)
            if name.startswith("..") or os.path.isabs(member.name):
                raise LabtoolError(f"ADD {os.path.basename(archive)}: refusing a path outside the destination: "
                                   f"{member.name}")
            if member.islnk():
                member.linkname = os.path.join(target, member.linkname).lstrip("/")
            data = tar.extractfile(member).read() if member.isreg() else None
            found.append((os.path.normpath(os.path.join(target, name)), None, {"info": member, "data": data}))
    return found


def _download(urls, directory):
    """ADD http(s)://...: fetch each URL into ``directory``; return {url: local file}. The files
    get mode 0600, as Docker gives them. A machine without internet fails here, in one line."""
    import urllib.error
    import urllib.request

    found = {}
    for i, url in enumerate(urls):
        if not url.startswith(("http://", "https://")):
            raise LabtoolError(f"ADD {url}: only http:// and https:// URLs can be downloaded")
        path = os.path.join(directory, str(i))
        try:
            with urllib.request.urlopen(url, timeout=30) as response, open(path, "wb") as f:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
        except urllib.error.HTTPError as e:
            raise LabtoolError(f"ADD {url}: the server answered {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise LabtoolError(f"ADD {url}: cannot download it ({reason}); without internet, put the file "
                               "in the build context and COPY it") from None
        os.chmod(path, 0o600)
        found[url] = path
    return found


def _octal_mode(keyword, text):
    """--chmod=0755 -> 0o755; one clear line for what is not an octal mode (man 1 chmod)."""
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise LabtoolError(f"{keyword} --chmod={text}: invalid mode: use octal digits 0-7, e.g. --chmod=0755")
    return mode


def _content_hash(entries, chown, chmod):
    """A sha256 of what a COPY writes: paths, modes, link targets, contents. The cache key."""
    h = hashlib.sha256(repr((chown, chmod)).encode())
    for path, host, member in sorted(entries, key=lambda e: e[0]):
        h.update(path.encode() + b"\0")
        if member is not None:
            h.update(repr((member["info"].mode, member["info"].type, member["info"].linkname)).encode())
            h.update(member["data"] or b"")
            continue
        if host is None:
            continue
        st = os.lstat(host)
        h.update(f"{st.st_mode:o}".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(host).encode())
        elif stat.S_ISREG(st.st_mode):
            with open(host, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def _layer_of_container(container_dir):
    """The container's changes as a layer tar: its upperdir (overlay), or a comparison of its
    copy with the image (vfs), as ``labtool commit`` does."""
    from labtool import overlay

    storage = overlay.storage_of(container_dir)
    if storage.get("Driver") == "overlay":
        return changes.layer_from_upper(storage["UpperDir"])
    found = changes.changes_in_copy(storage["MergedDir"], storage["LowerDir"])
    return changes.layer_from_changes(storage["MergedDir"], found)


def short(image_id):
    return image_id.split(":")[-1][:12]
