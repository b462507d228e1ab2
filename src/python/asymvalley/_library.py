"""Finding, checking and loading the op library ``libasymvalley.so``.

Where the library is looked for, in order:

1. ``$ASYMVALLEY_LIBRARY``, when set: that path and nothing else (an override for builds elsewhere).
2. next to this file: where ``pip install .`` puts it (the wheel carries the .so in the package).
3. ``target/release/libasymvalley.so`` of the source checkout this file sits in, when it does
   (running from the source tree after ``make oplib``).

The library links ``libtorch_cpu.so`` and ``libc10.so`` by name and carries no rpath: it resolves
them through the torch that ``import torch`` has already loaded into the process, so torch is always
imported first.

Before loading, a cheap header check (:func:`check_elf`) refuses files that cannot be a shared
library for this machine, and files shorter than their own program headers say. ``dlopen`` maps the
segments the headers describe; a segment that lies past the end of a truncated file is mapped
anyway and the first touch of it kills the process with SIGBUS, so the sizes are checked here.
After loading, :func:`load_library` checks that the ops and the class really registered: ``dlopen``
of any valid shared library (libc, ``libtorch_cpu.so``) succeeds and registers nothing.
"""
from __future__ import annotations

import os
import pathlib
import platform
import struct

import torch

#: What a correct library registers; checked after every load.
OPS = ("swa_update_", "ema_update_", "bias_toward_flat_", "valley_asymmetry", "valley_probe")
CLASSES = ("Averager",)

ENV = "ASYMVALLEY_LIBRARY"
FILE_NAME = "libasymvalley.so"
_FIX = (
    "install the package with `pip install .` from the repository (it builds the library), "
    f"build it with `make oplib`, or set {ENV} to the path of a libasymvalley.so built for "
    f"torch {torch.__version__}"
)

# ELF constants (System V ABI): e_ident class/data, e_type, e_machine, p_type.
_ELFCLASS64, _ELFDATA2LSB, _ET_DYN, _PT_LOAD = 2, 1, 3, 1
_MACHINES = {"x86_64": 62, "amd64": 62, "aarch64": 183, "arm64": 183, "ppc64le": 21, "s390x": 22}
_EHDR64 = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr, 64 bytes
_PHDR64 = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr, 56 bytes

_loaded: str | None = None


class LibraryError(ImportError):
    """The op library is missing, is not a usable shared library, or did not register its ops.

    An ``ImportError``: ``import asymvalley`` raises it, with what was looked for, where, and how to
    fix it.

    Example::

        >>> import asymvalley
        >>> issubclass(asymvalley.LibraryError, ImportError)
        True
    """


def candidates() -> list[pathlib.Path]:
    """The paths tried, in order (only the override when ``$ASYMVALLEY_LIBRARY`` is set)."""
    env = os.environ.get(ENV)
    if env:
        return [pathlib.Path(env)]
    here = pathlib.Path(__file__).resolve().parent
    found = [here / FILE_NAME]
    checkout = here.parents[2]  # src/python/asymvalley -> repository root
    if (checkout / "Cargo.toml").is_file():
        found.append(checkout / "target" / "release" / FILE_NAME)
    return found


def library_path() -> pathlib.Path:
    """The op library this process would load (the module doc gives the search order).

    Returns:
        The first candidate path that exists.

    Raises:
        LibraryError: none exists; the message lists every path tried.

    Example::

        >>> import asymvalley
        >>> asymvalley.library_path().name
        'libasymvalley.so'
    """
    tried = candidates()
    for path in tried:
        if path.is_file():
            return path
    where = ", ".join(str(p) for p in tried)
    source = f"${ENV}" if os.environ.get(ENV) else "the package folder and the source checkout"
    raise LibraryError(f"asymvalley: op library not found: looked for {FILE_NAME} in {source} ({where}); {_FIX}")


def check_elf(path: pathlib.Path) -> None:
    """Refuses ``path`` unless it is a 64-bit little-endian ELF shared object for this machine whose
    file holds every loadable segment and the program header table. Reads at most a few KiB."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(_EHDR64.size)
        if len(head) < _EHDR64.size or head[:4] != b"\x7fELF":
            raise LibraryError(
                f"asymvalley: {path} ({size} bytes) is not an ELF shared library (no ELF header); {_FIX}"
            )
        ident, e_type, e_machine, _, _, e_phoff, e_shoff, _, _, e_phentsize, e_phnum, e_shentsize, e_shnum, _ = (
            _EHDR64.unpack(head)
        )
        if ident[4] != _ELFCLASS64 or ident[5] != _ELFDATA2LSB:
            raise LibraryError(f"asymvalley: {path} is not a 64-bit little-endian ELF file; {_FIX}")
        want = _MACHINES.get(platform.machine().lower())
        if e_type != _ET_DYN or (want is not None and e_machine != want):
            raise LibraryError(
                f"asymvalley: {path} is an ELF file of type {e_type} for machine {e_machine}, expected a "
                f"shared library (type {_ET_DYN}) for {platform.machine()} (machine {want}); {_FIX}"
            )
        if e_phentsize != _PHDR64.size or e_phnum == 0 or e_phoff + e_phnum * e_phentsize > size:
            raise LibraryError(f"asymvalley: {path} ({size} bytes) is truncated: its program headers are cut off; {_FIX}")
        if e_shoff + e_shnum * e_shentsize > size:
            raise LibraryError(
                f"asymvalley: {path} ({size} bytes) is truncated: its section headers end at byte "
                f"{e_shoff + e_shnum * e_shentsize}; {_FIX}"
            )
        f.seek(e_phoff)
        table = f.read(e_phnum * e_phentsize)
    for i in range(e_phnum):
        p_type, _, p_offset, _, _, p_filesz, _, _ = _PHDR64.unpack_from(table, i * _PHDR64.size)
        if p_type == _PT_LOAD and p_offset + p_filesz > size:
            raise LibraryError(
                f"asymvalley: {path} ({size} bytes) is truncated: a loadable segment ends at byte "
                f"{p_offset + p_filesz}; {_FIX}"
            )


def _missing_registrations() -> list[str]:
    missing = []
    for name in OPS:
        try:
            getattr(torch.ops.asymvalley, name)
        except (AttributeError, RuntimeError):
            missing.append(f"torch.ops.asymvalley.{name}")
    for name in CLASSES:
        try:
            getattr(torch.classes.asymvalley, name)
        except (AttributeError, RuntimeError):
            missing.append(f"torch.classes.asymvalley.{name}")
    return missing


def load_library() -> str:
    """Checks, loads (once) and verifies the op library; returns the resolved path that was loaded.

    ``import asymvalley`` calls it; a second call returns at once.

    Returns:
        The resolved path of the loaded library.

    Raises:
        LibraryError: (an ``ImportError``) saying what was looked for, where, and how to fix it:
            missing file, not a shared library for this machine, truncated, not loadable with this
            torch (undefined symbols: built for another torch), or loaded but registered nothing.

    Example::

        >>> import asymvalley
        >>> asymvalley.load_library() == asymvalley.loaded_library()
        True
    """
    global _loaded
    if _loaded is not None:
        return _loaded
    path = library_path()
    check_elf(path)
    resolved = str(path.resolve())
    try:
        torch.ops.load_library(resolved)
    except OSError as err:
        # torch wraps dlopen's error ("undefined symbol: ...") in a generic one: report the cause.
        reason = err.__cause__ if err.__cause__ is not None else err
        raise LibraryError(
            f"asymvalley: could not load {resolved} with torch {torch.__version__} ({reason}); a library "
            f"built for another torch fails like this; {_FIX}"
        ) from err
    missing = _missing_registrations()
    if missing:
        raise LibraryError(
            f"asymvalley: loaded {resolved}, but it did not register {', '.join(missing)}: it is not "
            f"asymvalley's op library; {_FIX}"
        )
    _loaded = resolved
    return resolved


def loaded_library() -> str | None:
    """Which op library this process loaded.

    Returns:
        The path that :func:`load_library` loaded, or ``None`` before it has.

    Example::

        >>> import asymvalley
        >>> asymvalley.loaded_library().endswith("libasymvalley.so")
        True
    """
    return _loaded
