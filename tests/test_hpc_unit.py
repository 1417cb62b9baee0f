"""HPC pieces that cannot run here (Cobalt/ALPS, PBS/PALS, LSF/jsrun; and Slurm without the
test bed): golden job scripts of every site, scheduler logic, runtime command lines."""


import pytest

from common.errors import UserError
from launcher.config import list_sites, load_site
from launcher.jobscript import render_job_script
from launcher.runtimes import ExecRequest, runtime
from launcher.schedulers import SCHEDULERS, current_allocation, parse_walltime
from tests.golden import assert_golden
from tests.specs import make_spec

HPC_SITES = sorted(s.name for s in list_sites() if s.scheduler != "local")


def spec_for(site, nodes=4):
    return make_spec(site.name, nodes=nodes, shared="/lus/proj/shared", image="/lus/proj/ray.sif")


@pytest.mark.parametrize("name", HPC_SITES)
def test_job_script_golden(name):
    site = load_site(name)
    assert_golden(f"job.{name}.sh", render_job_script(spec_for(site), site))


def test_every_hpc_site_has_a_golden_job_script():
    assert set(HPC_SITES) >= {"theta", "polaris", "aurora", "perlmutter", "frontier", "slurm",
                              "pbs", "lsf"}


@pytest.mark.parametrize("name, launcher", [
    ("theta", "aprun -n 4 -N 1 --cc none singularity exec --no-home"),
    ("polaris", "mpiexec -n 4 --ppn 1 --cpu-bind none apptainer exec --no-home --nv"),
    ("frontier", "srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --kill-on-bad-exit=0 "
                 "apptainer exec --no-home --rocm"),
    ("perlmutter", "srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --kill-on-bad-exit=0 "
                   "podman-hpc run --rm --init --network host --ipc host --gpu"),
    ("lsf", "jsrun -n 4 -r 1 -a 1 -c ALL_CPUS apptainer exec --no-home"),
])
def test_one_agent_per_node_in_the_site_runtime(name, launcher):
    site = load_site(name)
    script = render_job_script(spec_for(site), site)
    assert f"\n{launcher} " in script
    assert "/lus/proj/shared/runs/20260101-000000-abcd/node_agent.py --run-dir " \
           "/lus/proj/shared/runs/20260101-000000-abcd" in script


def test_slurm_asks_for_the_walltime_warning_and_scripts_forward_it():
    site = load_site("slurm")
    script = render_job_script(spec_for(site), site)
    assert "#SBATCH --signal=B:TERM@60\n" in script
    assert "export RAYHPC_RUN_DIR=/lus/proj/shared/runs/20260101-000000-abcd\n" in script
    assert "trap '(set -C; echo job script: walltime or cancel > \"$RAYHPC_RUN_DIR/stop\") " \
           "2>/dev/null' TERM INT" in script
    assert script.rstrip().endswith('exit "$code"')


@pytest.mark.parametrize("text, seconds", [
    ("00:30:00", 1800), ("30", 1800), ("1:00", 3600), ("2-00:00:00", 172800), ("0:0:5", 5)])
def test_walltimes(text, seconds):
    assert parse_walltime(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", "1:2:3:4"])
def test_bad_walltimes(text):
    with pytest.raises(ValueError):
        parse_walltime(text)


@pytest.mark.parametrize("scheduler, output, job_id", [
    ("slurm", "4242\n", "4242"), ("slurm", "4242;cluster\n", "4242"),
    ("pbs", "1234.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov\n",
     "1234.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"),
    ("cobalt", "567890\n", "567890"),
    ("lsf", "Job <98765> is submitted to queue <batch>.\n", "98765"),
])
def test_job_ids_from_submit_output(scheduler, output, job_id):
    assert SCHEDULERS[scheduler].parse_job_id(output) == job_id


def test_lsf_takes_the_script_on_standard_input():
    assert SCHEDULERS["lsf"].submit_command("/r/job.sh") == (["bsub"], True)
    assert SCHEDULERS["slurm"].submit_command("/r/job.sh") == (
        ["sbatch", "--parsable", "/r/job.sh"], False)


@pytest.mark.parametrize("environ, scheduler, nodes", [
    ({"SLURM_JOB_ID": "1", "SLURM_JOB_NUM_NODES": "8"}, "slurm", 8),
    ({"COBALT_JOBID": "7", "COBALT_PARTSIZE": "128"}, "cobalt", 128),
    ({"LSB_JOBID": "3", "LSB_MCPU_HOSTS": "batch1 1 h1 42 h2 42 h3 42"}, "lsf", 3),
    ({}, None, None),
])
def test_allocation_and_node_count_detection(environ, scheduler, nodes):
    found = current_allocation(environ)
    assert (found.name if found else None) == scheduler
    if found:
        assert found.allocated_nodes(environ) == nodes


def test_pbs_node_count_from_the_nodefile(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("x3001c0s1b0n0\nx3001c0s1b1n0\nx3001c0s1b1n0\n")
    environ = {"PBS_JOBID": "1.polaris", "PBS_NODEFILE": str(nodefile)}
    assert current_allocation(environ).allocated_nodes(environ) == 2


def test_runtimes_command_lines():
    request = ExecRequest("img:1", ["python", "a.py"], binds=["/s"], workdir="/s",
                          env={"A": "1"})
    assert runtime("shifter").exec_command(request) == [
        "shifter", "--image=img:1", "--volume=/s:/s", "--workdir=/s", "--env=A=1", "--",
        "python", "a.py"]
    assert runtime("docker").exec_command(request) == [
        "docker", "run", "--rm", "--init", "--network", "host", "--ipc", "host",
        "--volume", "/s:/s", "--workdir", "/s", "--env", "A=1", "img:1", "python", "a.py"]
    assert runtime("bare").exec_command(request) == ["env", "A=1", "python", "a.py"]


def test_user_site_file_with_wrong_values(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("scheduler: slurm\nruntime: docker\n")
    with pytest.raises(UserError, match="runtime: 'docker' cannot run on scheduler 'slurm'; "
                                        "one of: apptainer, singularity, shifter, podman-hpc"):
        load_site(str(path))
    path.write_text("scheduler: slurm\nruntime: apptainer\ngpu: intel\n")
    with pytest.raises(UserError, match=r"gpu: 'intel' is not one of: nvidia, amd"):
        load_site(str(path))
    path.write_text("scheduler: slurm\nruntime: apptainer\nsetup: module load x\n")
    with pytest.raises(UserError, match=f"{path}: setup: must be a list"):
        load_site(str(path))
    path.write_text("scheduler: slurm\nruntime: apptainer\nwalltime: soon\n")
    with pytest.raises(UserError, match="walltime: 'soon': must be a walltime like 00:30:00"):
        load_site(str(path))


def test_dry_run_prints_the_script_and_creates_nothing(tmp_path, capsys):
    from launcher.launch import launch

    assert launch("polaris", {"shared": str(tmp_path), "image": "/x.sif", "nodes": "2"},
                  dry_run=True) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!/bin/bash\n#PBS -N rayhpc-") and "-l select=2:system=polaris" \
        in script
    assert not (tmp_path / "runs").exists()


def test_inside_an_allocation_nodes_default_to_the_allocation():
    spec = make_spec("slurm", environ={"SLURM_JOB_ID": "9", "SLURM_JOB_NUM_NODES": "6"},
                     image="/x.sif")
    assert spec.nodes == 6
    assert make_spec("slurm", environ={}, image="/x.sif").nodes == 3
