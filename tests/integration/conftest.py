"""Integration tests against the current Juju controller, skipped cleanly without one.

Before any test (and so before pytest-operator tries to connect anywhere), the session checks
what the tests need: pytest-operator, a `juju` binary, a current controller, kubectl, and
charms (pre-built in KAJI_CHARMS_DIR, or packable with tools/pack.py). If anything is missing,
every test here is skipped with one reason naming all of it, shown in the report header and in
the `-rs` summary. Tests marked `offline` (test_support.py: the pure logic the others rely on,
such as overlay selection and status checks) run everywhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from integration_support import BUILD_DIR, CHARM_NAMES, PACK_TOOL, ROOT, Kubectl, kubeconfig_path

try:
    import pytest_asyncio
    from pytest_operator.plugin import OpsTest
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_PYTEST_OPERATOR = False
else:
    HAVE_PYTEST_OPERATOR = True

HERE = Path(__file__).resolve().parent
CHARMCRAFT_VENV = Path(
    os.environ.get("KAJI_CHARMCRAFT_VENV", str(ROOT / ".tox" / "charmcraft-venv"))
)
"""Where tools/pack.py keeps its charmcraft (see its --venv)."""


def juju_data() -> Path:
    """The Juju client's data directory, as the juju CLI and pytest-operator find it."""
    if value := os.environ.get("JUJU_DATA"):
        return Path(value)
    if value := os.environ.get("XDG_DATA_HOME"):
        return Path(value) / "juju"
    return Path.home() / ".local" / "share" / "juju"


def controller_problem(wanted: str | None) -> str | None:
    """Why there is no controller to test against, or None if there is one."""
    path = juju_data() / "controllers.yaml"
    if not path.is_file():
        return f"no Juju controller ({path} absent: `juju bootstrap localhost` first)"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        return f"cannot read {path}: {exc}"
    controllers = data.get("controllers") or {}
    name = wanted or data.get("current-controller")
    if not name:
        return f"no current Juju controller in {path} (`juju switch <controller>`)"
    if name not in controllers:
        return f"Juju controller {name!r} is not in {path}"
    return None


def charms_dir() -> Path | None:
    """KAJI_CHARMS_DIR as a path, if set."""
    value = os.environ.get("KAJI_CHARMS_DIR")
    return Path(value).expanduser().resolve() if value else None


def charms_problem() -> str | None:
    """Why no charms can be had, or None if they are pre-built or can be packed."""
    directory = charms_dir()
    if directory is not None:
        missing = [n for n in CHARM_NAMES if not (directory / f"{n}.charm").is_file()]
        if missing:
            return f"KAJI_CHARMS_DIR={directory} lacks {', '.join(f'{n}.charm' for n in missing)}"
        return None
    if shutil.which("charmcraft") or (CHARMCRAFT_VENV / "bin" / "charmcraft").is_file():
        return None
    return (
        "no charms: no charmcraft (neither on PATH nor tools/pack.py's venv "
        f"{CHARMCRAFT_VENV}) and KAJI_CHARMS_DIR unset "
        "(run `tox -e pack` once, or set KAJI_CHARMS_DIR to a directory with kaji-*.charm)"
    )


def blockers(config: pytest.Config) -> list[str]:
    """Everything missing for the integration tests; empty when they can run."""
    problems = []
    if not HAVE_PYTEST_OPERATOR:
        problems.append("pytest-operator is not installed (run them with `tox -e integration`)")
    if shutil.which("juju") is None:
        problems.append("no `juju` binary on PATH (`snap install juju`)")
    else:
        wanted = config.getoption("--controller", default=None) if HAVE_PYTEST_OPERATOR else None
        if problem := controller_problem(wanted):
            problems.append(problem)
    if shutil.which("kubectl") is None:
        problems.append("no `kubectl` on PATH (`snap install kubectl --classic`)")
    reusing = HAVE_PYTEST_OPERATOR and config.getoption("--no-deploy", default=False)
    if not reusing and (problem := charms_problem()):
        problems.append(problem)
    return problems


def skip_reason(config: pytest.Config) -> str | None:
    """The session's single skip reason (computed once), or None when the tests can run."""
    if not hasattr(config, "_kaji_integration_skip"):
        problems = blockers(config)
        reason = "integration tests skipped: " + "; ".join(problems) if problems else None
        config._kaji_integration_skip = reason  # type: ignore[attr-defined]
    return config._kaji_integration_skip  # type: ignore[attr-defined]


def pytest_report_header(config: pytest.Config) -> str:
    reason = skip_reason(config)
    if reason:
        return f"kaji {reason}"
    source = charms_dir() or f"tools/pack.py -> {BUILD_DIR}"
    return f"kaji integration: Juju data {juju_data()}, charms from {source}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "offline: an integration-support test that needs no controller (never skipped)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = skip_reason(config)
    if reason is None:
        return
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("offline") is not None:
            continue
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(marker)


def pack_charms() -> dict[str, Path]:
    """Pack every charm with tools/pack.py (what `tox -e pack` runs) into build/."""
    result = subprocess.run(
        [sys.executable, str(PACK_TOOL)], cwd=ROOT, stdin=subprocess.DEVNULL, check=False
    )
    assert result.returncode == 0, f"tools/pack.py failed ({result.returncode}); see build/logs"
    return {name: BUILD_DIR / f"{name}.charm" for name in CHARM_NAMES}


@pytest.fixture(scope="session")
def charms() -> dict[str, Path]:
    """Charm name -> packed charm file: KAJI_CHARMS_DIR's, or freshly packed into build/."""
    directory = charms_dir()
    paths = (
        {name: directory / f"{name}.charm" for name in CHARM_NAMES} if directory else pack_charms()
    )
    missing = [str(p) for p in paths.values() if not p.is_file()]
    assert not missing, f"charms missing: {missing}"
    return paths


if HAVE_PYTEST_OPERATOR:

    @pytest_asyncio.fixture(scope="module")
    async def ops_test(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> AsyncIterator[OpsTest]:
        """pytest-operator's fixture without its charmcraft check: charms may be pre-built.

        Each test module gets its own model (or the one named with --model), destroyed at
        the end unless --keep-models.
        """
        ops = OpsTest(request, tmp_path_factory)
        await ops._setup_model()
        OpsTest._instance = ops
        yield ops
        OpsTest._instance = None
        await ops._cleanup_models()

    @pytest.fixture
    def kubectl(ops_test: OpsTest) -> Kubectl:
        """kubectl with the module's admin kubeconfig (fetched by an earlier test)."""
        path = kubeconfig_path(ops_test)
        assert path.is_file(), "no kubeconfig: the test fetching it did not pass"
        return Kubectl(ops_test, path)

    @pytest_asyncio.fixture(scope="module")
    async def namespace(request: pytest.FixtureRequest, ops_test: OpsTest) -> AsyncIterator[str]:
        """The module's NAMESPACE for test workloads; deleted with its contents afterwards."""
        name = str(request.module.NAMESPACE)
        yield name
        path = kubeconfig_path(ops_test)
        if path.is_file():
            await Kubectl(ops_test, path).run(
                "delete", "namespace", name, "--ignore-not-found", "--wait=true", check=False
            )
