"""Node groups on batch sites (no scheduler needed): golden job scripts of a grouped launch on
Slurm (a heterogeneous job) and PBS (one chunk and one mpiexec per group), the job script's
own host split run in bash, schedulers that refuse groups, Apptainer's image versions, and
`rayhpc launch --dry-run --group` through the real CLI."""

import io
import json
import os
import shutil
from pathlib import Path

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends.batch.jobscript import render_job_script
from rayhpc.launcher.backends.batch.submission import BatchLaunch
from rayhpc.launcher.resolve.config import load_site
from rayhpc.launcher.runtimes import runtime
from rayhpc.launcher.runtimes.apptainer import versions_from_inspect
from rayhpc.launcher.schedulers import SCHEDULERS
from tests.cli import invoke
from tests.golden import assert_golden
from tests.specs import make_spec
from tests.test_hpc_unit import fake_bin, run_script

SLURM_GROUPS = ["head:1:/lus/proj/cpu.sif",
                "gpu:2:/lus/proj/gpu.sif,gpu=nvidia,num_gpus=4,resources.trainer=1,"
                "scheduler_options.constraint=gpu"]
POLARIS_SHARED = "/home/me/shared"
POLARIS_GROUPS = [f"head:1:{POLARIS_SHARED}/cpu.sif",
                  "gpu:2:/lus/eagle/projects/PROJ/gpu.sif,gpu=nvidia,resources.trainer=1"]


def slurm_script(site="slurm", groups=SLURM_GROUPS, **cli):
    spec = make_spec(site, shared="/lus/proj/shared", account="PROJ", group=groups, **cli)
    return render_job_script(spec, load_site(site))


def polaris_script(**cli):
    cli = {"shared": POLARIS_SHARED, "account": "PROJ", "group": POLARIS_GROUPS, **cli}
    return render_job_script(make_spec("polaris", **cli), load_site("polaris"))


def test_slurm_grouped_job_script_golden():
    assert_golden("job.slurm-groups.sh", slurm_script())


def test_polaris_grouped_job_script_golden():
    assert_golden("job.polaris-groups.sh", polaris_script())


def test_slurm_components_job_wide_options_first_and_per_group_resources():
    directives = [line for line in slurm_script().splitlines() if line.startswith("#SBATCH")]
    split = directives.index("#SBATCH hetjob")
    first, second = directives[:split], directives[split + 1:]
    assert "#SBATCH hetjob" not in second
    for option in ("--job-name=", "--time=", "--output=", "--signal=", "--account="):
        assert any(line.startswith(f"#SBATCH {option}") for line in first), option
        assert not any(line.startswith(f"#SBATCH {option}") for line in second), option
    for component, nodes in ((first, 1), (second, 2)):
        assert f"#SBATCH --nodes={nodes}" in component
        assert "#SBATCH --ntasks-per-node=1" in component
        assert "#SBATCH --exclusive" in component
        assert "#SBATCH --mem=0" in component  # the site's option, in every component
    assert "#SBATCH --constraint=gpu" in second
    assert not any("constraint" in line for line in first)


def test_slurm_one_step_one_segment_per_group_in_its_image():
    script = slurm_script()
    [step] = [line for line in script.splitlines() if line.startswith("srun ")]
    head, worker = step.removesuffix(" &").split(" : ")
    run_dir = "/lus/proj/shared/runs/20260101-000000-abcd"
    agent = f"python {run_dir}/node_agent.pyz --run-dir {run_dir}"
    assert head.startswith("srun --het-group=0 --nodes=1 --ntasks=1 --ntasks-per-node=1 "
                           '--cpus-per-task="$cpus_0" ')
    assert head.endswith(f" /lus/proj/cpu.sif {agent} --group head")
    assert "--nv" not in head.split()
    assert worker.startswith("--het-group=1 --nodes=2 --ntasks=2 --ntasks-per-node=1 "
                             '--cpus-per-task="$cpus_1" --cpu-bind=none --gpus-per-node=4 '
                             '--kill-on-bad-exit=0 ')
    assert " apptainer exec --no-home --nv " in worker
    assert worker.endswith(f" /lus/proj/gpu.sif {agent} --group gpu --role worker")
    # Each component's own CPU count, and the head on component 0's first node.
    assert ('cpus_1=$(echo "${SLURM_JOB_CPUS_PER_NODE_HET_GROUP_1:-1}" | tr \',\' \'\\n\' | '
            "sed 's/(.*//' | sort -n | head -n 1)  # gpu\n") in script
    assert ('export RAYHPC_HEAD_HOST="$(scontrol show hostnames '
            '"$SLURM_JOB_NODELIST_HET_GROUP_0" | head -n 1)"\n') in script


def test_slurm_group_cpus_per_task_and_runtime_options_are_its_own(tmp_path):
    """From a site file's groups (the --group short form gives strings, not numbers)."""
    path = tmp_path / "site.yaml"
    path.write_text(
        "name: grouped\nscheduler: slurm\nruntime: apptainer\ngroups:\n"
        "  head: {nodes: 1, image: /lus/proj/cpu.sif, scheduler_options: {cpus_per_task: 8}}\n"
        "  w: {nodes: 1, image: /lus/proj/cpu.sif, runtime_options: [--unsquash]}\n")
    script = render_job_script(make_spec(str(path), shared="/s"), load_site(str(path)))
    [step] = [line for line in script.splitlines() if line.startswith("srun ")]
    head, worker = step.split(" : ")
    assert "--cpus-per-task=8 " in head and "cpus_0=" not in script
    assert '--cpus-per-task="$cpus_1" ' in worker and "cpus_1=$(" in script
    assert "apptainer exec --unsquash --no-home" in worker
    assert "--unsquash" not in head


def test_perlmutter_cpu_group_asks_for_no_gpus():
    """The site's num_gpus and GPU flag go to groups with GPUs only."""
    script = slurm_script("perlmutter", groups=[
        "head:1:rayhpc/ray:2.60.0-py311-cpu,scheduler_options.constraint=cpu",
        "gpu:2:rayhpc/ray:2.60.0-py311-gpu,gpu=nvidia"])
    first, second = script.split("#SBATCH hetjob\n")
    second = second.split("\n\n")[0]
    assert "--constraint=cpu" in first and "--gpus" not in first
    assert "#SBATCH --gpus-per-node=4" in second and "#SBATCH --constraint=gpu" in second
    [step] = [line for line in script.splitlines() if line.startswith("srun ")]
    head, worker = step.split(" : ")
    assert " --gpu " not in head and "--gpus-per-node" not in head
    assert " --gpu " in worker and "--gpus-per-node=4" in worker


def test_a_launch_without_groups_renders_as_before():
    script = render_job_script(make_spec("slurm", image="/x.sif", shared="/s"),
                               load_site("slurm"))
    assert "hetjob" not in script and "--group" not in script and "HET_GROUP" not in script


def test_pbs_one_chunk_per_group_and_one_queue():
    script = polaris_script()
    assert "#PBS -l select=1:system=polaris+2:system=polaris\n" in script
    assert "#PBS -l place=scatter:excl\n" in script
    # Every image's file system is declared (ALCF holds jobs on undeclared ones): eagle only
    # from the gpu group's image.
    assert "#PBS -l filesystems=home:eagle\n" in script
    with pytest.raises(UserError, match=r"groups: queue: a PBS job runs in one queue.*"
                                        r"head: debug.*gpu: prod"):
        polaris_script(group=[f"head:1:{POLARIS_SHARED}/cpu.sif,queue=debug",
                              f"gpu:2:{POLARIS_SHARED}/gpu.sif,queue=prod"])


MPIEXEC_RECORDS = """\
hostfile=""; args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [ "${args[i]}" = --hostfile ] && hostfile=${args[i+1]}
done
group=""
for ((i = 0; i < ${#args[@]}; i++)); do
  [ "${args[i]}" = --group ] && group=${args[i+1]}
done
{ echo "$*"; paste -sd, "$hostfile"; } > "$RAYHPC_RUN_DIR/launch.$group"
sleep 0.5
[ "$group" = head ] && echo 7 > "$RAYHPC_RUN_DIR/exit_code"
exit 0
"""


def pals_site(tmp_path):
    """The generic PBS profile with PALS's mpiexec (pbsdsh, its default, runs no groups)."""
    path = tmp_path / "pbs-pals.yaml"
    path.write_text(Path(load_site("pbs").path).read_text()
                     .replace("launcher: pbsdsh", "launcher: pals"))
    return load_site(str(path))


def test_pbs_groups_run_on_their_share_of_the_node_file(tmp_path, monkeypatch):
    """Run the rendered PBS script in bash with a stand-in mpiexec: each group's mpiexec gets
    the next hosts of $PBS_NODEFILE (each host once, head's group first), both run, the
    script waits for both and exits with the driver's code."""
    site = pals_site(tmp_path)
    spec = make_spec(str(site.path), shared=str(tmp_path), account="P",
                     group=["head:1:/s/cpu.sif", "gpu:2:/s/gpu.sif,gpu=nvidia,num_gpus=4"])
    script = render_job_script(spec, site)
    assert "#PBS -l select=1+2:ngpus=4\n" in script
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("h1\nh1\nh2\nh2\nh3\nh3\n")  # ncpus chunks list a host per CPU
    monkeypatch.setenv("PBS_NODEFILE", str(nodefile))
    result, _ = run_script(tmp_path, script, "mpiexec", "apptainer", MPIEXEC_RECORDS)
    run_dir = tmp_path / "runs/20260101-000000-abcd"
    assert result.returncode == 7, result.stdout + result.stderr
    head = (run_dir / "launch.head").read_text().splitlines()
    gpu = (run_dir / "launch.gpu").read_text().splitlines()
    assert head[0].startswith("-n 1 --ppn 1 --hostfile ") and head[1] == "h1"
    assert head[0].endswith("--group head")
    assert gpu[0].startswith("-n 2 --ppn 1 --hostfile ") and gpu[1] == "h2,h3"
    assert gpu[0].endswith("--group gpu --role worker") and " --nv " in gpu[0]


def test_pbs_too_few_hosts_for_the_groups_fails_saying_so(tmp_path, monkeypatch):
    site = pals_site(tmp_path)
    spec = make_spec(str(site.path), shared=str(tmp_path), account="P",
                     group=["head:1:/s/cpu.sif", "gpu:2:/s/gpu.sif"])
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("h1\nh2\n")
    monkeypatch.setenv("PBS_NODEFILE", str(nodefile))
    result, _ = run_script(tmp_path, render_job_script(spec, site), "mpiexec",
                           "apptainer", 'touch "$RAYHPC_RUN_DIR/launched"\n')
    run_dir = tmp_path / "runs/20260101-000000-abcd"
    message = (f"rayhpc: the job has fewer than 3 hosts in {nodefile}; the groups need "
               "head 1 + gpu 2")
    assert result.returncode == 1
    assert (run_dir / "error").read_text() == message + "\n"
    assert not (run_dir / "launched").exists()


@pytest.mark.parametrize("site, scheduler, needed", [
    ("theta", "cobalt", "one aprun per part"), ("lsf", "lsf", "a jsrun ERF file")])
def test_cobalt_and_lsf_refuse_groups_saying_what_it_would_take(site, scheduler, needed):
    with pytest.raises(UserError) as error:
        make_spec(site, image="/x.sif", account="P",
                  group=["head:1:/x.sif", "w:1:/y.sif"])
    message = str(error.value)
    assert message.startswith(f"--group: site {site} runs {scheduler}, which cannot run node "
                              "groups: ")
    assert needed in message
    assert message.endswith("run one image for every node, or split the work into separate "
                            "launches")


# -- Apptainer: the image's Ray and Python versions from its labels

INSPECT_JSON = {"data": {"attributes": {"labels": {
    "org.rayhpc.ray-version": "2.60.0", "org.rayhpc.python-version": "3.11",
    "org.label-schema.schema-version": "1.0"}}}, "type": "container"}


@pytest.fixture
def fake_apptainer(tmp_path, monkeypatch):
    """A stand-in `apptainer` first on PATH that records its command line and prints what
    the test puts in ``out`` (exit code in ``rc``). Only where no real one is installed."""
    if shutil.which("apptainer"):
        pytest.skip("a real apptainer is on PATH; this test needs the stand-in")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_bin(bin_dir, "apptainer", f'echo "$@" > {tmp_path}/argv\ncat {tmp_path}/out\n'
                                   f'exit "$(cat {tmp_path}/rc)"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    def answer(out: str, rc: int = 0) -> Path:
        (tmp_path / "out").write_text(out)
        (tmp_path / "rc").write_text(str(rc))
        return tmp_path / "argv"
    return answer


def test_apptainer_image_versions_from_the_sif_labels(fake_apptainer):
    argv = fake_apptainer(json.dumps(INSPECT_JSON))
    assert runtime("apptainer").image_versions("/s/ray.sif") == {"ray": "2.60.0",
                                                                  "python": "3.11"}
    assert argv.read_text() == "inspect --labels --json /s/ray.sif\n"


@pytest.mark.parametrize("out, rc", [
    (json.dumps(INSPECT_JSON), 255),  # the call failed
    ("FATAL: could not open image /s/ray.sif", 0),  # not JSON
    (json.dumps({"data": {"attributes": {"labels": {"org.rayhpc.ray-version": "2.60.0"}}}}),
     0),  # no Python label
    (json.dumps({"data": {"attributes": {}}}), 0),  # no labels
])
def test_apptainer_image_versions_unknown(fake_apptainer, out, rc):
    fake_apptainer(out, rc)
    assert runtime("apptainer").image_versions("/s/ray.sif") is None


def test_apptainer_image_versions_without_the_program(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert runtime("apptainer").image_versions("/s/ray.sif") is None


def test_singularity_flat_labels_are_read_too():
    labels = INSPECT_JSON["data"]["attributes"]["labels"]
    assert versions_from_inspect(json.dumps(labels)) == {"ray": "2.60.0", "python": "3.11"}


def test_dry_run_with_groups_prints_the_heterogeneous_job(tmp_path):
    result = invoke("launch", "--site", "slurm", "--dry-run", "--shared", str(tmp_path),
                    "--group", "head:1:/sif/cpu.sif",
                    "--group", "gpu:2:/sif/gpu.sif,gpu=nvidia,num_gpus=4,resources.trainer=1")
    assert result.returncode == 0, result.stderr
    assert "#SBATCH hetjob\n#SBATCH --nodes=2\n" in result.stdout
    assert " : --het-group=1 --nodes=2 " in result.stdout
    assert not list(tmp_path.glob("runs/*"))  # a dry run writes nothing


def test_slurm_allocation_for_groups_must_be_a_heterogeneous_job_of_as_many_components():
    slurm = SCHEDULERS["slurm"]
    assert slurm.allocation_problem(0, {"SLURM_JOB_ID": "1"}) == ""
    assert slurm.allocation_problem(2, {"SLURM_JOB_ID": "1", "SLURM_HET_SIZE": "2"}) == ""
    assert "this allocation is not a heterogeneous job; launch from a login node" in \
        slurm.allocation_problem(2, {"SLURM_JOB_ID": "1"})
    assert "this allocation is a heterogeneous job of 3 components" in \
        slurm.allocation_problem(2, {"SLURM_JOB_ID": "1", "SLURM_HET_SIZE": "3"})


def test_groups_inside_a_plain_slurm_allocation_are_refused_before_anything_runs(
        tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.delenv("SLURM_HET_SIZE", raising=False)
    spec = make_spec("slurm", shared=str(tmp_path), group=["head:1:/s/a.sif", "w:1:/s/b.sif"])
    with pytest.raises(UserError, match=r"^groups: inside a slurm allocation: a launch with 2 "
                                        r"node groups runs as a heterogeneous job of 2 "
                                        r"components, and this allocation is not a "
                                        r"heterogeneous job"):
        BatchLaunch(spec, load_site("slurm"), io.StringIO()).run()
    assert not (tmp_path / "runs").exists()
