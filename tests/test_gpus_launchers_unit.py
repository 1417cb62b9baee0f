"""GPUs asked for where they are used, any PBS cluster, any LSF cluster, Pyxis (issue 20): golden
job scripts, the job scripts run in bash with recording stand-ins for srun (with Pyxis'
flags), pbsdsh, Hydra's mpiexec, Open MPI's mpirun and blaunch that assert the exact command
lines, the GPU decisions, and bad input through the real command line. None of these
launchers exists here: every run below is a stand-in, not a scheduler."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends.batch.jobscript import render_job_script
from rayhpc.launcher.resolve.config import load_site
from rayhpc.launcher.resolve.gpus import NodeGpus, node_gpus
from tests.cli import invoke
from tests.golden import assert_golden
from tests.specs import make_spec
from tests.test_hpc_unit import run_script

SHARED = "/lus/proj/shared"
RUN_DIR = f"{SHARED}/runs/20260101-000000-abcd"
EXAMPLES = Path(__file__).parent.parent / "rayhpc" / "examples" / "sites"
PYXIS_IMAGE = "nvcr.io#nvidia/pytorch:24.05-py3"


def site_file(tmp_path: Path, name: str, base: str, old: str = "", new: str = "") -> Path:
    """A copy of site profile ``base`` (a name or path) named ``name``, ``old`` made ``new``."""
    text = Path(load_site(base).path).read_text()
    assert old in text
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(old, new) if old else text)
    return path


def script(site: str | Path, image: str = "/lus/proj/ray.sif", **cli: object) -> str:
    spec = make_spec(str(site), shared=SHARED, image=image, account="PROJ", nodes=4, **cli)
    return render_job_script(spec, load_site(str(site)))


def launch_line(text: str) -> str:
    """The line of the job script that starts the agents."""
    return next(line for line in text.splitlines() if line.endswith(" &")
                and not line.startswith(("  sleep", "(")))


# -- 1. one GPU count per node: Ray's count, the scheduler's request, the runtime's flag

@pytest.mark.parametrize("kind, count, requests, gpus", [
    ("nvidia", 4, True, NodeGpus("nvidia", 4)),
    ("nvidia", None, True, NodeGpus()),        # no count on a requesting site: a CPU launch
    ("nvidia", 0, True, NodeGpus()),
    ("nvidia", None, False, NodeGpus("nvidia")),  # GPUs come with the node (Polaris)
    ("nvidia", 0, False, NodeGpus()),
    ("amd", 8, True, NodeGpus("amd", 8)),
    ("", 4, True, NodeGpus()),                 # no GPU kind: nothing asked (refused earlier)
])
def test_one_count_decides_request_and_flag(kind, count, requests, gpus):
    assert node_gpus(kind, count, requests) == gpus


def test_slurm_gpus_per_node_golden():
    text = script("slurm", num_gpus=4)
    assert_golden("job.slurm-gpus.sh", text)
    assert "#SBATCH --gpus-per-node=4\n" in text and "--gres" not in text
    assert " --gpus-per-node=4 --kill-on-bad-exit=0 apptainer exec --no-home --nv " in text


def test_slurm_gres_golden(tmp_path):
    site = site_file(tmp_path, "slurm-gres", "slurm", "  # gpu_request: gpus-per-node",
                     "  gpu_request: gres")
    text = script(site, num_gpus=4)
    assert_golden("job.slurm-gres.sh", text)
    assert "#SBATCH --gres=gpu:4\n" in text and "--gpus-per-node" not in text
    assert " --gres=gpu:4 --kill-on-bad-exit=0 apptainer exec --no-home --nv " in text


def test_num_gpus_0_and_none_render_the_cpu_job_unchanged():
    cpu = script("slurm")
    assert script("slurm", num_gpus=0) == cpu
    assert "--nv" not in cpu and "gpus" not in cpu and "gres" not in cpu


def test_sites_whose_gpus_come_with_the_node_keep_their_form():
    polaris = script("polaris", image="/lus/eagle/projects/PROJ/ray.sif")
    assert "#PBS -l select=4:system=polaris\n" in polaris and "ngpus" not in polaris
    assert "apptainer exec --fakeroot --no-home --nv " in polaris
    aurora = script("aurora", image="/lus/flare/projects/PROJ/ray.sif")
    assert "ngpus" not in aurora and "--nv" not in aurora
    frontier = script("frontier")
    assert "#SBATCH --gpus-per-node=8\n" in frontier and " --rocm " in frontier
    # A CPU launch on Perlmutter's GPU nodes asks for none and passes no flag.
    cpu = script("perlmutter", image="rayhpc/ray:2.60.0-py311-cpu", num_gpus=0)
    assert "--gpus-per-node" not in cpu and " --gpu " not in cpu


def test_pbs_and_lsf_ask_for_gpus_per_node():
    assert "#PBS -l select=4:ngpus=4\n" in script("pbs", num_gpus=4)
    lsf = script("lsf", num_gpus=4)
    assert_golden("job.lsf-gpus.sh", lsf)
    assert '#BSUB -gpu "num=4"\n' in lsf and " apptainer exec --no-home --nv " in lsf
    assert "-gpu" not in script("lsf")


def test_a_group_without_gpus_asks_for_none_and_tells_ray_none():
    spec = make_spec("perlmutter", shared=SHARED, account="PROJ",
                     group=["head:1:rayhpc/ray:cpu", "gpu:2:rayhpc/ray:gpu,gpu=nvidia"])
    head, gpu = spec.groups
    assert (head.num_gpus, gpu.num_gpus) == (0, 4)  # the site's num_gpus, for GPU groups only
    text = render_job_script(spec, load_site("perlmutter"))
    first, second = text.split("#SBATCH hetjob\n")
    assert "--gpus-per-node" not in first and "#SBATCH --gpus-per-node=4\n" in second


# -- 2. any PBS cluster: pbsdsh (default), hydra, openmpi, pals

@pytest.mark.parametrize("launcher", ["hydra", "openmpi"])
def test_pbs_launcher_goldens(tmp_path, launcher):
    site = site_file(tmp_path, f"pbs-{launcher}", "pbs", "launcher: pbsdsh",
                     f"launcher: {launcher}")
    assert_golden(f"job.pbs-{launcher}.sh", script(site, num_gpus=2))


PBS_RECORD = ('printf "%s\\n" "$@" > "$RAYHPC_RUN_DIR/launcher.args"\n'
              'echo 0 > "$RAYHPC_RUN_DIR/exit_code"\n')
ENV_WORDS = ['env', 'PATH=', 'RAYHPC_RUN_DIR={run_dir}',
             'RAYHPC_RANK_VARS={rank}', 'RAYHPC_HEAD_HOST=h1']


@pytest.mark.parametrize("launcher, program, rank, expected", [
    ("pbsdsh", "pbsdsh", "PBS_NODENUM", ["-v", "--", *ENV_WORDS]),
    ("hydra", "mpiexec", "PMI_RANK", ["-n", "2", "-ppn", "1", "-f", "{nodefile}"]),
    ("openmpi", "mpirun", "OMPI_COMM_WORLD_RANK",
     ["-n", "2", "--map-by", "ppr:1:node", "--hostfile", "{nodefile}",
      "-x", "PATH", "-x", "RAYHPC_RUN_DIR", "-x", "RAYHPC_RANK_VARS", "-x", "RAYHPC_HEAD_HOST"]),
    ("pals", "mpiexec", "PALS_RANKID,PMI_RANK",
     ["-n", "2", "--ppn", "1", "--cpu-bind", "none"]),
])
def test_each_pbs_launcher_runs_with_the_exact_command_line(tmp_path, monkeypatch, launcher,
                                                            program, rank, expected):
    """The rendered script, in bash, with a recording stand-in for the launcher on PATH."""
    site = site_file(tmp_path, f"pbs-{launcher}", "pbs", "launcher: pbsdsh",
                     f"launcher: {launcher}")
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("h1\nh2\n")
    monkeypatch.setenv("PBS_NODEFILE", str(nodefile))
    spec = make_spec(str(site), shared=str(tmp_path), image="/s/ray.sif", nodes=2)
    result, _ = run_script(tmp_path, render_job_script(spec, load_site(str(site))), program,
                           "apptainer", PBS_RECORD)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs/20260101-000000-abcd"
    args = (run_dir / "launcher.args").read_text().splitlines()
    # The job script's PATH goes along (the site's setup may have changed it): it is ours here.
    paths = [i for i, word in enumerate(args) if word.startswith("PATH=")]
    assert all(args[i].startswith(f"PATH={tmp_path}/bin:") for i in paths)
    args = [word if not word.startswith("PATH=") else "PATH=" for word in args]
    head = [word.format(nodefile=nodefile, run_dir=run_dir, rank=rank, path="")
            for word in expected]
    assert args[:len(head)] == head
    assert args[len(head):] == [
        "apptainer", "exec", "--no-home", "--bind", str(tmp_path), "--pwd", str(tmp_path),
        "/s/ray.sif", "python", f"{run_dir}/node_agent.pyz", "--run-dir", str(run_dir)]


def test_pbsdsh_refuses_groups_naming_the_launchers_that_run_them():
    with pytest.raises(UserError) as err:
        make_spec("pbs", image="/x.sif", group=["head:1", "w:1"])
    assert str(err.value) == (
        "--group: site pbs runs pbs, which cannot run node groups: pbsdsh starts one program "
        "on every host of the job (or on one, -n), not a group's share of them; set "
        "scheduler_options: {launcher: hydra} (or openmpi, pals) to run node groups")


# -- 3. any LSF cluster: blaunch on each host; jsrun with CSM

BLAUNCH_RECORD = ('host=$1; shift; printf "%s\\n" "$@" > "$RAYHPC_RUN_DIR/blaunch.$host"\n'
                  '[ "$host" = h1 ] && { sleep 0.3; echo 0 > "$RAYHPC_RUN_DIR/exit_code"; }\n'
                  'exit 0\n')


def test_blaunch_starts_one_agent_per_host_numbered_from_the_first(tmp_path, monkeypatch):
    monkeypatch.setenv("LSB_MCPU_HOSTS", "h1 1 h2 1 h3 1")
    spec = make_spec("lsf", shared=str(tmp_path), image="/s/ray.sif", nodes=3, num_gpus=2)
    text = render_job_script(spec, load_site("lsf"))
    assert "#BSUB -n 3\n" in text and '#BSUB -R "span[ptile=1]"\n' in text
    result, _ = run_script(tmp_path, text, "blaunch", "apptainer", BLAUNCH_RECORD)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs/20260101-000000-abcd"
    for index, host in enumerate(("h1", "h2", "h3")):
        args = (run_dir / f"blaunch.{host}").read_text().splitlines()
        assert args[0] == "env" and args[1].startswith(f"PATH={tmp_path}/bin:")
        assert args[2:7] == [f"RAYHPC_RUN_DIR={run_dir}", "RAYHPC_RANK_VARS=RAYHPC_HOST_INDEX",
                             "RAYHPC_HEAD_HOST=h1", f"RAYHPC_HOST_INDEX={index}", "apptainer"]
        assert args[7:] == ["exec", "--no-home", "--nv", "--bind", str(tmp_path), "--pwd",
                            str(tmp_path), "/s/ray.sif", "python",
                            f"{run_dir}/node_agent.pyz", "--run-dir", str(run_dir)]


def test_lsf_csm_keeps_jsrun_and_bsub_reads_the_script_on_standard_input():
    text = script("lsf-csm")
    assert "#BSUB -nnodes 4\n" in text and "\njsrun -n 4 -r 1 -a 1 -c ALL_CPUS -b rs " in text
    assert "blaunch" not in text and "-gpu" not in text
    from rayhpc.launcher.schedulers import SCHEDULERS
    assert SCHEDULERS["lsf"].submit_command("/r/job.sh") == (["bsub"], True)


# -- 4. Pyxis: srun's own container flags

SRUN_RECORD = ('printf "%s\\n" "$@" > "$RAYHPC_RUN_DIR/srun.args"\n'
               'echo 0 > "$RAYHPC_RUN_DIR/exit_code"\n')


def test_pyxis_golden():
    text = script(EXAMPLES / "slurm-pyxis.yaml", image=PYXIS_IMAGE, num_gpus=8)
    assert_golden("job.slurm-pyxis.sh", text)
    assert "command -v enroot" in text and "apptainer" not in text


def test_pyxis_srun_gets_the_exact_command_line(tmp_path, monkeypatch):
    """The job script in bash with a recording stand-in `srun` (and `enroot`, which the script
    checks for) on PATH: pyxis's flags go to srun, then the agent."""
    monkeypatch.setenv("SLURM_JOB_CPUS_PER_NODE", "64(x2)")
    site = load_site(str(EXAMPLES / "slurm-pyxis.yaml"))
    spec = make_spec(str(site.path), shared=str(tmp_path), image=PYXIS_IMAGE, nodes=2,
                     num_gpus=8)
    result, _ = run_script(tmp_path, render_job_script(spec, site), "srun", "enroot",
                           SRUN_RECORD)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs/20260101-000000-abcd"
    assert (run_dir / "srun.args").read_text().splitlines() == [
        "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=64",
        "--cpu-bind=none", "--gpus-per-node=8", "--kill-on-bad-exit=0",
        f"--container-image={PYXIS_IMAGE}", f"--container-mounts={tmp_path}:{tmp_path}",
        f"--container-workdir={tmp_path}", "--no-container-mount-home",
        "--container-writable", "python", f"{run_dir}/node_agent.pyz", "--run-dir",
        str(run_dir)]


def test_pyxis_takes_registry_images_and_squashfs_files_not_sifs():
    from rayhpc.launcher.runtimes import runtime

    pyxis = runtime("pyxis")
    assert pyxis.image_problem(PYXIS_IMAGE, on_this_host=True) == ""
    assert pyxis.image_problem("/no/such.sqsh", on_this_host=False) == ""
    assert pyxis.image_problem("/no/such.sqsh", on_this_host=True).startswith(
        "/no/such.sqsh is not a file; give a registry image")
    assert pyxis.image_problem("/s/ray.sif", on_this_host=False).startswith(
        "pyxis runs a registry image or a squashfs file, not a SIF (/s/ray.sif)")


# -- bad input: one error line naming the flag or key and the fix, exit 2, nothing written

BAD = [
    ("gpu-none", "scheduler: slurm\nruntime: apptainer\ngpu: none\n", ["--num-gpus", "4"],
     "error: --num-gpus: 4: site gpu-none has no GPUs (its `gpu` is none or unset), so its "
     "scheduler cannot be asked for any; drop --num-gpus (or give 0), or set `gpu: nvidia`, "
     "`amd` or `intel` in a copy of the site file"),
    ("pyxis-amd", "scheduler: slurm\nruntime: pyxis\ngpu: amd\n", [],
     "gpu: 'amd': runtime pyxis cannot pass amd GPUs into its containers (it passes: nvidia); "
     "use a runtime that can (apptainer passes nvidia, amd and intel)"),
    ("pyxis-pbs", "scheduler: pbs\nruntime: pyxis\n", [],
     "runtime: pyxis runs only through slurm (scheduler: pbs); use it on a slurm site, or "
     "pick another runtime (apptainer runs everywhere)"),
    ("pbs-mpich", "scheduler: pbs\nruntime: apptainer\nscheduler_options: {launcher: mpich}\n",
     [], "scheduler_options: launcher: 'mpich' is not one of: pbsdsh, hydra, openmpi, pals"),
    ("slurm-gpus", "scheduler: slurm\nruntime: apptainer\ngpu: nvidia\n",
     ["--group", "head:1", "--group", "gpu:2,gpu=nvidia"],
     "error: group gpu: gpu: nvidia: site slurm-gpus asks its scheduler for each node's GPUs, "
     "and the group gives no count: add num_gpus=N (GPUs per node) to the group, or give "
     "--num-gpus N"),
]


@pytest.mark.parametrize("name, text, flags, message", BAD, ids=[case[0] for case in BAD])
def test_bad_gpu_and_launcher_input(tmp_path, name, text, flags, message):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    shared = tmp_path / "shared"
    result = invoke("launch", "--site", str(path), "--shared", str(shared), "--image",
                    "/x.sif", "--dry-run", *flags, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    assert not shared.exists() and result.stdout == ""
