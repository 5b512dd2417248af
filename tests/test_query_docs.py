"""The SQL and Polars answers in docs/report.md ("Common questions") run against a test output."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from pipeline.qc.query import query
from test_qc_fixture import make_output

DOC = Path(__file__).resolve().parents[1] / "docs" / "report.md"


def blocks(lang: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    text = text[text.index("## Common questions"):]
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    facts = make_output(root)
    ids = sorted({r["participant_id"] for r in facts["images"]})
    pheno = root / "phenotypes.csv"
    pl.DataFrame({"participant_id": ids, "age": [50.0 + 5 * i for i in range(len(ids))], "sex": ["F", "M"] * (len(ids) // 2) + ["F"] * (len(ids) % 2)}).write_csv(pheno)
    return str(facts["output"]), str(pheno)


def test_there_are_answers():
    assert len(blocks("sql")) >= 5 and len(blocks("python")) >= 2


@pytest.mark.parametrize("i", range(len(blocks("sql"))))
def test_sql_answers_run(env, i):
    out, pheno = env
    sql = blocks("sql")[i].replace("'PHENOTYPES'", "'" + pheno + "'")
    t = query(out, sql)
    assert t.num_rows > 0, sql


def test_sql_answers_are_right(env):
    out, pheno = env
    crae = query(out, blocks("sql")[0]).to_pylist()
    assert [r["site"] for r in crae] == ["leeds", "oslo"]  # kyoto's images have no A/V -> no CRAE
    recheck = query(out, blocks("sql")[2]).to_pylist()
    ids = {r["image_id"] for r in recheck}
    assert "subj001/visit 1#L" in ids  # the planted CRAE outlier
    assert sum(r["status"] != "ok" for r in recheck) == 3


@pytest.mark.parametrize("i", range(len(blocks("python"))))
def test_polars_answers_run(env, i):
    out, pheno = env
    ns: dict = {"OUTPUT": out, "PHENOTYPES": pheno}
    exec(compile(blocks("python")[i], f"docs/report.md python block {i}", "exec"), ns)
    frames = [v for v in ns.values() if isinstance(v, pl.DataFrame)]
    assert frames and all(f.height > 0 for f in frames)
