"""Scale simulator: count this process's metadata operations on the run directory."""

import os

_COUNT_DIR = os.environ.get("RAYHPC_SIM_COUNT")
_RUN_DIR = os.environ.get("RAYHPC_SIM_RUN_DIR", "")

if _COUNT_DIR and _RUN_DIR:
    import atexit
    import json
    import signal
    import sys
    import time

    _counts: dict = {}
    _kinds: dict = {}
    _files: dict = {}  # opens and renames per file (temp names as their target's), for totals
    _trace: list = []  # the first operations with their time, for a look at what they were
    _EVENTS = {"open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.remove",
               "os.rmdir", "os.chmod", "os.utime", "os.symlink", "os.link", "os.truncate"}

    def _count(kind: str, path) -> None:
        try:
            text = os.fsdecode(path) if not isinstance(path, int) else ""
        except TypeError:
            return
        if text.startswith(_RUN_DIR):
            second = int(time.time())
            _counts[second] = _counts.get(second, 0) + 1
            _kinds[kind] = _kinds.get(kind, 0) + 1
            name = text[len(_RUN_DIR):]
            # Repeated by design, not one-time: looks at the stop file, a waiting worker's
            # look at head.json, the head's rewrites of status.json and its listing of
            # blocks/ (the released blocks' stop files).
            if name in ("/stop", "/head.json", "/blocks") or name.startswith("/.status.json"):
                _kinds["periodic"] = _kinds.get("periodic", 0) + 1
            if kind in ("open", "os.rename"):
                base = name.rsplit("/", 1)[-1]
                if base.startswith(".") and base.endswith(".tmp"):  # an atomic write's temp
                    name = name[:len(name) - len(base)] + base[1:].rsplit(".", 2)[0]
                key = f"{kind} {name}"
                _files[key] = _files.get(key, 0) + 1
            if len(_trace) < 100:
                _trace.append((round(time.time(), 2), kind, text[len(_RUN_DIR):]))

    def _hook(event: str, args: tuple) -> None:
        if event in _EVENTS and args:
            _count(event, args[0])

    def _below(directory_fd: int, name="") -> str:
        """A path relative to an open directory (the contract opens the run directory's files
        from it down, no link followed), as the full path the audit events name otherwise."""
        try:
            base = os.readlink(f"/proc/self/fd/{directory_fd}")
        except OSError:
            return ""
        return base + ("/" + os.fsdecode(name) if name else "")

    def _wrap(name: str, event: str = "", fd_keyword: str = "dir_fd"):
        """Count calls of os.<name>; ``event``: those the audit hook cannot place (relative to
        a directory descriptor, or on a descriptor), counted as that event."""
        real = getattr(os, name)

        def counted(path, *args, **kwargs):
            directory_fd = kwargs.get(fd_keyword)
            if directory_fd is not None:
                _count(event or f"os.{name}", _below(directory_fd, path))
            elif isinstance(path, int) and event:
                _count(event, _below(path))
            elif not event:
                _count(f"os.{name}", path)
            return real(path, *args, **kwargs)

        setattr(os, name, counted)

    for _name in ("stat", "lstat", "access"):
        _wrap(_name)
    for _name, _event in (("open", "open"), ("unlink", "os.remove"), ("listdir", "os.listdir")):
        _wrap(_name, _event)
    _wrap("replace", "os.rename", "src_dir_fd")
    sys.addaudithook(_hook)

    def _dump(*_args) -> None:
        if not _counts:
            return
        path = os.path.join(_COUNT_DIR, f"{os.getpid()}.json")
        with open(path + ".tmp", "w") as handle:
            json.dump({"per_second": _counts, "kinds": _kinds, "files": _files,
                       "trace": _trace, "node": os.environ.get("RAYHPC_SIM_NODE", "")},
                      handle)
        os.replace(path + ".tmp", path)

    atexit.register(_dump)
    _previous = signal.getsignal(signal.SIGTERM)

    def _on_term(signum, frame):  # the stub GCS is stopped by SIGTERM
        _dump()
        os._exit(0)

    if _previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_term)
