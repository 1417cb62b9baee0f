"""The table of emulated site nodes (tests/emulation/site_nodes.yaml) against the site profiles:
every profile has a row (a profile without one fails here, so none goes unemulated), every
row names a profile, a launcher and hardware that exist, and every fact carries a source.
And the one check a rendering can be held to without running it: the rank variable a job
script names is one its launcher sets, by the table's sources (Torque's PBS_VNODENUM under
OpenPBS's pbsdsh failed here before an emulated run ever started)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rayhpc.launcher import SITES_DIR
from rayhpc.launcher.resolve.config import load_site
from rayhpc.launcher.schedulers import SCHEDULERS
from rayhpc.launcher.schedulers.pbs import LAUNCHERS
from tests import PROJECT_ROOT
from tests.emulation import SCHEDULER_OF, load_table, site_rows
from tests.specs import make_spec

TABLE = load_table()
ROWS = site_rows(TABLE)
EXAMPLE_SITES = PROJECT_ROOT / "rayhpc/examples/sites"


def profile_of(row) -> str:
    profile = row.row["profile"]
    return str(PROJECT_ROOT / "rayhpc" / profile) if profile.endswith(".yaml") else profile


def every_profile() -> list[str]:
    names = [path.stem for path in sorted(SITES_DIR.glob("*.yaml"))]
    examples = [str(path) for path in sorted(EXAMPLE_SITES.glob("*.yaml"))]
    return [name for name in names + examples if load_site(name).scheduler in SCHEDULERS]


@pytest.mark.parametrize("profile", every_profile())
def test_every_batch_profile_has_an_emulation_row(profile):
    rows = [row for row in ROWS if profile_of(row) == profile]
    assert rows, (f"site profile {profile} has no row in tests/emulation/site_nodes.yaml: add "
                  "its nodes' facts (launcher, hardware, interfaces) with their sources")
    site = load_site(profile)
    if site.option("gpu") and site.option("gpu") != "none":
        kinds = {TABLE["hardware"][row.hardware]["gpu"] for row in rows}
        assert site.option("gpu") in kinds or "" in kinds, (
            f"site {profile} has gpu: {site.option('gpu')} and no row on such nodes")


def test_every_pbs_launcher_has_a_row():
    launchers = {row.row["launcher"] for row in ROWS if row.row["profile"] == "pbs"}
    assert launchers == set(LAUNCHERS)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_each_row_names_what_exists_and_cites_its_sources(row):
    site = load_site(profile_of(row))
    scheduler = SCHEDULERS[site.scheduler]
    assert SCHEDULER_OF[row.row["launcher"]] == site.scheduler
    options = {**site.option("scheduler_options"), **row.row.get("scheduler_options", {})}
    if row.row["launcher"] != "srun":
        assert scheduler.launcher_for(options) in TABLE["launchers"][row.row["launcher"]][
            "programs"]
    assert row.hardware in TABLE["hardware"]
    assert row.row["sources"], f"row {row.name} cites nothing"
    for section in ("launchers", "schedulers", "hardware"):
        for name, facts in TABLE[section].items():
            assert facts.get("sources"), f"{section}.{name} cites nothing"


@pytest.mark.parametrize("row", [row for row in ROWS if row.row["launcher"] != "srun"],
                         ids=lambda row: row.name)
def test_the_rank_variable_the_job_script_names_is_one_its_launcher_sets(row, tmp_path):
    from rayhpc.launcher.backends.batch.jobscript import render_job_script

    site = load_site(profile_of(row))
    if row.row.get("scheduler_options"):
        copy = tmp_path / f"{row.name}.yaml"
        text = Path(site.path).read_text()
        launcher = row.row["scheduler_options"]["launcher"]
        copy.write_text(re.sub(r"(?m)^  launcher: \S+", f"  launcher: {launcher}", text))
        site = load_site(str(copy))
    script = render_job_script(make_spec(str(site.path), account="P", image="/x/ray.sif"),
                               site)
    named = re.search(r"^export RAYHPC_RANK_VARS=(\S+)$", script, re.M).group(1).split(",")
    launcher = TABLE["launchers"][row.row["launcher"]]
    set_by_script = [name for name in named if re.search(rf"\b{name}=", script)]
    assert set(named) & set(launcher["task_env"]) or set_by_script, (
        f"{row.name}: the job script reads the rank from {named}; {row.row['launcher']} sets "
        f"{sorted(launcher['task_env'])} (site_nodes.yaml)")
