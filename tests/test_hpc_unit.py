"""HPC pieces that cannot run here (Cobalt/ALPS, PBS/PALS, LSF/jsrun; and Slurm without the
test bed): golden job scripts of every site, walltimes, queues, scheduler logic, runtime
command lines, and the job script's own logic (walltime timer, runtime check) run in bash."""

import dataclasses
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends import backend_for
from rayhpc.launcher.backends.batch.jobscript import (
    JOB_SCRIPT,
    CommonSlots,
    KindSlots,
    SlotTemplate,
    fill,
    render_job_script,
)
from rayhpc.launcher.orchestration import resolve_spec
from rayhpc.launcher.resolve.config import list_sites, load_site
from rayhpc.launcher.runtimes import ExecRequest, runtime
from rayhpc.launcher.schedulers import SCHEDULERS, Job, current_allocation
from rayhpc.launcher.times import parse_walltime
from tests.golden import assert_golden
from tests.specs import make_spec

HPC_SITES = sorted(s.name for s in list_sites() if s.scheduler != "local")
# Each site's shared dir where its users keep one (ALCF: on a project file system, which the
# job must name in filesystems=).
SHARED = {"polaris": "/lus/eagle/projects/PROJ/shared", "aurora": "/lus/flare/projects/PROJ",
          "theta": "/lus/grand/projects/PROJ/shared"}


def image_for(site):
    """An image of the kind the site's runtime takes: a SIF path, or a podman-hpc name."""
    if runtime(site.runtime).image_kind == "sif":
        return f"{SHARED.get(site.name, '/lus/proj')}/ray.sif"
    return "rayhpc/ray:2.60.0-py311-gpu"


def spec_for(site, nodes=4, **cli):
    cli = {"nodes": nodes, "shared": SHARED.get(site.name, "/lus/proj/shared"),
           "image": image_for(site), "account": "PROJ", **cli}
    return make_spec(site.name, **cli)


def script_for(name, **cli):
    site = load_site(name)
    return render_job_script(spec_for(site, **cli), site)


@pytest.mark.parametrize("name", HPC_SITES)
def test_job_script_golden(name):
    assert_golden(f"job.{name}.sh", script_for(name))


def test_the_job_script_template_has_exactly_the_slots_both_kinds_of_job_fill():
    marked = {match.group("named") for match in SlotTemplate.pattern.finditer(JOB_SCRIPT)}
    filled = {f.name for slots in (CommonSlots, KindSlots) for f in dataclasses.fields(slots)}
    assert marked == filled


def test_a_slot_alone_on_its_line_holds_lines_and_an_empty_one_leaves_no_line():
    template = "a\n@lines\nb @text\n"
    assert fill(template, {"lines": ("1", "2"), "text": "t"}) == "a\n1\n2\nb t\n"
    assert fill(template, {"lines": (), "text": "t"}) == "a\nb t\n"
    with pytest.raises(KeyError):
        fill(template, {"lines": ()})
    with pytest.raises(KeyError):  # a slot of lines is never used as text
        fill("x @lines\n", {"lines": ("1",)})


def test_every_hpc_site_has_a_golden_job_script_and_names_its_sources():
    assert set(HPC_SITES) >= {"theta", "polaris", "aurora", "perlmutter", "frontier", "slurm",
                              "pbs", "lsf"}
    for name in HPC_SITES:
        assert load_site(name).docs, f"site {name} names no documentation (docs:)"


@pytest.mark.parametrize("name, launcher", [
    ("theta", "aprun -n 4 -N 1 --cc none singularity exec --no-home"),
    ("polaris", "mpiexec -n 4 --ppn 1 --cpu-bind none apptainer exec --fakeroot --no-home --nv"),
    ("aurora", "mpiexec -n 4 --ppn 1 --cpu-bind none apptainer exec --no-home --bind"),
    ("frontier", "srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --cpus-per-task=56 "
                 "--cpu-bind=none --gpus-per-node=8 --kill-on-bad-exit=0 apptainer exec "
                 "--no-home --rocm"),
    ("perlmutter", "srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --cpus-per-task=\"$cpus\" "
                   "--cpu-bind=none --gpus-per-node=4 --kill-on-bad-exit=0 podman-hpc run --rm "
                   "--init --network host --ipc host --userns=keep-id --nccl --gpu"),
    ("slurm", "srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --cpus-per-task=\"$cpus\" "
              "--cpu-bind=none --kill-on-bad-exit=0 apptainer exec --no-home --bind"),
    ("lsf", '    blaunch "$host" env PATH="${PATH}"'),
    ("lsf-csm", "jsrun -n 4 -r 1 -a 1 -c ALL_CPUS -b rs apptainer exec --no-home"),
    ("pbs", 'pbsdsh -v -- env PATH="${PATH}" RAYHPC_RUN_DIR="${RAYHPC_RUN_DIR}" '
            'RAYHPC_RANK_VARS="${RAYHPC_RANK_VARS}" RAYHPC_HEAD_HOST="${RAYHPC_HEAD_HOST}" '
            'apptainer exec --no-home'),
    ("lumi", "srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --cpus-per-task=56 "
             "--cpu-bind=none --gpus-per-node=8 --kill-on-bad-exit=0 singularity exec "
             "--no-home --bind"),
])
def test_one_agent_per_node_in_the_site_runtime_with_all_its_cpus(name, launcher):
    script = script_for(name)
    assert f"\n{launcher} " in script
    run_dir = f"{SHARED.get(name, '/lus/proj/shared')}/runs/20260101-000000-abcd"
    assert f"{run_dir}/node_agent.pyz --run-dir {run_dir}" in script


def test_slurm_asks_for_the_walltime_warning_and_scripts_forward_it():
    script = script_for("slurm")
    assert "#SBATCH --signal=B:TERM@60\n" in script
    assert "export RAYHPC_RUN_DIR=/lus/proj/shared/runs/20260101-000000-abcd\n" in script
    assert "trap '(set -C; echo job script: walltime or cancel > \"$RAYHPC_RUN_DIR/stop\") " \
           "2>/dev/null' TERM INT" in script
    assert script.rstrip().endswith('exit "$code"')
    assert "sleep " not in script  # Slurm warns by itself: no timer


# -- walltime: one form in (Slurm's), every scheduler's own syntax out

WALLTIME_TABLE = [
    # text, seconds, slurm --time, pbs walltime, cobalt -t (minutes), lsf -W
    ("30", 1800, "00:30:00", "00:30:00", "30", "0:30"),                    # MM
    ("90", 5400, "01:30:00", "01:30:00", "90", "1:30"),                    # MM past an hour
    ("30:00", 1800, "00:30:00", "00:30:00", "30", "0:30"),                 # MM:SS
    ("1:30", 90, "00:01:30", "00:01:30", "2", "0:02"),                     # MM:SS, rounded up
    ("01:00:00", 3600, "01:00:00", "01:00:00", "60", "1:00"),              # HH:MM:SS
    ("36:00:00", 129600, "1-12:00:00", "36:00:00", "2160", "36:00"),       # past a day
    ("2-12", 216000, "2-12:00:00", "60:00:00", "3600", "60:00"),           # D-HH
    ("1-02:30", 95400, "1-02:30:00", "26:30:00", "1590", "26:30"),         # D-HH:MM
    ("0-00:00:30", 30, "00:00:30", "00:00:30", "1", "0:01"),               # D-HH:MM:SS
]


@pytest.mark.parametrize("text, seconds, slurm, pbs, cobalt, lsf", WALLTIME_TABLE)
def test_every_walltime_form_on_every_scheduler(text, seconds, slurm, pbs, cobalt, lsf):
    assert parse_walltime(text) == seconds
    job = Job(name="j", nodes=1, walltime_s=seconds, output="/o", stop_grace_s=1)
    rendered = {name: "\n".join(SCHEDULERS[name].directives(job)) for name in SCHEDULERS}
    assert f"#SBATCH --time={slurm}\n" in rendered["slurm"]
    assert f"#PBS -l walltime={pbs}\n" in rendered["pbs"]
    assert rendered["cobalt"].startswith(f"#COBALT -t {cobalt}\n")
    assert f"#BSUB -W {lsf}\n" in rendered["lsf"]


def test_every_walltime_form_through_the_flag_reaches_the_job_script():
    for text, _, slurm, pbs, cobalt, lsf in WALLTIME_TABLE:
        if parse_walltime(text) <= 60:
            continue  # shorter than the stop grace: refused (see below)
        assert f"#SBATCH --time={slurm}\n" in script_for("slurm", walltime=text)
        assert f"#PBS -l walltime={pbs}\n" in script_for("pbs", walltime=text)
        assert f"#BSUB -W {lsf}\n" in script_for("lsf", walltime=text)
        # (backfill: a Theta queue outside its table, so no limit applies)
        assert f"#COBALT -t {cobalt}\n" in script_for("theta", walltime=text, queue="backfill")


@pytest.mark.parametrize("text", ["", "soon", "1:2:3:4", "1-", "-5", "1h", "1.5", "1-2-3"])
def test_malformed_walltimes(text):
    with pytest.raises(ValueError, match="must be a walltime in one of Slurm's forms: MM, "
                                         "MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"):
        parse_walltime(text)


@pytest.mark.parametrize("text, field", [
    ("1:75", "seconds (75) must be below 60"), ("1:60:00", "minutes (60) must be below 60"),
    ("1-24", "hours (24) must be below 24"), ("2:00:60", "seconds (60) must be below 60"),
    ("1-02:61", "minutes (61) must be below 60")])
def test_ambiguous_walltimes(text, field):
    with pytest.raises(ValueError, match="^" + re.escape(f"ambiguous: its {field} in Slurm's")):
        parse_walltime(text)


@pytest.mark.parametrize("text", ["0", "00:00:00", "0-0"])
def test_zero_walltime(text):
    with pytest.raises(ValueError, match="must be more than zero"):
        parse_walltime(text)


def test_bad_walltime_messages_name_the_flag():
    with pytest.raises(UserError) as err:
        make_spec("slurm", walltime="1:75")
    assert str(err.value) == ("--walltime: '1:75': ambiguous: its seconds (75) must be below "
                              "60 in Slurm's forms MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or "
                              "D-HH:MM:SS (30:00 is 30 minutes)")
    with pytest.raises(UserError) as err:
        make_spec("slurm", walltime="1:2:3:4")
    assert str(err.value) == ("--walltime: '1:2:3:4': must be a walltime in one of Slurm's "
                              "forms: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (30:00 "
                              "is 30 minutes, 2-12 is 2 days 12 hours)")
    with pytest.raises(UserError) as err:
        make_spec("slurm", walltime="1")
    assert str(err.value) == ("--walltime: 00:01:00 leaves no time to run: the agents are "
                              "told to stop 60 s (stop_grace) before the end; give a longer "
                              "walltime")


def test_a_walltime_in_a_site_file_is_read_with_slurms_meaning(tmp_path):
    """Unquoted 30:00 is YAML 1.1's base-60 number 1800 to PyYAML: read as text, 30 minutes."""
    path = tmp_path / "mine.yaml"
    path.write_text("scheduler: slurm\nruntime: apptainer\nwalltime: 30:00\n")
    assert load_site(str(path)).settings["walltime"] == 1800
    path.write_text("scheduler: slurm\nruntime: apptainer\nwalltime: 1:00:00\n")
    assert load_site(str(path)).settings["walltime"] == 3600


def test_default_launch_on_polaris_is_not_sent_to_debug():
    site = load_site("polaris")
    spec = make_spec("polaris", account="P", image="/x.sif")  # 3 nodes, the site's 1 h
    assert (spec.nodes, spec.queue) == (3, "debug-scaling")
    assert "#PBS -q debug-scaling\n" in render_job_script(spec, site)


def test_a_queue_outside_the_table_and_sites_without_a_table():
    assert spec_for(load_site("polaris"), queue="special").queue == "special"
    assert spec_for(load_site("slurm")).queue is None
    assert spec_for(load_site("perlmutter")).queue == "regular"  # the site's own


@pytest.mark.parametrize("name", ["polaris", "aurora", "theta"])
def test_alcf_sites_refuse_a_launch_without_account(name):
    with pytest.raises(UserError) as err:
        make_spec(name, image="/x.sif")
    assert str(err.value) == (
        f"--account: site {name} refuses jobs without a project to charge; give --account "
        f"PROJECT, set RAYHPC_ACCOUNT=PROJECT, or put `account: PROJECT` in the site file "
        f"{load_site(name).path}")
    assert make_spec(name, image="/x.sif", environ={"RAYHPC_ACCOUNT": "P"}).account == "P"


def test_whole_nodes_unless_the_site_shares_them(tmp_path):
    slurm = script_for("slurm")
    assert "#SBATCH --exclusive\n#SBATCH --mem=0\n" in slurm
    assert "#PBS -l place=scatter:excl\n" in script_for("pbs")
    path = tmp_path / "shared.yaml"
    path.write_text("scheduler: pbs\nruntime: apptainer\nshared_nodes: true\n")
    site = load_site(str(path))
    script = render_job_script(make_spec(str(path), image="/x.sif"), site)
    assert "#PBS -l place=scatter\n" in script
    path.write_text("scheduler: slurm\nruntime: apptainer\nshared_nodes: true\n")
    assert "--exclusive" not in render_job_script(make_spec(str(path), image="/x.sif"),
                                                  load_site(str(path)))


def test_alcf_filesystems_follow_the_shared_dir_and_the_image():
    assert "#PBS -l filesystems=home:eagle\n" in script_for("polaris")
    assert "#PBS -l filesystems=home:eagle\n" in script_for(
        "polaris", shared="/lus/agile/home/me/s", image="/eagle/P/ray.sif")
    assert "#PBS -l filesystems=flare\n" in script_for("aurora", shared="/flare/P/s")
    assert "#PBS -l filesystems=home\n" in script_for("polaris", shared="/home/me/s",
                                                      image="/home/me/ray.sif")
    assert "#PBS -l filesystems=flare\n" in script_for("aurora")
    assert "#COBALT --attrs filesystems=home,grand:mcdram=cache:numa=quad\n" in \
        script_for("theta")
    assert "#COBALT --attrs filesystems=home,theta-fs0:mcdram=cache:numa=quad\n" in \
        script_for("theta", shared="/projects/P/s", image="/home/me/ray.sif")


def test_alcf_compute_nodes_go_out_through_the_proxy():
    script = script_for("polaris")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        assert f"export {var}=http://proxy.alcf.anl.gov:3128\n" in script
    assert "export no_proxy='admin,polaris-adminvm-01,localhost,*.cm.polaris.alcf.anl.gov," \
           "polaris-*,*.polaris.alcf.anl.gov,*.alcf.anl.gov'\n" in script
    assert "proxy" not in script_for("frontier")


def test_the_job_script_names_the_rank_variable_of_its_launcher():
    assert "export RAYHPC_RANK_VARS=SLURM_PROCID\n" in script_for("slurm")
    assert "export RAYHPC_RANK_VARS=PALS_RANKID,PMI_RANK\n" in script_for("polaris")
    assert "export RAYHPC_RANK_VARS=ALPS_APP_PE\n" in script_for("theta")
    assert "export RAYHPC_RANK_VARS=JSM_NAMESPACE_RANK,OMPI_COMM_WORLD_RANK\n" in \
        script_for("lsf-csm")
    assert "export RAYHPC_RANK_VARS=RAYHPC_HOST_INDEX\n" in script_for("lsf")
    assert "export RAYHPC_RANK_VARS=PBS_NODENUM\n" in script_for("pbs")


def test_perlmutter_queue_is_a_qos_and_podman_hpc_gets_the_rank_and_runs_as_the_user():
    script = script_for("perlmutter")
    assert "#SBATCH --qos=regular\n" in script and "--partition" not in script
    assert ("podman-hpc run --rm --init --network host --ipc host --userns=keep-id --nccl "
            "--gpu --volume /lus/proj/shared:/lus/proj/shared --workdir /lus/proj/shared "
            "-e 'SLURM_*' -e NCCL_SOCKET_IFNAME -e RAYHPC_RANK_VARS -e GLOO_SOCKET_IFNAME "
            "-e RAYHPC_HEAD_HOST "
            "rayhpc/ray:2.60.0-py311-gpu python ") in script


def test_perlmutter_refuses_a_sif(tmp_path):
    from rayhpc.launcher.orchestration import launch

    with pytest.raises(UserError) as err:
        launch("perlmutter", {"shared": str(tmp_path), "image": "/lus/proj/ray.sif"},
               dry_run=True)
    assert str(err.value) == (
        "--image: podman-hpc runs an image name, not a file (/lus/proj/ray.sif); give the "
        "image's name as `podman-hpc images` lists it (after `podman-hpc pull NAME` or "
        "`podman-hpc migrate NAME`), not a file")


def test_lsf_warns_before_the_walltime_and_gives_jsrun_every_cpu_and_gpu(tmp_path):
    script = script_for("lsf")
    assert "#BSUB -wa TERM\n#BSUB -wt 1\n" in script and "sleep " not in script
    path = tmp_path / "summit.yaml"
    path.write_text("scheduler: lsf\nruntime: apptainer\ngpu: nvidia\n"
                    "scheduler_options: {csm: true}\n")
    gpu_script = render_job_script(make_spec(str(path), image="/x.sif"), load_site(str(path)))
    assert "\njsrun -n 3 -r 1 -a 1 -c ALL_CPUS -g ALL_GPUS -b rs apptainer exec --no-home " \
           "--nv " in gpu_script


def test_site_directives_pass_through(tmp_path):
    script = script_for("polaris")
    assert "#PBS -A PROJ\n#PBS -l singularity_fakeroot=true\n" in script
    path = tmp_path / "mine.yaml"
    path.write_text("scheduler: slurm\nruntime: apptainer\ndirectives:\n"
                    "  - --reservation=ray\n  - '#SBATCH --comment=raw'\n")
    script = render_job_script(make_spec(str(path), image="/x.sif"), load_site(str(path)))
    assert "#SBATCH --exclusive\n#SBATCH --reservation=ray\n#SBATCH --comment=raw\n\n" in script


# -- the job script's own logic, run in bash with stand-ins for the launcher and runtime

def fake_bin(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def run_script(tmp_path: Path, script: str, launcher: str, runtime_name: str | None,
               launcher_body: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run a rendered job script with a fake launcher (and runtime) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake_bin(bin_dir, launcher, launcher_body)
    if runtime_name:
        fake_bin(bin_dir, runtime_name, "exit 0\n")
    job = tmp_path / "job.sh"
    job.write_text(script)
    (tmp_path / "runs/20260101-000000-abcd").mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    result = subprocess.run(["bash", str(job)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    return result, time.monotonic() - start


# The agents' stand-in: run until the stop file appears, then end as stopped agents do (143).
AGENTS_UNTIL_STOP = ('while [ ! -e "$RAYHPC_RUN_DIR/stop" ]; do sleep 0.1; done\n'
                     'echo 143 > "$RAYHPC_RUN_DIR/exit_code"\n')


@pytest.mark.parametrize("name, launcher, runtime_name", [
    ("pbs", "pbsdsh", "apptainer"), ("theta", "aprun", "singularity")])
def test_walltime_timer_stops_the_agents_before_the_walltime(tmp_path, name, launcher,
                                                              runtime_name):
    """PBS and Cobalt send no warning: the job script's timer writes the stop file stop_grace
    seconds before the walltime (here 3 s and 1 s: the stop comes after about 2 s)."""
    site = load_site(name)
    spec = make_spec(name, shared=str(tmp_path), image="/x.sif", account="P", walltime="0:03",
                     stop_grace=1, environ={})
    script = render_job_script(spec, site)
    assert "  sleep 2 & sleeper=$!\n" in script
    result, took = run_script(tmp_path, script, launcher, runtime_name, AGENTS_UNTIL_STOP)
    assert result.returncode == 143, result.stdout + result.stderr
    assert 1.5 < took < 10, took
    stop = tmp_path / "runs/20260101-000000-abcd/stop"
    assert stop.read_text() == "job script: walltime in 1 s\n"


def test_walltime_timer_ends_with_the_job(tmp_path):
    """A run that ends early takes its timer (and the timer's sleep) with it."""
    spec = make_spec("pbs", shared=str(tmp_path), image="/x.sif", walltime="17:17")
    script = render_job_script(spec, load_site("pbs"))
    assert "  sleep 977 & sleeper=$!\n" in script
    quick = 'echo 0 > "$RAYHPC_RUN_DIR/exit_code"\n'
    result, took = run_script(tmp_path, script, "pbsdsh", "apptainer", quick)
    assert result.returncode == 0 and took < 10, result.stderr
    time.sleep(0.3)
    sleepers = [p for p in Path("/proc").glob("[0-9]*/cmdline")
                if _cmdline(p) == ["sleep", "977"]]
    assert sleepers == []
    assert not (tmp_path / "runs/20260101-000000-abcd/stop").exists()


def _cmdline(path: Path) -> list[str]:
    try:
        return path.read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def test_a_missing_runtime_after_setup_fails_at_once_saying_why(tmp_path):
    """The site's setup runs unhidden, and a runtime still missing ends the job with one line
    in job.out and in the run directory's error, naming the site, command and modules."""
    site = load_site("polaris")
    spec = make_spec("polaris", shared=str(tmp_path), image="/x.sif", account="P")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "cat", "tee", "sleep"):  # no apptainer, no module
        os.symlink(shutil.which(tool), bin_dir / tool)
    fake_bin(bin_dir, "mpiexec", 'echo started > "$RAYHPC_RUN_DIR/launched"\n')
    job = tmp_path / "job.sh"
    job.write_text(render_job_script(spec, site))
    run_dir = tmp_path / "runs/20260101-000000-abcd"
    run_dir.mkdir(parents=True)
    result = subprocess.run([str(bin_dir / "bash"), str(job)], capture_output=True, text=True,
                            timeout=60, env={"PATH": str(bin_dir)})
    message = ("rayhpc: site polaris: apptainer is not on PATH after the site setup "
               "(modules: module use /soft/modulefiles; module load spack-pe-base; "
               "module load apptainer); fix `setup` in the site file")
    assert result.returncode == 1
    assert message in result.stderr.splitlines()
    assert "module: command not found" in result.stderr  # the setup's errors are not hidden
    assert (run_dir / "error").read_text() == message + "\n"
    assert (run_dir / "exit_code").read_text() == "1\n"
    assert not (run_dir / "launched").exists()


def test_slurm_cpu_count_from_the_allocation(tmp_path):
    """srun gets the CPUs of the allocation's smallest node (SLURM_JOB_CPUS_PER_NODE)."""
    spec = make_spec("slurm", shared=str(tmp_path), image="/x.sif")
    script = render_job_script(spec, load_site("slurm"))
    record = 'printf "%s\\n" "$@" > "$RAYHPC_RUN_DIR/srun.args"\necho 0 > ' \
             '"$RAYHPC_RUN_DIR/exit_code"\n'
    for cpus_per_node, cpus in (("72(x2),36", "36"), ("128(x4)", "128"), ("2", "2")):
        os.environ["SLURM_JOB_CPUS_PER_NODE"] = cpus_per_node
        try:
            result, _ = run_script(tmp_path, script, "srun", "apptainer", record)
        finally:
            del os.environ["SLURM_JOB_CPUS_PER_NODE"]
        assert result.returncode == 0, result.stderr
        args = (tmp_path / "runs/20260101-000000-abcd/srun.args").read_text().splitlines()
        assert f"--cpus-per-task={cpus}" in args and "--cpu-bind=none" in args


# -- submission, allocation, runtimes

@pytest.mark.parametrize("scheduler, output, job_id", [
    ("slurm", "4242\n", "4242"), ("slurm", "4242;cluster\n", "4242"),
    ("pbs", "1234.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov\n",
     "1234.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"),
    ("cobalt", "567890\n", "567890"),
    ("cobalt", 'Job routed to queue "debug-cache-quad".\nMemory mode set to cache quad for '
               'queue debug-cache-quad\n295130\n', "295130"),
    ("lsf", "Job <98765> is submitted to queue <batch>.\n", "98765"),
])
def test_job_ids_from_submit_output(scheduler, output, job_id):
    assert SCHEDULERS[scheduler].parse_job_id(output) == job_id


def test_lsf_takes_the_script_on_standard_input():
    assert SCHEDULERS["lsf"].submit_command("/r/job.sh") == (["bsub"], True)
    assert SCHEDULERS["slurm"].submit_command("/r/job.sh") == (
        ["sbatch", "--parsable", "/r/job.sh"], False)


@pytest.mark.parametrize("scheduler, output, active", [
    ("slurm", "RUNNING\n", True), ("slurm", "PENDING\n", True), ("slurm", "", False),
    ("slurm", "COMPLETED\n", False),
    ("pbs", "Job id  Name  User  Time Use S Queue\n------ ---- ---- -------- - -----\n"
            "1234.pbs rayhpc user 0 R debug\n", True),
    ("pbs", "Job id  Name  User  Time Use S Queue\n------ ---- ---- -------- - -----\n"
            "1234.pbs rayhpc user 0 F debug\n", False), ("pbs", "", False),
    ("cobalt", "JobID  State\n=====\n295130  running\n", True),
    ("cobalt", "JobID  State\n=====\n", False), ("lsf", "RUN\n", True),
    ("lsf", "PEND\n", True), ("lsf", "DONE\n", False), ("lsf", "EXIT\n", False),
    ("lsf", "", False)])
def test_whether_a_job_is_still_there(scheduler, output, active):
    """One job state for following (--wait), status and down: "" once it is over or gone."""
    assert bool(SCHEDULERS[scheduler].parse_state(output)) is active


@pytest.mark.parametrize("environ, scheduler, nodes", [
    ({"SLURM_JOB_ID": "1", "SLURM_JOB_NUM_NODES": "8"}, "slurm", 8),
    ({"COBALT_JOBID": "7", "COBALT_PARTSIZE": "128"}, "cobalt", 128),
    ({"COBALT_JOBID": "7", "COBALT_JOBSIZE": "16"}, "cobalt", 16),
    ({"LSB_JOBID": "3", "LSB_MCPU_HOSTS": "h1 42 h2 42 h3 42"}, "lsf", 3),
    ({}, None, None),
])
def test_allocation_and_node_count_detection(environ, scheduler, nodes):
    found = current_allocation(environ)
    assert (found.name if found else None) == scheduler
    if found:
        assert found.allocated_nodes(environ) == nodes


@pytest.mark.parametrize("environ, options, nodes", [
    # Plain LSF: every host of LSB_MCPU_HOSTS ("host slots ..."), the first (where the job
    # script runs, a node of the cluster too) included.
    ({"LSB_MCPU_HOSTS": "h1 4 h2 4 h3 4"}, {}, 3),
    ({"LSB_MCPU_HOSTS": "h1 1"}, {}, 1),
    ({"LSB_MCPU_HOSTS": "h1 1"}, {"csm": False}, 1),
    # No LSB_MCPU_HOSTS (or one that is not host/slots pairs): LSB_HOSTS, a host per slot.
    ({"LSB_HOSTS": "h1 h1 h1 h2 h2 h2"}, {}, 2),
    ({"LSB_MCPU_HOSTS": "h1 4 h2", "LSB_HOSTS": "h1 h2 h3"}, {}, 3),
    # With IBM CSM the first is the launch node: the compute hosts follow it.
    ({"LSB_MCPU_HOSTS": "batch1 1 h41n01 42 h41n02 42 h41n03 42"}, {"csm": True}, 3),
    ({"LSB_MCPU_HOSTS": "batch1 1 h41n01 42"}, {"csm": True}, 1),
    ({"LSB_MCPU_HOSTS": ""}, {}, None),
    ({}, {"csm": True}, None),
])
def test_lsf_node_count_inside_an_allocation(environ, options, nodes):
    assert SCHEDULERS["lsf"].allocated_nodes({"LSB_JOBID": "3", **environ}, options) == nodes


def test_a_launch_inside_an_lsf_job_takes_its_hosts(tmp_path):
    """`rayhpc launch` without --nodes inside a job: the job's hosts, by the site's csm."""
    environ = {"LSB_JOBID": "3", "LSB_MCPU_HOSTS": "batch1 1 h1 42 h2 42"}
    cli = {"shared": str(tmp_path), "image": "/x/ray.sif"}
    assert resolve_spec(load_site("lsf"), cli, environ).nodes == 3
    assert resolve_spec(load_site("lsf-csm"), cli, environ).nodes == 2
    # Another scheduler's site: LSF's count, without that site's options.
    assert resolve_spec(load_site("slurm"), cli, environ).nodes == 3


def test_pbs_node_count_from_the_nodefile(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("x3001c0s1b0n0\nx3001c0s1b1n0\nx3001c0s1b1n0\n")
    environ = {"PBS_JOBID": "1.polaris", "PBS_NODEFILE": str(nodefile)}
    assert current_allocation(environ).allocated_nodes(environ) == 2


def test_runtimes_command_lines():
    request = ExecRequest("img:1", ["python", "a.py"], binds=["/s"], workdir="/s",
                          env={"A": "1"}, pass_env=["SLURM_*", "B"])
    assert runtime("shifter").exec_command(request) == [
        "shifter", "--image=img:1", "--volume=/s:/s", "--workdir=/s", "--env=A=1", "--",
        "python", "a.py"]
    assert runtime("docker").exec_command(request) == [
        "docker", "run", "--rm", "--init", "--network", "host", "--ipc", "host",
        "--volume", "/s:/s", "--workdir", "/s", "--env", "A=1", "-e", "SLURM_*", "-e", "B",
        "img:1", "python", "a.py"]
    assert runtime("podman-hpc").exec_command(request) == [
        "podman-hpc", "run", "--rm", "--init", "--network", "host", "--ipc", "host",
        "--userns=keep-id", "--volume", "/s:/s", "--workdir", "/s", "--env", "A=1",
        "-e", "SLURM_*", "-e", "B", "img:1", "python", "a.py"]
    assert runtime("apptainer").exec_command(request) == [
        "apptainer", "exec", "--no-home", "--bind", "/s", "--pwd", "/s", "--env", "A=1",
        "img:1", "python", "a.py"]
    assert runtime("bare").exec_command(request) == ["env", "A=1", "python", "a.py"]


@pytest.mark.parametrize("name, image, problem", [
    ("apptainer", "rayhpc/ray:1", "apptainer runs a SIF file, not rayhpc/ray:1; give the SIF "
                                  "path (`rayhpc build --sif` or `rayhpc convert` makes one)"),
    ("podman-hpc", "/p/ray.sif", "podman-hpc runs an image name, not a file (/p/ray.sif)"),
    ("podman-hpc", "./ray", "podman-hpc runs an image name, not a file (./ray)"),
    ("shifter", "ray.sif", "shifter runs an image name, not a file (ray.sif); give the name "
                           "Shifter knows it by (`shifterimg pull NAME`)"),
    ("podman-hpc", "registry.nersc.gov/p/ray:1", ""), ("apptainer", "/p/ray.sif", ""),
])
def test_each_runtime_takes_its_own_image_kind(name, image, problem):
    found = runtime(name).image_problem(image, on_this_host=False)
    assert found.startswith(problem) and (problem or not found)


def test_user_site_file_with_wrong_values(tmp_path):
    path = tmp_path / "mine.yaml"
    cases = [
        ("scheduler: slurm\nruntime: docker\n",
         "runtime: 'docker' cannot run on scheduler 'slurm'; one of: apptainer, singularity, "
         "shifter, podman-hpc"),
        ("scheduler: slurm\nruntime: apptainer\ngpu: tpu\n",
         "gpu: 'tpu' is not one of: nvidia, amd, intel"),
        ("scheduler: slurm\nruntime: podman-hpc\ngpu: intel\n",
         "gpu: 'intel': runtime podman-hpc cannot pass intel GPUs into its containers (it "
         "passes: nvidia); use a runtime that can (apptainer passes nvidia, amd and intel)"),
        ("scheduler: slurm\nruntime: apptainer\nsetup: module load x\n", "setup: must be a list"),
        ("scheduler: slurm\nruntime: apptainer\nwalltime: soon\n",
         "walltime: 'soon': must be a walltime in one of Slurm's forms"),
        ("scheduler: slurm\nruntime: apptainer\nwalltime: 2:60:00\n",
         "walltime: '2:60:00': ambiguous: its minutes (60) must be below 60"),
        ("scheduler: slurm\nruntime: apptainer\nscheduler_options:\n  qoss: x\n",
         "scheduler_options: qoss: unknown key; did you mean 'qos'?"),
        ("scheduler: pbs\nruntime: apptainer\nscheduler_options:\n  qos: x\n",
         "scheduler_options: qos: unknown key; allowed: launcher, gpu_request, system, "
         "filesystems, filesystem_mounts"),
        ("scheduler: local\nruntime: docker\nscheduler_options:\n  qos: x\n",
         "scheduler_options: not used on a local site (it takes: environment, groups, platform); "
         "remove it"),
        ("scheduler: slurm\nruntime: apptainer\nscheduler_options:\n  gpus_per_node: 4\n",
         "scheduler_options: gpus_per_node: unknown key"),
        ("scheduler: slurm\nruntime: apptainer\nscheduler_options:\n  queue_option: part\n",
         "scheduler_options: queue_option: 'part' is not one of: partition, qos"),
        ("scheduler: pbs\nruntime: apptainer\nqueues:\n  debug: {max_nodez: 2}\n",
         "queues: debug: max_nodez: unknown key; did you mean 'max_nodes'?"),
        ("scheduler: pbs\nruntime: apptainer\nqueues:\n  debug: {max_walltime: 1:75}\n",
         "queues: debug: max_walltime: '1:75': ambiguous"),
        ("scheduler: pbs\nruntime: apptainer\nqueues: [debug]\n", "queues: must be a dict"),
        ("scheduler: pbs\nruntime: apptainer\ndocs: 3\n", "docs: must be a list"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(UserError) as err:
            backend_for(load_site(str(path)))  # at load, or where its backend is chosen
        assert str(err.value).startswith(f"{path}: {message}"), (text, str(err.value))


def test_dry_run_prints_the_script_and_creates_nothing(tmp_path, capsys):
    from rayhpc.launcher.orchestration import launch

    assert launch("polaris", {"shared": str(tmp_path), "image": "/x.sif", "nodes": "2",
                              "account": "P"}, dry_run=True) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!/bin/bash\n#PBS -N rayhpc-") and "-l select=2:system=polaris" \
        in script
    assert not (tmp_path / "runs").exists()


def test_inside_an_allocation_nodes_default_to_the_allocation():
    spec = make_spec("slurm", environ={"SLURM_JOB_ID": "9", "SLURM_JOB_NUM_NODES": "6"},
                     image="/x.sif")
    assert spec.nodes == 6
    assert make_spec("slurm", environ={}, image="/x.sif").nodes == 3
