"""Builds the native time loops (``csrc/*.cpp``) on first use, with torch's C++ extension
tooling and ninja, and caches them; where no compiler exists, the same loops in Python
(:mod:`gatedrnn.fused.loops`) stand in, after one warning.

Each build has its own folder, named by a hash of everything that goes into it: the
environment (``sys.prefix``, where torch is installed, the Python version), the torch version,
the compiler flags and the sources. Two virtual environments therefore never share a
``build.ninja`` (each would rebuild the other's kernels). The folders sit under
``GATEDRNN_BUILD_DIR`` if set, else ``$TORCH_EXTENSIONS_DIR/gatedrnn``, else
``$XDG_CACHE_HOME/gatedrnn`` (``~/.cache/gatedrnn``).

A build holds an operating-system lock on ``build.lock`` in its folder, which the system
releases when the process ends, however it ends; the file records the holder's PID. A process
that finds the lock held says which process it waits for. torch's own lock file (``lock``,
which torch waits on forever) found while holding that lock was left by a killed build: it is
reported, removed, and the build proceeds.

The build's processes live no longer than the process that owns them (:class:`_OwnedBuild`):
ninja gets SIGTERM when its owner dies, killed or not (Linux's parent-death signal), or stops
with an exception (Ctrl-C), and ninja then stops the compilers it started. ninja and the
compilers also inherit the ``build.lock`` descriptor, so the lock stays held until the last of
them has exited: a build that finds them still running waits for them, with a message,
instead of compiling beside them.

``GATEDRNN_NATIVE=0`` in the environment forces the Python loops.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

CSRC = Path(__file__).parent / "csrc"
SOURCES = ["bindings.cpp", "lstm.cpp", "gru.cpp", "rnn.cpp", "linear.cpp", "slstm.cpp", "mlstm.cpp",
           "mlstm_chunk.cpp"]

# Instruction sets by what torch found this CPU can do; named explicitly (not -march=native)
# so that the cached build also runs on another machine of the same capability.
ARCH_FLAGS = {
    "AVX512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl"],
    "AVX2": ["-mavx2", "-mfma"],
}

LIB_EXT = ".pyd" if sys.platform == "win32" else ".so"

_kernels = None
_native_error: str | None = None
_building = threading.Lock()  # threads of one process take turns too


def _ninja_on_path() -> None:
    """Puts the ninja that pip installed with gatedrnn on PATH, where torch looks for it,
    even when the virtual environment is not activated."""
    try:
        import ninja
    except ImportError:
        return
    if ninja.BIN_DIR not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _say(line: str) -> None:
    print(f"gatedrnn: {line}", file=sys.stderr, flush=True)


def _flags() -> list[str]:
    capability = torch.backends.cpu.get_cpu_capability()
    # -fno-trapping-math lets the float-to-int step of exp vectorise; NaN and Inf keep their meaning
    # -fopenmp-simd: the layer norms' `omp simd` reductions vectorize
    flags = ["-O3", "-std=c++17", "-fno-trapping-math", "-fopenmp-simd", *ARCH_FLAGS.get(capability, [])]
    return flags + _openmp_flags()


def _openmp_flags() -> list[str]:
    """-fopenmp where torch runs its parallel regions on OpenMP (its Linux builds): ATen's
    ``at::parallel_for`` is a header whose ``#pragma omp parallel`` is compiled into this
    extension, and without the flag it runs every range on the calling thread. The runtime is
    torch's own libgomp, already loaded (no second copy is linked in)."""
    if sys.platform != "linux" or "OpenMP" not in torch.__config__.parallel_info():
        return []
    return ["-fopenmp"]


def _key() -> tuple[str, str]:
    """The extension's name (from the sources and flags) and a description of everything
    the build depends on besides, one ``name: value`` per line."""
    flags = _flags()
    digest = hashlib.sha1()
    headers = sorted(path.name for path in CSRC.glob("*.h"))
    for name in SOURCES + headers:
        digest.update(name.encode() + b"\0" + (CSRC / name).read_bytes())
    digest.update(" ".join(flags).encode())
    environment = {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}{getattr(sys, 'abiflags', '')}",
        "prefix": sys.prefix,
        "torch": torch.__version__,
        "torch_path": str(Path(torch.__file__).resolve().parent),
        "torch_git": str(getattr(torch.version, "git_version", "")),
        "cxx": os.environ.get("CXX", ""),
        "flags": " ".join(flags),
    }
    return f"gatedrnn_loops_{digest.hexdigest()[:12]}", "".join(f"{k}: {v}\n" for k, v in environment.items())


def build_root() -> Path:
    """The folder that holds one build folder per environment and version of the sources:
    ``GATEDRNN_BUILD_DIR``, else ``$TORCH_EXTENSIONS_DIR/gatedrnn``, else
    ``$XDG_CACHE_HOME/gatedrnn`` (``~/.cache/gatedrnn``)."""
    if os.environ.get("GATEDRNN_BUILD_DIR"):
        return Path(os.environ["GATEDRNN_BUILD_DIR"]).expanduser()
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"]).expanduser() / "gatedrnn"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "gatedrnn"


def build_directory() -> Path:
    """This environment's build folder for the current sources, e.g.
    ``~/.cache/gatedrnn/py3.12-torch2.13.0+cpu-<hash>``."""
    return _folder(*_key())


def _folder(name: str, environment: str) -> Path:
    digest = hashlib.sha1(f"{name}\n{environment}".encode()).hexdigest()[:16]
    python = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return build_root() / f"{python}-torch{torch.__version__}-{digest}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process, or we cannot tell
    return True


class _BuildLock:
    """An exclusive lock (``flock``) on ``folder/build.lock``, which the operating system drops
    when its holder exits, killed or not; while held, the file holds the holder's PID.

    ``previous``: the PID left in the file by a holder that died holding the lock.
    ``held``: False where the file system or platform has no ``flock`` (torch's own lock is
    then the only one, as before)."""

    def __init__(self, folder: Path):
        self.path = folder / "build.lock"
        self.previous: int | None = None
        self.held = False

    def _holder(self) -> int | None:
        os.lseek(self.fd, 0, os.SEEK_SET)
        text = os.read(self.fd, 64).decode(errors="replace").strip()
        return int(text) if text.isdigit() else None

    def __enter__(self) -> _BuildLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return self
        try:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder()
                deadline = time.monotonic() + 0.5
                while holder is None and time.monotonic() < deadline:  # it writes its PID just after locking
                    time.sleep(0.01)
                    holder = self._holder()
                if holder and not _pid_alive(holder):  # its compilers, which hold the lock, outlived it
                    _say(f"waiting for the compilers of process {holder}, which no longer exists, to end in "
                         f"{self.path.parent}")  # fmt: skip
                else:
                    who = f"process {holder}" if holder else "another process"
                    _say(f"waiting for {who}, which is building gatedrnn's CPU kernels in {self.path.parent}")
                fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as error:  # e.g. ENOLCK on some network file systems
            _say(f"cannot lock {self.path} ({error}); going on with torch's lock only")
            return self
        self.held = True
        self.previous = self._holder()
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc) -> None:
        if self.held:
            os.ftruncate(self.fd, 0)  # a clean exit leaves no PID behind
        os.close(self.fd)  # closing drops the lock


class _OwnedBuild:
    """Stands in for the ``subprocess`` module inside torch's ``cpp_extension`` while gatedrnn
    builds, so that the ninja it runs (``subprocess.run``) lives no longer than this process:

    - on Linux ninja gets SIGTERM when the thread that started it dies, however it dies
      (``prctl(PR_SET_PDEATHSIG)``, set in the child before ninja starts);
    - an exception while waiting for it (Ctrl-C's ``KeyboardInterrupt``, a second SIGTERM in
      training) sends ninja SIGTERM and waits for it, where ``subprocess.run`` would SIGKILL it;

    and ninja answers SIGTERM by stopping every compiler it started. ``keep``: descriptors ninja
    and the compilers inherit (the build lock, held until the last of them exits)."""

    def __init__(self, keep: tuple = ()):
        self.keep = keep
        self.preexec = _parent_death_signal()

    def __getattr__(self, name):  # everything else is the subprocess module's
        return getattr(subprocess, name)

    def run(self, command, *, check=False, **kwargs):
        # preexec_fn: one prctl call, resolved before the fork (it takes no lock another thread could hold)
        with subprocess.Popen(command, pass_fds=self.keep, preexec_fn=self.preexec,  # noqa: PLW1509
                              **kwargs) as process:  # fmt: skip
            try:
                output, errors = process.communicate()
            except BaseException:
                _end(process)
                raise
        if check and process.returncode:
            raise subprocess.CalledProcessError(process.returncode, process.args, output, errors)
        return subprocess.CompletedProcess(process.args, process.returncode, output, errors)


def _end(process: subprocess.Popen, patience: float = 10.0) -> None:
    """SIGTERM to ninja, which stops its compilers and exits; SIGKILL after ``patience`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=patience)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _parent_death_signal():
    """A ``preexec_fn`` that asks Linux to send the child SIGTERM when its parent dies, or None
    where there is no ``prctl``. Resolved before the fork: the child only calls it."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    owner, set_death_signal = os.getpid(), 1  # PR_SET_PDEATHSIG

    def preexec():
        prctl(set_death_signal, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != owner:  # the owner died before the line above took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@contextlib.contextmanager
def _owned(lock: _BuildLock):
    """Runs torch's build of the extension through :class:`_OwnedBuild` (POSIX)."""
    from torch.utils import cpp_extension

    if os.name != "posix":
        yield
        return
    real = cpp_extension.subprocess
    cpp_extension.subprocess = _OwnedBuild(keep=(lock.fd,) if lock.held else ())
    try:
        yield
    finally:
        cpp_extension.subprocess = real


def _load_library(path: Path, name: str):
    """Imports a built extension module from its file."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build():
    """The native loops' module: loaded from this environment's build folder if a build is
    there, else compiled into it (one line on stderr says so)."""
    from torch.utils import cpp_extension

    name, environment = _key()
    folder = _folder(name, environment)
    library, built = folder / f"{name}{LIB_EXT}", folder / "built"
    if built.exists() and library.exists():  # the usual case, with no lock to wait for
        try:
            return _load_library(library, name)
        except ImportError:
            pass  # looked at again under the lock
    folder.mkdir(parents=True, exist_ok=True)
    with _building, _BuildLock(folder) as lock:
        if built.exists() and library.exists():  # built meanwhile by the process we waited for
            try:
                return _load_library(library, name)
            except ImportError as error:
                _say(f"the build in {folder} does not load ({error}); building it again")
                library.unlink()
        built.unlink(missing_ok=True)
        stale = folder / "lock"  # torch's lock; while we hold ours, nobody else builds here
        if lock.held and stale.exists():
            if lock.previous is None:
                who = "an interrupted build"
            else:
                gone = "was interrupted" if _pid_alive(lock.previous) else "no longer exists"
                who = f"process {lock.previous}, which {gone}"
            _say(f"removing a stale build lock left by {who}: {stale}")
            stale.unlink()
        _ninja_on_path()
        _say(f"building gatedrnn's CPU kernels, once, ~30 s, in {folder}")
        with _owned(lock):  # ninja and the compilers end with this process
            module = cpp_extension.load(
                name=name,
                sources=[str(CSRC / source) for source in SOURCES],
                extra_cflags=_flags(),
                build_directory=str(folder),
                verbose=False,
            )
        built.write_text(environment)
        return module


def kernels(device: torch.device | None = None):
    """The module holding ``{lstm,gru,rnn}_{forward,backward}`` for tensors on ``device``:
    the native loops on the CPU when they build, else the Python ones."""
    global _kernels, _native_error
    if device is not None and device.type != "cpu":
        from gatedrnn.fused import loops

        return loops
    if _kernels is None:
        if os.environ.get("GATEDRNN_NATIVE", "1") == "0":
            _native_error = "GATEDRNN_NATIVE=0 is set"
        else:
            try:
                _kernels = _build()
            except Exception as error:  # no compiler, no ninja, no headers: fall back
                _native_error = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
                warnings.warn(
                    "gatedrnn could not build its native CPU kernels "
                    f"({_native_error}); the fused backend runs its Python loops instead, "
                    "correct but slower. Install a C++ compiler and ninja to get the native ones.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        if _kernels is None:
            from gatedrnn.fused import loops

            _kernels = loops
    return _kernels


def native_available() -> bool:
    """Whether the native loops are built and in use."""
    return getattr(kernels(), "__name__", "").startswith("gatedrnn_loops_")


def use_python_loops(flag: bool = True) -> None:
    """Switches between the native loops and the Python ones (for tests and comparisons)."""
    global _kernels
    if flag:
        from gatedrnn.fused import loops

        _kernels = loops
    else:
        _kernels = None
        os.environ.pop("GATEDRNN_NATIVE", None)
        kernels()
