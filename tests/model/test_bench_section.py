"""tools/bench_model.py rewrites only its own section of docs/performance.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .conftest import ROOT


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "kaji_bench_model", ROOT / "tools/bench_model.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_section_is_replaced_and_other_sections_kept(tmp_path: Path) -> None:
    bench = _bench()
    doc = tmp_path / "performance.md"
    doc.write_text(
        "# Performance\n\n## hooks\n\nno-op hook: 1.2x\n\n"
        "## offline model\n\nold numbers\n\n## packing\n\n3 minutes\n"
    )
    bench.write_section(doc, "## offline model\n\nnew numbers\n")
    text = doc.read_text()
    assert "old numbers" not in text
    assert text == (
        "# Performance\n\n## hooks\n\nno-op hook: 1.2x\n\n"
        "## offline model\n\nnew numbers\n\n## packing\n\n3 minutes\n"
    )


def test_section_is_appended_to_a_new_or_other_file(tmp_path: Path) -> None:
    bench = _bench()
    doc = tmp_path / "performance.md"
    bench.write_section(doc, "## offline model\n\nnumbers\n")
    assert doc.read_text() == "# Performance\n\n## offline model\n\nnumbers\n"
    doc.write_text("# Performance\n\n## hooks\n\nx\n")
    bench.write_section(doc, "## offline model\n\nnumbers\n")
    assert doc.read_text() == "# Performance\n\n## hooks\n\nx\n\n## offline model\n\nnumbers\n"
