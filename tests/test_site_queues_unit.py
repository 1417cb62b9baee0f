"""Named sites against their documentation (issue 21): queue selection and refusal per site
(size x walltime, boundaries included), golden job scripts at 2, 64 and 600 nodes, QOS
queues, the warning for a --queue the table says no to, the fabric variables, the Intel GPU
check, and `rayhpc sites --site SITE`."""

from __future__ import annotations

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends.batch.jobscript import render_job_script
from rayhpc.launcher.backends.local.compose import render_compose
from rayhpc.launcher.node.ray_start import ray_start_args
from rayhpc.launcher.resolve.config import list_sites, load_site
from rayhpc.launcher.resolve.queues import queue_warning
from tests.cli import invoke
from tests.golden import assert_golden
from tests.specs import make_spec
from tests.test_hpc_unit import image_for, script_for, spec_for

# site, nodes, walltime -> the queue picked, or the refusal's start (None: no queue table).
SELECTION = [
    # Aurora (running-jobs-aurora.md, "Queues"): debug 1-2, debug-scaling 2-256, prod 256+
    # routing by size, capacity 1-16 up to 168 h; every queue at least 5 min.
    ("aurora", 1, "01:00:00", "debug"), ("aurora", 2, "01:00:00", "debug"),
    ("aurora", 3, "01:00:00", "debug-scaling"), ("aurora", 64, "01:00:00", "debug-scaling"),
    ("aurora", 256, "01:00:00", "debug-scaling"), ("aurora", 257, "01:00:00", "prod"),
    ("aurora", 256, "01:00:01", "prod"), ("aurora", 1024, "12:00:00", "prod"),
    ("aurora", 1024, "12:00:01", "refused"), ("aurora", 1025, "18:00:00", "prod"),
    ("aurora", 2000, "24:00:00", "prod"), ("aurora", 10625, "01:00:00", "refused"),
    ("aurora", 2, "06:00:00", "capacity"), ("aurora", 5, "24:00:00", "capacity"),
    ("aurora", 16, "7-00:00:00", "capacity"), ("aurora", 17, "02:00:00", "refused"),
    ("aurora", 64, "02:00:00", "refused"), ("aurora", 2, "04:00", "refused"),
    # Polaris (docs/polaris/running-jobs/index.md, "Queues"): prod routes small 10-24 <= 3 h,
    # medium 25-99 <= 6 h, large 100-496 <= 24 h.
    ("polaris", 2, "01:00:00", "debug"), ("polaris", 10, "01:00:00", "debug-scaling"),
    ("polaris", 10, "03:00:00", "prod"), ("polaris", 12, "03:00:01", "refused"),
    ("polaris", 12, "12:00:00", "refused"), ("polaris", 25, "06:00:00", "prod"),
    ("polaris", 64, "24:00:00", "refused"), ("polaris", 100, "24:00:00", "prod"),
    ("polaris", 496, "01:00:00", "prod"), ("polaris", 497, "01:00:00", "refused"),
    ("polaris", 4, "48:00:00", "capacity"), ("polaris", 5, "48:00:00", "refused"),
    ("polaris", 1, "00:04:59", "refused"), ("polaris", 1, "00:05:00", "debug"),
    # Frontier (frontier_user_guide.rst, "Job Priority by Node Count", extended): batch bins.
    ("frontier", 91, "02:00:00", "batch"), ("frontier", 64, "02:00:01", "extended"),
    ("frontier", 91, "02:00:01", "refused"),
    ("frontier", 64, "24:00:00", "extended"), ("frontier", 65, "02:00:01", "refused"),
    ("frontier", 92, "06:00:00", "batch"), ("frontier", 183, "06:00:01", "refused"),
    ("frontier", 184, "12:00:00", "batch"), ("frontier", 9472, "12:00:00", "batch"),
    ("frontier", 9473, "01:00:00", "refused"),
    # Theta, as history (the last copy of its page): below 128 nodes taken (charged for 128),
    # 3 h to 255 nodes, 9 h for 384-639, 30 min at least in `default`.
    ("theta", 8, "01:00:00", "debug-cache-quad"), ("theta", 9, "01:00:00", "default"),
    ("theta", 64, "03:00:00", "default"), ("theta", 255, "03:00:01", "refused"),
    ("theta", 600, "09:00:00", "default"), ("theta", 600, "24:00:00", "refused"),
    ("theta", 802, "24:00:00", "default"), ("theta", 9, "00:29:59", "refused"),
    ("theta", 4101, "01:00:00", "refused"),
    # LUMI (partitions.md): small-g 4 nodes 3 days, standard-g 1024 nodes 2 days.
    ("lumi", 4, "3-00:00:00", "small-g"), ("lumi", 5, "2-00:00:00", "standard-g"),
    ("lumi", 1024, "2-00:00:00", "standard-g"), ("lumi", 1025, "01:00:00", "refused"),
    ("lumi", 5, "2-00:00:01", "refused"),
    # No table: the scheduler's default (Perlmutter: the site's QOS).
    ("perlmutter", 600, "48:00:00", "regular"), ("slurm", 600, "48:00:00", None),
]


@pytest.mark.parametrize("name, nodes, walltime, expected", SELECTION)
def test_queue_selection_and_refusal(name, nodes, walltime, expected):
    site = load_site(name)
    if expected != "refused":
        assert spec_for(site, nodes=nodes, walltime=walltime).queue == expected
        return
    with pytest.raises(UserError) as err:
        spec_for(site, nodes=nodes, walltime=walltime)
    message = str(err.value)
    assert message.startswith(f"--nodes {nodes} --walltime ") and "no queue of site" in message
    assert site.queue_source and site.queue_source in message  # the source and date read
    assert message.endswith("change --nodes or --walltime, or give --queue (checked only by "
                            "the scheduler)")


def test_a_refusal_names_each_queues_limits_and_why():
    with pytest.raises(UserError) as err:
        spec_for(load_site("polaris"), nodes=12, walltime="12:00:00")
    assert ("prod (10 to 496 nodes, at least 00:05:00, at most 1-00:00:00; routes small (10 "
            "to 24 nodes, at most 03:00:00), medium (25 to 99 nodes, at most 06:00:00), large "
            "(100 to 496 nodes, at most 1-00:00:00)): routes 12 nodes to small, which runs "
            "jobs for at most 03:00:00, not 12:00:00") in str(err.value)
    assert "read 2026-11-29" in str(err.value)


def test_every_queue_table_says_where_it_comes_from_and_when_it_was_read():
    for site in list_sites():
        if site.queues:
            assert site.option("queues_source") and site.option("queues_read"), site.name


# Golden job scripts of the corrected sites and LUMI at 2, 64 and 600 nodes, each with a
# walltime that some queue takes (600 nodes on Polaris and LUMI's small partitions: none).
GOLDEN_SIZES = [
    ("polaris", 2, "00:30:00"), ("polaris", 64, "06:00:00"),
    ("aurora", 2, "01:00:00"), ("aurora", 64, "01:00:00"), ("aurora", 600, "12:00:00"),
    ("frontier", 2, "02:00:00"), ("frontier", 64, "24:00:00"), ("frontier", 600, "12:00:00"),
    ("perlmutter", 2, "01:00:00"), ("perlmutter", 64, "06:00:00"),
    ("perlmutter", 600, "12:00:00"),
    ("theta", 2, "01:00:00"), ("theta", 64, "03:00:00"), ("theta", 600, "09:00:00"),
    ("lumi", 2, "1-00:00:00"), ("lumi", 64, "12:00:00"), ("lumi", 600, "2-00:00:00"),
]


@pytest.mark.parametrize("name, nodes, walltime", GOLDEN_SIZES)
def test_job_script_golden_at_size(name, nodes, walltime):
    assert_golden(f"job.{name}-{nodes}.sh", script_for(name, nodes=nodes, walltime=walltime))


def test_600_nodes_on_polaris_is_refused_before_submitting():
    with pytest.raises(UserError, match=r"^--nodes 600 --walltime 01:00:00: no queue of site "
                                        r"polaris's queue table \(ALCF, "):
        script_for("polaris", nodes=600)


def test_a_users_queue_outside_the_table_warns_and_goes_to_the_scheduler(capsys, tmp_path):
    site = load_site("polaris")
    spec = spec_for(site, nodes=12, walltime="12:00:00", queue="prod")
    assert spec.queue == "prod"
    warning = queue_warning(list(site.queues), "prod", 12, 12 * 3600, site.name,
                            site.queue_source)
    assert warning.startswith("warning: --queue: prod routes 12 nodes to small, which runs "
                              "jobs for at most 03:00:00, not 12:00:00 by site polaris's "
                              "queue table (ALCF, ")
    assert warning.endswith("no queue of the table fits; submitting anyway (the scheduler "
                            "decides, and tables age)")
    assert queue_warning(list(site.queues), "debug", 3, 3600, "polaris", "").endswith(
        "--queue debug-scaling (or no --queue) fits; submitting anyway (the scheduler "
        "decides, and tables age)")
    assert queue_warning(list(site.queues), "special", 3, 3600, "polaris", "") == ""
    from rayhpc.launcher.orchestration import launch

    assert launch("polaris", {"shared": str(tmp_path), "image": "/x.sif", "nodes": "3",
                              "account": "P", "queue": "debug"}, dry_run=True) == 0
    out, err = capsys.readouterr()
    assert "#PBS -q debug\n" in out and err.startswith("warning: --queue: debug takes 1 to 2 "
                                                       "nodes, not 3")


def test_frontiers_debug_is_a_qos_in_the_default_partition():
    script = script_for("frontier", nodes=2, queue="debug")
    assert "#SBATCH --qos=debug\n" in script and "--partition" not in script
    assert "#SBATCH --partition=extended\n" in script_for("frontier", nodes=2,
                                                           walltime="12:00:00")


def test_a_qos_queue_on_a_pbs_site_is_refused(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("scheduler: pbs\nruntime: apptainer\nqueues:\n  debug: {qos: true}\n")
    with pytest.raises(UserError, match=r"queues: qos: only Slurm has QOS queues"):
        load_site(str(path))
    path.write_text("scheduler: slurm\nruntime: apptainer\nqueues_read: 29.11.2026\n")
    with pytest.raises(UserError, match=r"queues_read: '29.11.2026': must be the day"):
        load_site(str(path))
    path.write_text("scheduler: slurm\nruntime: apptainer\nqueues:\n  b:\n    routes:\n"
                    "      r: {auto: true}\n")
    with pytest.raises(UserError, match=r"queues: b: routes: r: auto"):
        load_site(str(path))


# -- fabric: NCCL's and Gloo's interface

def test_the_job_script_sets_nccl_and_gloo_to_the_nodes_interface_unless_set():
    script = script_for("aurora")
    assert 'export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-hsn0}"\n' in script
    assert 'export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-hsn0}"\n' in script
    # The site's own documented value wins over the interface (OLCF: four NICs for NCCL).
    frontier = script_for("frontier")
    assert "export NCCL_SOCKET_IFNAME=hsn0,hsn1,hsn2,hsn3\n" in frontier
    assert 'export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-hsn0}"\n' in frontier
    assert "NCCL_SOCKET_IFNAME:-" not in frontier
    # --interface on a site without one; none: the node finds it (launcher/node_fabric.py).
    assert 'GLOO_SOCKET_IFNAME:-ib0}"' in script_for("slurm", interface="ib0")
    assert "SOCKET_IFNAME" not in script_for("slurm")


def test_the_users_own_value_wins_in_the_job():
    """The job script fills in only what the job's environment does not set."""
    import subprocess

    line = 'export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-hsn0}"; echo "$NCCL_SOCKET_IFNAME"'
    assert line.split(";")[0] + "\n" in script_for("polaris")
    run = lambda env: subprocess.run(["bash", "-c", line], env=env, capture_output=True,  # noqa: E731
                                     text=True).stdout.strip()
    assert run({}) == "hsn0"
    assert run({"NCCL_SOCKET_IFNAME": "hsn1"}) == "hsn1"


def test_podman_hpc_passes_the_fabric_variables():
    script = script_for("perlmutter")
    assert "-e NCCL_SOCKET_IFNAME" in script and "-e GLOO_SOCKET_IFNAME" in script
    assert " --nccl " in script  # podman-hpc's NCCL module


def test_a_bad_interface_is_refused():
    with pytest.raises(UserError, match=r"^--interface: 'hsn0; rm -rf /': must be a network "
                                        r"interface name"):
        make_spec("slurm", interface="hsn0; rm -rf /", image="/x.sif")


def test_the_compose_file_sets_them_from_interface_and_the_sites_value_wins():
    spec = make_spec("local", interface="eth0", image="img")
    text = render_compose(spec)
    assert "NCCL_SOCKET_IFNAME: eth0" in text and "GLOO_SOCKET_IFNAME: eth0" in text
    text = render_compose(spec, environment={"NCCL_SOCKET_IFNAME": "lo"})
    assert "NCCL_SOCKET_IFNAME: lo" in text and "NCCL_SOCKET_IFNAME: eth0" not in text
    assert "SOCKET_IFNAME" not in render_compose(make_spec("local", image="img"))


# -- Aurora: one tile per task

def test_aurora_checks_that_ray_can_isolate_its_tiles():
    site = load_site("aurora")
    spec = spec_for(site)
    assert spec.num_gpus == 12
    assert site.option("environment")["ZE_FLAT_DEVICE_HIERARCHY"] == "FLAT"
    assert "ONEAPI_DEVICE_SELECTOR" not in site.option("environment")
    script = render_job_script(spec, site)
    check = ("if ! apptainer exec --no-home --bind /lus/flare/projects/PROJ "
             "/lus/flare/projects/PROJ/ray.sif python -c 'import dpctl' >/dev/null 2>&1; then")
    assert check in script
    assert script.index(check) < script.index("\nmpiexec ")
    assert "import dpctl" not in script_for("polaris")


def test_the_agent_gives_ray_the_twelve_tiles():
    spec = spec_for(load_site("aurora"))
    assert "--num-gpus=12" in ray_start_args(spec, "10.0.0.1", None, None, spec.temp_dir,
                                             cpus=208)


def aurora_with(tmp_path, *variables: str):
    lines = "".join(f"  {name}: '1'\n" for name in variables)
    text = load_site("aurora").path.read_text().replace(
        "  ZE_FLAT_DEVICE_HIERARCHY: FLAT\n", "  ZE_FLAT_DEVICE_HIERARCHY: FLAT\n" + lines)
    path = tmp_path / "aurora.yaml"
    path.write_text(text)
    return load_site(str(path))


def test_managing_intel_devices_yourself_skips_the_check(tmp_path):
    site = aurora_with(tmp_path, "RAY_EXPERIMENTAL_NOSET_ZE_AFFINITY_MASK",
                       "RAY_EXPERIMENTAL_NOSET_ONEAPI_DEVICE_SELECTOR")
    assert "import dpctl" not in render_job_script(spec_for(site), site)


@pytest.mark.parametrize("given, missing", [
    ("RAY_EXPERIMENTAL_NOSET_ZE_AFFINITY_MASK", "RAY_EXPERIMENTAL_NOSET_ONEAPI_DEVICE_SELECTOR"),
    ("RAY_EXPERIMENTAL_NOSET_ONEAPI_DEVICE_SELECTOR", "RAY_EXPERIMENTAL_NOSET_ZE_AFFINITY_MASK")])
def test_one_intel_opt_out_alone_is_refused(tmp_path, given, missing):
    """Ray before ray-project/ray PR 64440 sets ONEAPI_DEVICE_SELECTOR per task, Ray since then
    ZE_AFFINITY_MASK: one opt-out alone leaves the other in place (ALCF's Aurora script sets
    only the selector's)."""
    site = aurora_with(tmp_path, given)
    with pytest.raises(UserError, match=f"environment: {given} without {missing}: .*set both"):
        render_job_script(spec_for(site), site)


def test_invoke_sites_prints_a_sites_queue_table_and_its_date():
    result = invoke("sites", "--site", "polaris")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "queues (ALCF, https://docs.alcf.anl.gov/polaris/running-jobs/#queues" in out
    assert "read 2026-11-29):\n" in out
    assert "\n    routes to small (10 to 24 nodes, at most 03:00:00)\n" in out
    assert "demand (1 to 56 nodes, at least 00:05:00, at most 01:00:00) [only when asked " \
           "for]" in out
    assert "queues: no table" in invoke("sites", "--site", "slurm").stdout


def test_image_for_lumi_is_a_sif():
    assert image_for(load_site("lumi")).endswith(".sif")
