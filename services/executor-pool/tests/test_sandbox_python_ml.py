"""The python-ml runtime on bwrap: the package tree scripts/setup builds, mounted read-only.

A numpy/pandas/scikit-learn/scipy program runs and its identity covers the interpreter and the
tree; the standard-library runtime beside it still imports none of them; the tree cannot be
written; a tree that does not fit (missing, another runtime's, another interpreter's) is not
offered, with the reason. Building it again with the same pins does nothing, quickly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from sandbox_helpers import (
    SMALL,
    MiB,
    assert_teardown_complete,
    python_ml_runtimes,
    python_ml_tree_path,
    sha256_of_file,
)

from evalmesh_common import ConfigError, load_config
from evalmesh_executor.backend import bwrap_runtimes
from evalmesh_executor.config import ExecutorConfig
from evalmesh_executor.sandbox import SandboxOutcome, SandboxRequest, SandboxUnavailableError
from evalmesh_executor.sandbox.bwrap import PYTHON, BwrapConfig, BwrapSandbox
from evalmesh_executor.sandbox.bwrap.runtime import python_with_tree
from evalmesh_executor.sandbox.bwrap.tree import MANIFEST, load_tree, tree_digest
from evalmesh_executor.treebuild import TreeSpec, build_tree

ML_PROGRAM = b"""
import numpy as np, pandas as pd, scipy.linalg, sklearn
from sklearn.linear_model import LinearRegression
x = np.arange(20.0).reshape(-1, 1)
model = LinearRegression().fit(x, 3 * x.ravel() + 1)
frame = pd.DataFrame({"y": model.predict(x)})
print(np.__version__, pd.__version__, sklearn.__version__, scipy.__version__)
print(round(float(model.coef_[0]), 6), round(float(frame.y.sum()), 3))
print(round(float(scipy.linalg.det(np.eye(3) * 2)), 3), np.__file__)
"""
ML_LIMITS = replace(SMALL, memory_bytes=512 * MiB, wall_timeout=60.0, max_processes=64)
REQUIREMENTS = Path(__file__).resolve().parents[1] / "images" / "python-ml" / "requirements.txt"


@pytest.fixture
async def ml_box() -> AsyncIterator[BwrapSandbox]:
    """A bwrap sandbox offering python and python-ml; nothing of it is left afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the bwrap backend tests need root (cgroup writes)")
    runtimes = python_ml_runtimes()
    parent = "evalmesh-test-" + uuid.uuid4().hex[:12]
    async with BwrapSandbox(BwrapConfig(cgroup_parent=parent, runtimes=runtimes)) as box:
        yield box
        await assert_teardown_complete(box, parent)
    for directory in box.cgroups.parents:
        directory.rmdir()


def _pins() -> dict[str, str]:
    lines = REQUIREMENTS.read_text().splitlines()
    pins = [line.split("#")[0].strip() for line in lines]
    return dict(pin.split("==") for pin in pins if pin)


async def test_python_ml_runs_numpy_pandas_scikit_learn_and_scipy_at_the_pinned_versions(
    ml_box: BwrapSandbox,
) -> None:
    result = await ml_box.run(SandboxRequest(ML_PROGRAM, runtime="python-ml", limits=ML_LIMITS))
    assert result.outcome is SandboxOutcome.EXITED, result.stderr.decode()[-2000:]
    assert result.exit_code == 0
    versions, fit, linalg = result.stdout.decode().splitlines()
    pins = _pins()
    assert versions.split() == [pins[p] for p in ("numpy", "pandas", "scikit-learn", "scipy")]
    assert fit == "3.0 590.0"
    assert linalg == "8.0 /usr/local/lib/python3.11/dist-packages/numpy/__init__.py".replace(
        "3.11", load_tree(python_ml_tree_path(), "python-ml").python
    )


async def test_the_python_ml_identity_covers_the_interpreter_and_the_tree_digest(
    ml_box: BwrapSandbox,
) -> None:
    tree = load_tree(python_ml_tree_path(), "python-ml")
    result = await ml_box.run(SandboxRequest(b"pass", runtime="python-ml", limits=ML_LIMITS))
    interpreter = sha256_of_file(PYTHON.interpreter)
    combined = f"interpreter sha256:{interpreter}\ntree {tree.digest}\n"
    expected = hashlib.sha256(combined.encode()).hexdigest()
    assert result.runtime_identity == ml_box.runtimes["python-ml"]
    assert result.runtime_identity.startswith(f"python-ml {tree.python}.")
    assert result.runtime_identity.endswith(f" sha256:{expected}")
    assert ml_box.runtimes["python"].endswith(f" sha256:{interpreter}")
    details = ml_box.runtime_details
    assert {p.name: p.version for p in details["python-ml"].packages} == _pins()
    assert details["python"].packages == ()


async def test_the_standard_library_runtime_still_cannot_import_numpy_beside_python_ml(
    ml_box: BwrapSandbox,
) -> None:
    code = b"import sys\ntry:\n    import numpy\nexcept ImportError as e: print(type(e).__name__)\n"
    code += b"print([p for p in sys.path if 'packages' in p and __import__('os').listdir(p)])"
    result = await ml_box.run(SandboxRequest(code, runtime="python", limits=SMALL))
    assert result.stdout == b"ModuleNotFoundError\n[]\n", result.stderr


async def test_the_package_tree_is_read_only_inside_the_sandbox(ml_box: BwrapSandbox) -> None:
    code = b"""
import errno, numpy, os
target = os.path.dirname(numpy.__file__)
for attempt in (lambda: open(os.path.join(target, "x.py"), "w"),
                lambda: open(numpy.__file__, "a"),
                lambda: os.chmod(numpy.__file__, 0o777)):
    try:
        attempt()
        print("WROTE")
    except OSError as e:
        print(errno.errorcode[e.errno])
"""
    result = await ml_box.run(SandboxRequest(code, runtime="python-ml", limits=ML_LIMITS))
    assert result.stdout == b"EROFS\nEROFS\nEROFS\n", result.stderr.decode()[-1000:]


def _fake_tree(tmp_path: Path, **manifest: object) -> Path:
    """A tree of one module, with a manifest saying what the test wants."""
    root = tmp_path / "tree"
    (root / "site-packages").mkdir(parents=True)
    (root / "site-packages" / "hello.py").write_text("print('hello')\n")
    fields = {
        "format": 1,
        "runtime": "python-extra",
        "python": "3.11",
        "site_dir": "/usr/local/lib/python3.11/dist-packages",
        "packages": [{"name": "hello", "version": "1.0"}],
        "digest": tree_digest(root / "site-packages"),
        **manifest,
    }
    (root / MANIFEST).write_text(json.dumps(fields))
    return root


def test_a_tree_that_is_missing_another_runtimes_or_malformed_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    with pytest.raises(SandboxUnavailableError, match="scripts/setup builds it"):
        load_tree(tmp_path / "nothing", "python-ml")
    tree = _fake_tree(tmp_path)
    with pytest.raises(SandboxUnavailableError, match="is 'python-extra', not 'python-ml'"):
        load_tree(tree, "python-ml")
    (tree / MANIFEST).write_text(json.dumps({"format": 99}))
    with pytest.raises(SandboxUnavailableError, match="not format 1"):
        load_tree(tree, "python-extra")
    outside = _fake_tree(tmp_path / "b", site_dir="/opt/site-packages")
    with pytest.raises(SandboxUnavailableError, match="not under /usr/local"):
        python_with_tree(load_tree(outside, "python-extra"))


async def test_a_tree_built_for_another_interpreter_version_is_not_offered(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the bwrap backend tests need root (cgroup writes)")
    tree = load_tree(_fake_tree(tmp_path, python="2.7"), "python-extra")
    runtimes = {"python": PYTHON, "python-extra": python_with_tree(tree)}
    parent = "evalmesh-test-" + uuid.uuid4().hex[:12]
    async with BwrapSandbox(BwrapConfig(cgroup_parent=parent, runtimes=runtimes)) as box:
        assert set(box.runtimes) == {"python"}
        result = await box.run(SandboxRequest(b"pass", runtime="python-extra", limits=SMALL))
        assert result.outcome is SandboxOutcome.PLATFORM_ERROR
    for directory in box.cgroups.parents:
        directory.rmdir()


def test_the_tree_digest_covers_contents_links_and_the_executable_bit_but_not_times(
    tmp_path: Path,
) -> None:
    root = _fake_tree(tmp_path) / "site-packages"
    before = tree_digest(root)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    os.utime(copy / "hello.py", (1, 1))
    assert tree_digest(copy) == before
    (copy / "hello.py").chmod(0o755)
    assert tree_digest(copy) != before
    (copy / "hello.py").chmod(0o644)
    (copy / "link").symlink_to("hello.py")
    assert tree_digest(copy) != before
    (copy / "link").unlink()
    (copy / "hello.py").write_text("print('bye')\n")
    assert tree_digest(copy) != before


def test_the_executor_offers_python_ml_only_where_the_variable_names_a_usable_tree(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    assert set(bwrap_runtimes({})) == {"python"}
    assert "EVALMESH_BWRAP_RUNTIME_TREES" in caplog.text
    missing = str(tmp_path / "none")
    assert set(bwrap_runtimes({"python-ml": missing})) == {"python"}
    assert "runtime python-ml is not offered" in caplog.text
    tree = str(_fake_tree(tmp_path))
    assert set(bwrap_runtimes({"python-extra": tree})) == {"python", "python-extra"}
    required = {"EVALMESH_NATS_URL": "nats://127.0.0.1:4222", "EVALMESH_STORAGE_ADDRESS": "x:1"}
    variable = {"EVALMESH_BWRAP_RUNTIME_TREES": f" python-ml={missing} , python-extra={tree}"}
    config = load_config(ExecutorConfig, {**required, **variable})
    assert config.bwrap_tree_paths() == {"python-ml": missing, "python-extra": tree}
    relative = {"EVALMESH_BWRAP_RUNTIME_TREES": "python-ml=relative/tree"}
    with pytest.raises(ConfigError, match="runtime=/absolute/directory"):
        load_config(ExecutorConfig, {**required, **relative})


def test_building_the_tree_again_with_the_same_pins_changes_nothing_and_returns_at_once() -> None:
    link = python_ml_tree_path()
    manifest = (link / MANIFEST).read_text()
    before = link.resolve().stat()
    built = build_tree(TreeSpec("python-ml", REQUIREMENTS, link.parent))
    assert built == link.resolve()
    after = built.stat()  # the same directory, untouched: nothing was installed again
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert (link / MANIFEST).read_text() == manifest


def test_a_requirement_that_is_not_an_exact_pin_is_refused(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=2\n")
    with pytest.raises(ValueError, match="not an exact name==version pin"):
        build_tree(TreeSpec("python-ml", requirements, tmp_path / "out"))
