"""The Slurm scripts of docs/hpc.md (scripts/hpc/), on a real single-node Slurm.

The cluster test starts munge and Debian's slurmctld and slurmd (``ci/install-slurm.sh``)
with a configuration of its own in a temporary folder, submits the job array (one task per
participant, all into one output folder) and the dependent group job with
``scripts/hpc/submit.sh`` for a copy of the example dataset with a third participant, and
checks what the jobs did: every task ran on the node and ended, the group job started
after them, every participant's outputs and reports are there, ``group.tsv`` lists every
run as ``ok``, the output passes the BIDS validator and the input is unchanged.

Without Slurm it is skipped, except under ``CI=true``, where it fails. The other tests
check the scripts' command lines with stand-ins for ``apptainer`` and ``sbatch``.
"""

from __future__ import annotations

import csv
import getpass
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bids_deface.bids.validate import find_validator, run_validator

from .bidsapp.layouts import tree_digest

ROOT = Path(__file__).resolve().parents[1]
HPC = ROOT / "scripts" / "hpc"
ARRAY = HPC / "bids-deface-array.sbatch"
GROUP = HPC / "bids-deface-group.sbatch"
SUBMIT = HPC / "submit.sh"
EXAMPLE = ROOT / "examples" / "ds-synthetic"
SLURM_TOOLS = ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol",
               "scancel")
#: how long the array and the group job may take together (3 tasks, ~25 s each on 1 CPU)
JOB_TIMEOUT_S = 900


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without Slurm's own variables (pytest may itself run in a job)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "BIDS_DEFACE_")) and k != "CUDA_VISIBLE_DEVICES"}
    env.update(extra)
    return env


def _write_shim(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


def _anat_dataset(root: Path, subjects: dict[str, str]) -> Path:
    """Folders only: ``{"01": "anat", "02": "ses-01/anat", "03": "func"}``."""
    for label, sub in subjects.items():
        (root / f"sub-{label}" / sub).mkdir(parents=True)
    return root


# ----------------------------------------------------------- the scripts, without Slurm --

def test_list_is_the_sub_folders_with_anat_data_sorted(tmp_path: Path) -> None:
    bids = _anat_dataset(tmp_path / "bids", {"10": "anat", "02": "ses-01/anat", "01": "anat",
                                             "03": "func", "04": "ses-01/func"})
    (bids / "sub-05").write_text("not a folder")
    out = subprocess.run(["bash", str(ARRAY), "--list", str(bids)], capture_output=True,
                         text=True, check=True, env=_clean_env()).stdout
    assert out.split() == ["01", "02", "10"]


def test_array_task_runs_the_image_for_its_participant(tmp_path: Path) -> None:
    bids = _anat_dataset(tmp_path / "bids", {"01": "anat", "02": "ses-01/anat", "03": "anat"})
    out = tmp_path / "out"
    record = tmp_path / "argv"
    shim = _write_shim(tmp_path / "apptainer", f'printf "%s\\n" "$@" > {record}\nexit 7\n')
    env = _clean_env(SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_JOB_ID="42", SLURM_CPUS_PER_TASK="3",
                     BIDS_DEFACE_SIF="/images/bids-deface.sif",
                     # as "module load apptainer" would: the runtime is found on PATH
                     BIDS_DEFACE_SETUP=f'PATH="{shim.parent}:$PATH"', BIDS_DEFACE_SKIP_VALIDATION="1",
                     BIDS_DEFACE_BIND="/annex")
    proc = subprocess.run(["bash", str(ARRAY), str(bids), str(out), "--suffix", "T1w"],
                          capture_output=True, text=True, env=env)
    # exit 7 (finished, a QC verdict is not pass) is passed on, with a note
    assert proc.returncode == 7, proc.stderr
    assert "sub-02: done, but the QC verdict" in proc.stdout
    assert record.read_text().splitlines() == [
        "run", "--cleanenv", "-B", f"{bids}:{bids}:ro", "-B", f"{out}:{out}", "-B", "/annex",
        "/images/bids-deface.sif", str(bids), str(out),
        "participant", "--participant-label", "02", "--nprocs", "3", "--no-progress",
        "--skip-bids-validation", "--suffix", "T1w"]
    assert out.is_dir()  # made before binding

    # a task beyond the list fails with a message, and runs nothing
    record.unlink()
    proc = subprocess.run(["bash", str(ARRAY), str(bids), str(out)], capture_output=True,
                          text=True, env={**env, "SLURM_ARRAY_TASK_ID": "3"})
    assert proc.returncode == 2 and "only 3 participants" in proc.stderr
    assert not record.exists()


def test_group_job_fails_when_a_run_is_not_complete(tmp_path: Path) -> None:
    bids = _anat_dataset(tmp_path / "bids", {"01": "anat"})
    out = tmp_path / "out"
    tsv = "subject\tsession\tname\tsuffix\tstatus\tqc_verdict\n"
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    _write_shim(tmp_path / "venv" / "bin" / "bids-deface",
                '[ "$3" = group ] || exit 9\nprintf "%s" "$ROWS" > "$2/group.tsv"\n')
    env = _clean_env(BIDS_DEFACE_VENV=str(tmp_path / "venv"))
    ok = tsv + "01\tn/a\tsub-01_T1w.nii.gz\tT1w\tok\tbrain-removed\n"
    proc = subprocess.run(["bash", str(GROUP), str(bids), str(out)], capture_output=True, text=True,
                          env={**env, "ROWS": ok})
    assert proc.returncode == 0, proc.stderr
    assert "1 run(s): 1 ok" in proc.stdout and "1 image(s) with a QC verdict other than pass" in proc.stdout
    bad = ok + "01\tn/a\tsub-01_T2w.nii.gz\tT2w\tmissing\tn/a\n"
    proc = subprocess.run(["bash", str(GROUP), str(bids), str(out)], capture_output=True, text=True,
                          env={**env, "ROWS": bad})
    assert proc.returncode == 1
    assert "not ok: 01 sub-01_T2w.nii.gz: missing" in proc.stdout and "resubmit" in proc.stderr


def test_submit_makes_one_task_per_participant_and_a_dependent_group_job(tmp_path: Path) -> None:
    bids = _anat_dataset(tmp_path / "bids", {"01": "anat", "02": "ses-01/anat", "03": "anat"})
    out = tmp_path / "out"
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # a stand-in sbatch: one line per call (its arguments and the list file it was given)
    _write_shim(bin_dir / "sbatch", f'n=$(( $(cat {calls} 2>/dev/null | wc -l) + 101 ))\n'
                f'echo "$n|${{BIDS_DEFACE_PARTICIPANTS_FILE:-}}|$*" >> {calls}\necho "$n;cluster"\n')
    env = _clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", BIDS_DEFACE_MAX_TASKS="2",
                     BIDS_DEFACE_SBATCH_ARGS="--partition=short --account=lab",
                     BIDS_DEFACE_ARRAY_SBATCH_ARGS="--mem=2G")
    proc = subprocess.run(["bash", str(SUBMIT), str(bids), str(out), "--suffix", "T1w"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["101", "102"]
    (a_id, a_list, a_args), (g_id, g_list, g_args) = (c.split("|") for c in calls.read_text().splitlines())
    logs = out / "logs" / "slurm"
    assert Path(a_list).parent == logs and Path(a_list).read_text().split() == ["01", "02", "03"]
    assert a_args.split() == ["--parsable", "--array=0-2%2", f"--output={logs}/%x_%A_%a.out",
                              "--export=ALL", "--partition=short", "--account=lab", "--mem=2G",
                              str(ARRAY), str(bids), str(out), "--suffix", "T1w"]
    assert g_list == ""
    assert g_args.split() == ["--parsable", "--dependency=afterany:101", f"--output={logs}/%x_%j.out",
                              "--export=ALL", "--partition=short", "--account=lab",
                              str(GROUP), str(bids), str(out), "--suffix", "T1w"]
    # the participants are chosen per task, not on the command line
    proc = subprocess.run(["bash", str(SUBMIT), str(bids), str(out), "--participant-label", "01"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "BIDS_DEFACE_PARTICIPANTS_FILE" in proc.stderr


# ------------------------------------------------------------ a single-node Slurm --

@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    jobcomp: Path
    node: str

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), capture_output=True, text=True, env=self.env, check=check,
                              timeout=60)

    def logs(self) -> str:
        """The tail of every daemon log, for failure messages."""
        parts = []
        for log in sorted(self.root.rglob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-25:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait(what: str, ok, timeout: float, cluster: Cluster | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ok():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} (after {timeout:.0f} s)\n{cluster.logs() if cluster else ''}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """munged, slurmctld and slurmd of this machine, with a configuration in a temporary
    folder: one node (this machine's CPUs and memory), no cgroups (``proctrack/linuxproc``,
    ``task/none``), job completions logged to a text file."""
    missing = [t for t in SLURM_TOOLS if shutil.which(t) is None]
    if missing:
        message = f"Slurm/munge not installed ({', '.join(missing)} missing): run ci/install-slurm.sh"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " (CI=true: the Slurm test must run in CI)")
        pytest.skip(message)

    root = tmp_path_factory.mktemp("slurm")
    user = getpass.getuser()
    procs: list[subprocess.Popen] = []
    outputs = []  # the daemons' stdout and stderr

    def start(argv: list[str], log: Path) -> None:
        outputs.append(log.open("w"))
        procs.append(subprocess.Popen(argv, env=env, stdout=outputs[-1], stderr=subprocess.STDOUT))
    # munged wants its socket folder (and every folder above) reachable by all users, and
    # its key readable by its owner only; pytest's tmp folders are 0700: a folder of its own
    sock_dir = Path(tempfile.mkdtemp(prefix="bids-deface-munge-",
                                     dir="/tmp" if os.path.isdir("/tmp") else None))
    sock_dir.chmod(0o755)
    sock = sock_dir / "munge.socket"
    mdir = root / "munge"
    mdir.mkdir(mode=0o700)
    key = mdir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    env = _clean_env(SLURM_CONF=str(root / "slurm.conf"))
    cluster = Cluster(root, env, root / "jobcomp.txt", "node1")
    try:
        start(["munged", "--foreground", f"--socket={sock}", f"--key-file={key}",
               f"--pid-file={mdir / 'munged.pid'}", f"--log-file={mdir / 'munged.log'}",
               f"--seed-file={mdir / 'munged.seed'}"], mdir / "munged.out.log")
        _wait("munged did not create its socket", sock.exists, 20, cluster)
        cred = subprocess.run(["munge", "-n", f"--socket={sock}"], capture_output=True, check=True)
        subprocess.run(["unmunge", f"--socket={sock}"], input=cred.stdout, capture_output=True,
                       check=True)

        # this machine as slurmd sees it (CPUs, sockets, cores, threads, memory)
        hw = dict(re.findall(r"(\w+)=(\S+)", subprocess.run(
            ["slurmd", "-C"], capture_output=True, text=True, env=env, check=True).stdout))
        topology = " ".join(f"{k}={hw[k]}" for k in ("CPUs", "Boards", "SocketsPerBoard",
                                                      "CoresPerSocket", "ThreadsPerCore") if k in hw)
        memory = int(int(hw.get("RealMemory", "2048")) * 0.9)
        ctld_port, d_port = _free_ports(2)
        host = socket.gethostname().split(".")[0]
        for d in ("state", "spool"):
            (root / d).mkdir()
        (root / "slurm.conf").write_text(f"""\
ClusterName=bidsdeface
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={cluster.jobcomp}
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
MinJobAge=600
NodeName={cluster.node} NodeAddr=127.0.0.1 NodeHostname={host} {topology} RealMemory={memory} State=UNKNOWN
PartitionName=batch Nodes={cluster.node} Default=YES MaxTime=INFINITE State=UP
""")
        start(["slurmctld", "-D", "-f", env["SLURM_CONF"]], root / "slurmctld.out.log")
        _wait("slurmctld does not answer", lambda: cluster.run("scontrol", "ping", check=False)
              .stdout.count("UP") >= 1, 30, cluster)
        start(["slurmd", "-D", "-N", cluster.node, "-f", env["SLURM_CONF"]], root / "slurmd.out.log")

        def idle() -> bool:
            state = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip()
            if any(s in state for s in ("drain", "down", "fail")) and "*" not in state:
                pytest.fail(f"the node is {state}: "
                            f"{cluster.run('scontrol', 'show', 'node', check=False).stdout}\n{cluster.logs()}")
            return state == "idle"

        _wait("the node did not become idle", idle, 60, cluster)
        yield cluster
    finally:
        if len(procs) > 1:  # slurmctld was started: cancel what is left of the jobs
            try:
                subprocess.run(["scancel", f"--user={user}"], env=env, capture_output=True, timeout=30)
                time.sleep(2)
            except subprocess.TimeoutExpired:
                pass
        for proc in reversed(procs):
            _stop(proc)
        for f in outputs:
            f.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


def _jobcomp(path: Path) -> list[dict[str, str]]:
    """The records of jobcomp/filetxt: one line per job (array task) that ended."""
    if not path.exists():
        return []
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in path.read_text().splitlines() if line]


def _copy_subject(bids: Path, old: str, new: str) -> None:
    """sub-<new>: sub-<old>'s files under the new label (participants.tsv gets a row)."""
    for src in sorted((bids / f"sub-{old}").rglob("*")):
        dst = bids / str(src.relative_to(bids)).replace(f"sub-{old}", f"sub-{new}")
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    with (bids / "participants.tsv").open("a") as f:
        f.write(f"sub-{new}\tn/a\n")


@dataclass
class Submission:
    array_id: str
    group_id: str
    tasks: dict[str, dict[str, str]]  # jobcomp record by array task id
    group: dict[str, str]
    seconds: float
    logs: Path

    def task_log(self, task: int) -> str:
        path = self.logs / f"bids-deface_{self.array_id}_{task}.out"
        return path.read_text() if path.exists() else f"({path} missing)"

    def group_log(self) -> str:
        path = self.logs / f"bids-deface-group_{self.group_id}.out"
        return path.read_text() if path.exists() else f"({path} missing)"


def _submit_and_wait(slurm: Cluster, bids: Path, out: Path, env: dict[str, str], n_tasks: int,
                     *options: str) -> Submission:
    """scripts/hpc/submit.sh, then wait until both jobs have left the queue; checks that
    every task and the group job ran on the node and ended, the group job after the tasks."""
    start = time.monotonic()
    proc = subprocess.run(["bash", str(SUBMIT), str(bids), str(out), *options], capture_output=True,
                          text=True, env=env, cwd=out.parent, timeout=60)
    assert proc.returncode == 0, proc.stderr + slurm.logs()
    array_id, group_id = proc.stdout.split()

    def ended() -> bool:
        return slurm.run("squeue", "-h", "-j", f"{array_id},{group_id}", "-o", "%i",
                         check=False).stdout.strip() == ""

    _wait("the jobs did not end", ended, JOB_TIMEOUT_S, slurm)
    records = _jobcomp(slurm.jobcomp)
    tasks = {r["ArrayTaskId"]: r for r in records if r.get("ArrayJobId") == array_id}
    group = [r for r in records if r.get("JobId") == group_id]
    sub = Submission(array_id, group_id, tasks, group[0] if group else {},
                     time.monotonic() - start, out / "logs" / "slurm")
    detail = ("\n".join(f"task {i}:\n{sub.task_log(i)}" for i in range(n_tasks))
              + f"\ngroup:\n{sub.group_log()}\n{slurm.logs()}")
    assert sorted(tasks, key=int) == [str(i) for i in range(n_tasks)], detail
    for i, task in tasks.items():
        assert task["NodeList"] == slurm.node
        # 0, or 7 (every run finished but a QC verdict is not pass): both a finished task
        assert task["ExitCode"] in ("0:0", "7:0"), f"task {i}: {task}\n{detail}"
    assert len(group) == 1 and sub.group["JobState"] == "COMPLETED", detail
    assert sub.group["ExitCode"] == "0:0"
    # the dependency: the group job started once every task had ended
    assert sub.group["StartTime"] >= max(t["EndTime"] for t in tasks.values())
    return sub


@pytest.mark.slurm
@pytest.mark.slow
def test_job_array_and_group_job_on_slurm(slurm: Cluster, tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    shutil.copytree(EXAMPLE, bids)
    _copy_subject(bids, "01", "03")  # the example has two participants: a third task
    labels = subprocess.run(["bash", str(ARRAY), "--list", str(bids)], capture_output=True,
                            text=True, check=True).stdout.split()
    assert labels == ["01", "02", "03"]
    runs_in = sorted(p.relative_to(bids).as_posix() for p in bids.rglob("sub-*/**/anat/*.nii.gz"))
    assert len(runs_in) == 6
    before = tree_digest(bids)
    out = tmp_path / "out"

    venv = Path(sys.prefix)
    assert (venv / "bin" / "bids-deface").exists(), "bids-deface is not installed in this environment"
    env = {**slurm.env, "BIDS_DEFACE_VENV": str(venv),
           "BIDS_DEFACE_ARRAY_SBATCH_ARGS": "--cpus-per-task=1 --mem=1500M --time=00:20:00",
           "BIDS_DEFACE_GROUP_SBATCH_ARGS": "--mem=1G --time=00:10:00"}
    if find_validator() is None:
        env["BIDS_DEFACE_SKIP_VALIDATION"] = "1"

    first = _submit_and_wait(slurm, bids, out, env, 3, "--device", "cpu")
    for i, label in enumerate(labels):
        assert f"participant sub-{label} on " in first.task_log(i)
        assert "2 run(s): 2 defaced, 0 already complete, 0 failed" in first.task_log(i)
    assert "6 run(s): 6 ok" in first.group_log()
    # one invocation per task, all into one output folder
    assert len(list((out / "logs").glob("bids-deface_participant_*.log"))) == 3
    for label in labels:
        assert (out / f"sub-{label}.html").is_file()
    defaced = sorted(out.rglob("sub-*/**/anat/*_desc-defaced_*.nii.gz"))
    assert len(defaced) == 6
    for image in defaced:
        assert image.with_name(image.name.replace(".nii.gz", ".json")).is_file()
    rows = list(csv.DictReader((out / "group.tsv").open(), delimiter="\t"))
    assert sorted(r["source"] for r in rows) == runs_in
    assert {r["status"] for r in rows} == {"ok"} and {r["subject"] for r in rows} == set(labels)
    assert (out / "group.html").is_file()
    if find_validator() is not None:
        assert run_validator(out).errors == []
    assert tree_digest(bids) == before

    # a task killed at its wall time leaves a run without its sidecar (the sidecar is
    # written last): resubmitting everything redoes that run and skips the complete ones
    killed = out / "sub-02" / "ses-01" / "anat" / "sub-02_ses-01_desc-defaced_T1w.json"
    killed.unlink()
    second = _submit_and_wait(slurm, bids, out, env, 3, "--device", "cpu")
    for i in (0, 2):
        assert "2 run(s): 0 defaced, 2 already complete, 0 failed" in second.task_log(i)
    assert "2 run(s): 1 defaced, 1 already complete, 0 failed" in second.task_log(1)
    assert killed.is_file() and "6 run(s): 6 ok" in second.group_log()
    if find_validator() is not None:
        assert run_validator(out).errors == []
    assert tree_digest(bids) == before
    print(f"Slurm: 3 tasks + group job {first.seconds:.0f} s; resubmission {second.seconds:.0f} s")
