"""``tools/main.py parity --all``: the tiny suite of every family (``parity_tests/suite.py``) through the parity
harness, both dtypes; CI fails when any verdict fails (a regression in any family), and the report holds every
family's summary row."""
from __future__ import annotations

import json
import os

from parity_tests.suite import SUITE, summary_rows
from tools.main import main


def test_parity_all_tiny_suite_passes_and_reports_every_family(tmp_path, capsys):
    report = str(tmp_path / "report")
    code = main(["parity", "--all", "--report", report])
    out = capsys.readouterr().out
    assert code == 0, out[-4000:]
    data = json.load(open(os.path.join(report, "parity_report.json")))
    assert data["passed"] and data["size"] == "tiny"
    assert [f["suite"]["label"] for f in data["families"]] == [e.label for e in SUITE]
    rows = summary_rows(data["families"])
    assert len(rows) == 2 * len(SUITE) and all(r["passed"] for r in rows)
    assert all(r["worst_abs"] <= 1e-10 for r in rows if r["dtype"] == "float64")
    assert all(r["bound_ratio"] < 1 for r in rows if r["dtype"] == "float32")
    md = open(os.path.join(report, "parity_report.md")).read()
    assert md.startswith("# Parity of the whole toolkit (tiny suite)") and md.count("| float64 | pass |") == len(SUITE)
    print("\n" + md.split("\n\n## ")[0])


def test_parity_all_refuses_a_config(capsys):
    assert main(["parity", "--all", "configs/cream14.yaml"]) == 2
    assert "parity --all takes no config" in capsys.readouterr().err
    assert main(["parity", "--full", "configs/cream14.yaml"]) == 2
