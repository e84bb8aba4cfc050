"""Building the native loops: one build folder per environment and torch version, a line on
stderr when a compile happens (and none for a cached load), a build in progress waited for
with a message, a lock left by a killed build reported and removed instead of a hang, and
the compilers of a build ending with the process that owns it.

Only one test compiles, and only a one-function module that includes nothing but Python.h
(a second or two); the others replace torch's ``cpp_extension.load`` with a fake."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

from gatedrnn.fused import _native

REPO = Path(__file__).resolve().parents[1]

TINY = textwrap.dedent("""\
    // A module named TORCH_EXTENSION_NAME with one function, answer() == 42.
    #include <Python.h>
    #define CAT(a, b) a##b
    #define INIT(name) CAT(PyInit_, name)
    #define STR(x) #x
    #define NAME(x) STR(x)
    static PyObject* answer(PyObject*, PyObject*) { return PyLong_FromLong(42); }
    static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, nullptr}, {nullptr, nullptr, 0, nullptr}};
    static PyModuleDef module = {PyModuleDef_HEAD_INIT, NAME(TORCH_EXTENSION_NAME), nullptr, -1, methods};
    PyMODINIT_FUNC INIT(TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&module); }
""")

# Runs _native's build of csrc/tiny.cpp in a fresh process. "stuck": the build hangs once it
# holds torch's lock (a build to be killed half-way). "fake": cpp_extension.load is replaced by
# one that takes 2.5 s and logs when it starts, and the process waits for a "go" file first.
# "ninja": torch runs the real ninja on a build.ninja whose one compile is the command sys.argv[3].
SCRIPT = textwrap.dedent("""\
    import os, sys, time, types
    from pathlib import Path
    from torch.utils import cpp_extension
    from gatedrnn.fused import _native

    csrc, mode = Path(sys.argv[1]), sys.argv[2]
    _native.CSRC, _native.SOURCES = csrc, ["tiny.cpp"]
    if mode == "stuck":
        def stuck(*args, **kwargs):
            print("stuck", flush=True)
            time.sleep(600)
        cpp_extension._write_ninja_file_and_build_library = stuck
    if mode == "ninja":
        def write_and_build(name, sources, build_directory, verbose, **kwargs):
            Path(build_directory, "build.ninja").write_text(
                f"rule compile\\n  command = {sys.argv[3]}\\nbuild out.o: compile\\n")
            cpp_extension._run_ninja_build(build_directory, verbose, "the fake build failed")
        cpp_extension._write_ninja_file_and_build_library = write_and_build
    if mode == "fake":
        def load(name, sources, build_directory=None, **kwargs):
            with open(csrc / "compiles.log", "a") as log:
                log.write(f"{os.getpid()}\\n")
            time.sleep(2.5)
            folder = Path(build_directory or cpp_extension._get_build_directory(name, False))
            (folder / f"{name}.so").write_text("fake")
            return types.SimpleNamespace(__name__=name)
        cpp_extension.load = load
        _native._load_library = lambda path, name: types.SimpleNamespace(__name__=name)
        print("ready", flush=True)
        while not (csrc / "go").exists():
            time.sleep(0.01)
    print("loaded", _native._build().__name__, flush=True)
""")


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Every cache folder inside tmp_path, and csrc/ holding the tiny module."""
    for variable, folder in [("GATEDRNN_BUILD_DIR", "gatedrnn"), ("TORCH_EXTENSIONS_DIR", "torch"),
                             ("XDG_CACHE_HOME", "xdg")]:  # fmt: skip
        monkeypatch.setenv(variable, str(tmp_path / folder))
    csrc = tmp_path / "csrc"
    csrc.mkdir()
    (csrc / "tiny.cpp").write_text(TINY)
    (csrc / "common.h").write_text("")
    return tmp_path


@pytest.fixture
def fake_compile(monkeypatch):
    """Replaces the compile with a fake that writes the library file and records its folder;
    the list it returns holds (name, folder) per compile."""
    compiles = []

    def load(name, sources, build_directory=None, **kwargs):
        folder = Path(build_directory or cpp_extension._get_build_directory(name, False))
        (folder / f"{name}.so").write_text("fake")
        compiles.append((name, folder))
        return types.SimpleNamespace(__name__=name)

    monkeypatch.setattr(cpp_extension, "load", load)
    monkeypatch.setattr(_native, "_load_library", lambda path, name: types.SimpleNamespace(__name__=name),
                        raising=False)  # fmt: skip
    return compiles


def _run(caches, *args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", SCRIPT, str(caches / "csrc"), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_each_environment_and_torch_version_builds_in_its_own_folder(caches, fake_compile, monkeypatch):
    monkeypatch.setattr(sys, "prefix", "/envs/one")
    _native._build()
    monkeypatch.setattr(sys, "prefix", "/envs/two")
    _native._build()
    monkeypatch.setattr(torch, "__version__", "2.99.0+cpu")
    _native._build()
    folders = [folder for _, folder in fake_compile]
    assert len(set(folders)) == 3, folders
    assert all(folder.is_relative_to(caches / "gatedrnn") for folder in folders), folders


def test_the_same_environment_compiles_once_and_says_so_on_stderr(caches, fake_compile, capsys):
    _native._build()
    first = capsys.readouterr()
    _native._build()  # a later run: loads the cached build
    second = capsys.readouterr()
    assert len(fake_compile) == 1
    assert first.out == "" and first.err.count("\n") == 1, first
    assert "building gatedrnn's CPU kernels, once" in first.err
    assert str(fake_compile[0][1]) in first.err
    assert second.out == "" and second.err == "", second


def test_a_cached_build_that_does_not_load_is_built_again(caches, fake_compile, monkeypatch, capsys):
    _native._build()
    capsys.readouterr()

    def broken(path, name):
        raise ImportError(f"{path}: invalid ELF header")

    monkeypatch.setattr(_native, "_load_library", broken)
    assert _native._build().__name__.startswith("gatedrnn_loops_")
    lines = capsys.readouterr().err.splitlines()
    assert len(fake_compile) == 2 and len(lines) == 2, lines
    assert "does not load" in lines[0] and "invalid ELF header" in lines[0]
    assert "building gatedrnn's CPU kernels" in lines[1]


def test_the_build_root_follows_the_environment_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("GATEDRNN_BUILD_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _native.build_root() == tmp_path / "mine"
    monkeypatch.delenv("GATEDRNN_BUILD_DIR")
    assert _native.build_root() == tmp_path / "torch" / "gatedrnn"
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    assert _native.build_root() == tmp_path / "xdg" / "gatedrnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _native.build_root() == Path.home() / ".cache" / "gatedrnn"
    assert _native.build_directory().parent == _native.build_root()


def test_a_build_in_progress_is_waited_for_with_a_message_not_repeated(caches):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", SCRIPT, str(caches / "csrc"), "fake"]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]  # fmt: skip
    try:
        for process in processes:
            assert process.stdout.readline() == "ready\n"
        (caches / "csrc" / "go").touch()
        results = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert all(process.returncode == 0 for process in processes), results
    compiles = (caches / "csrc" / "compiles.log").read_text().split()
    assert len(compiles) == 1, compiles
    waiter = [err for _, err in results if "waiting" in err]
    assert len(waiter) == 1 and f"process {compiles[0]}" in waiter[0], results


def test_a_lock_left_by_a_killed_build_is_reported_and_removed(caches):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", SCRIPT, str(caches / "csrc"), "stuck"]
    killed = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert killed.stdout.readline() == "stuck\n", killed.stderr.read()
    finally:
        killed.kill()  # SIGKILL half-way through the build: no clean-up runs
        killed.communicate()
    start = time.perf_counter()
    try:
        built = _run(caches, "build", timeout=90)
    except subprocess.TimeoutExpired as error:
        waited = time.perf_counter() - start
        pytest.fail(f"the build waited on the dead build's lock ({waited:.0f} s): {error}")
    assert built.returncode == 0, built.stderr
    assert built.stdout.startswith("loaded gatedrnn_loops_"), built
    lines = built.stderr.splitlines()
    assert len(lines) == 2, lines
    assert "stale" in lines[0] and f"process {killed.pid}" in lines[0] and "no longer exists" in lines[0]
    assert "building gatedrnn's CPU kernels" in lines[1]
    cached = _run(caches, "load", timeout=60)  # the build works and is reused: no compile, no message
    assert cached.returncode == 0 and cached.stdout == built.stdout and cached.stderr == "", cached


# A compiler that takes long: it writes its PID, then sleeps (ignoring SIGTERM if told), then
# writes the time it ends.
COMPILER = textwrap.dedent("""\
    import os, signal, sys, time
    folder, seconds, deaf = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "deaf"
    if deaf:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.path.join(folder, "compiler.pid"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    with open(os.path.join(folder, "compiler.ended"), "w") as f:
        f.write(repr(time.time()))
""")


def _slow_build(caches, seconds, deaf=False):
    """A build, in a fresh process, whose one compile (the fake COMPILER) takes ``seconds``;
    (the process, the compiler's PID) once the compiler runs."""
    compiler = caches / "compiler.py"
    compiler.write_text(COMPILER)
    command = f"{sys.executable} {compiler} {caches} {seconds} {'deaf' if deaf else 'plain'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    owner = subprocess.Popen([sys.executable, "-c", SCRIPT, str(caches / "csrc"), "ninja", command], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not (caches / "compiler.pid").exists() or not (caches / "compiler.pid").read_text():
        if owner.poll() is not None or time.monotonic() > deadline:
            owner.kill()
            pytest.fail(f"the build never started its compiler: {owner.communicate()}")
        time.sleep(0.02)
    return owner, int((caches / "compiler.pid").read_text())


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_the_compilers_of_a_killed_or_interrupted_build_end_with_it(caches, how):
    owner, compiler = _slow_build(caches, seconds=600)
    try:
        owner.send_signal(how)  # to the owner alone, not to its process group (as a scheduler or kill does)
        owner.communicate(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(compiler) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(compiler), f"the compiler outlived its build killed with {how.name}"
    finally:
        owner.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(compiler, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_build_waits_for_compilers_that_outlive_their_killed_owner(caches):
    owner, compiler = _slow_build(caches, seconds=3, deaf=True)  # a compiler that ignores SIGTERM for 3 s
    try:
        owner.kill()
        owner.communicate(timeout=30)
        assert _alive(compiler)
        (caches / "csrc" / "go").touch()
        second = _run(caches, "fake", timeout=60)  # a build right after: it must not compile beside it
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(compiler, signal.SIGKILL)
    assert second.returncode == 0, second.stderr
    lines = second.stderr.splitlines()
    assert f"waiting for the compilers of process {owner.pid}, which no longer exists, to end" in lines[0], lines
    ended = float((caches / "compiler.ended").read_text())
    assert (caches / "csrc" / "compiles.log").stat().st_mtime >= ended  # its compile began after theirs ended
