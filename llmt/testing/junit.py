"""JUnit XML (`--junit-xml PATH`) for CI systems: one testcase per test, classname = the model."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from llmt.testing.result import TestResult


def write_junit(path: Path, results: list[TestResult], suite: str, seconds: float) -> None:
    totals = {
        "tests": str(len(results)),
        "failures": str(sum(r.status == "fail" for r in results)),
        "errors": str(sum(r.status == "error" for r in results)),
        "skipped": str(sum(r.status == "skipped" for r in results)),
        "time": f"{seconds:.3f}",
    }
    root = ET.Element("testsuites", {"name": "llmt", **totals})
    cases = ET.SubElement(root, "testsuite", {"name": suite, **totals})
    for r in results:
        file, _, line = r.where.partition(":")
        attrs = {"classname": r.attached, "name": r.name, "time": f"{r.seconds:.3f}", "file": file}
        if line.isdigit():
            attrs["line"] = line
        case = ET.SubElement(cases, "testcase", attrs)
        detail = _detail(r)
        if r.status == "fail":
            ET.SubElement(case, "failure", {"message": r.message, "type": r.kind}).text = detail
        elif r.status == "error":
            ET.SubElement(case, "error", {"message": r.message, "type": r.kind}).text = detail
        elif r.status == "skipped":
            ET.SubElement(case, "skipped", {"message": r.message})
        elif r.status == "warn":
            ET.SubElement(case, "system-out").text = f"warning: {detail}"
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _detail(r: TestResult) -> str:
    lines = [f"{r.where}: {r.message}"]
    if r.sample:
        lines.append(" | ".join(r.columns))
        lines += [" | ".join("NULL" if v is None else str(v) for v in row) for row in r.sample]
    return "\n".join(lines)
