"""The container recipes (Dockerfile, Singularity.def) agree with pyproject.toml and the pins.

Nothing here builds an image: the files are parsed as Docker and Singularity read them, and
what they install and run is compared with what the package declares — the entry point, the
Python version, the torch pin, the BIDS validator's version, the version and licence labels,
and CITATION.cff's version. hadolint (ci/install-hadolint.sh) lints the Dockerfile; under
CI=true a missing hadolint fails instead of skipping.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
SINGULARITY = REPO / "Singularity.def"

# ------------------------------------------------------------------------------ parsing --


@dataclass
class Stage:
    """One FROM stage of a Dockerfile: its base, ARG defaults, RUN lines and settings."""

    base: str
    name: str | None
    args: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None

    def expand(self, text: str) -> str:
        """``${VAR}`` and ``$VAR`` replaced by the stage's ARG defaults (others left as they are)."""

        def sub(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            return self.args.get(name, m.group(0))

        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, text)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and buf):
            continue  # comment lines, and blank lines inside a continued instruction
        if not line:
            continue
        if line.endswith("\\"):
            buf.append(line[:-1].strip())
            continue
        buf.append(line)
        joined = " ".join(buf)
        buf = []
        keyword, _, rest = joined.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not buf, "the Dockerfile ends inside a continued instruction"
    return out


def _dockerfile() -> list[Stage]:
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for keyword, rest in _instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
            continue
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            (stages[-1].args if stages else global_args)[name.strip()] = default.strip().strip('"')
            continue
        assert stages, f"{keyword} before the first FROM"
        stage = stages[-1]
        if keyword == "RUN":
            stage.runs.append(rest)
        elif keyword == "LABEL":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                stage.labels[key] = stage.expand(value)
        elif keyword == "ENTRYPOINT":
            stage.entrypoint = json.loads(rest)  # exec form: a JSON array, as BIDS Apps need
    assert stages, "no FROM in the Dockerfile"
    return stages


def _singularity() -> tuple[dict[str, str], dict[str, list[str]]]:
    """The header (``Bootstrap:``, ``From:``) and the %sections of Singularity.def."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for raw in SINGULARITY.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("%"):
            current = line[1:].split()[0]
            sections[current] = []
        elif current is None:
            if line and not line.startswith("#"):
                key, _, value = line.partition(":")
                header[key.strip()] = value.strip()
        elif line and not line.startswith("#"):
            sections[current].append(line)
    return header, sections


def _pins(text: str) -> dict[str, set[str]]:
    """Every ``name==version`` in the text, by normalised name."""
    pins: dict[str, set[str]] = {}
    pattern = r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9_.-]*)==([0-9][A-Za-z0-9_.+!-]*)"
    for name, version in re.findall(pattern, text):
        pins.setdefault(canonicalize_name(name), set()).add(version)
    return pins


def _docker_pins(stages: list[Stage]) -> dict[str, set[str]]:
    pins: dict[str, set[str]] = {}
    for stage in stages:
        for run in stage.runs:
            for name, versions in _pins(stage.expand(run)).items():
                pins.setdefault(name, set()).update(versions)
    return pins


def _python_minor(image: str) -> str | None:
    """'3.11' for python:3.11-slim (or docker.io/library/python:3.11…), else None."""
    m = re.fullmatch(r"(?:docker\.io/)?(?:library/)?python:(\d+\.\d+)(?:[.-][\w.-]*)?", image)
    return m.group(1) if m else None


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return _dockerfile()


@pytest.fixture(scope="module")
def singularity() -> tuple[dict[str, str], dict[str, list[str]]]:
    return _singularity()


@pytest.fixture(scope="module")
def constraints() -> dict[str, set[str]]:
    return _pins((REPO / "constraints.txt").read_text(encoding="utf-8"))


def _requirements(project: dict, name: str) -> list[Requirement]:
    """Every requirement on ``name`` in pyproject: dependencies and all extras."""
    reqs = [Requirement(r) for r in project.get("dependencies", [])]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return [r for r in reqs if canonicalize_name(r.name) == canonicalize_name(name)]


# -------------------------------------------------------------------------- entry point --


def test_the_dockerfile_is_parsed(stages: list[Stage]) -> None:
    assert [s.name for s in stages] == ["build", "runtime"]
    assert stages[-1].runs and stages[-1].args


def test_container_entry_point_is_a_console_script(pyproject: dict, stages: list[Stage],
                                                  singularity: tuple[dict, dict]) -> None:
    scripts: dict[str, str] = pyproject["scripts"]
    entrypoint = stages[-1].entrypoint
    assert entrypoint, "the runtime stage has no ENTRYPOINT"
    assert entrypoint[0] in scripts, (
        f"ENTRYPOINT {entrypoint} runs {entrypoint[0]!r}, which pyproject's [project.scripts] "
        f"does not define ({sorted(scripts)})")

    # the console script's target exists: module file and a top-level function of that name
    module, _, func = scripts[entrypoint[0]].partition(":")
    path = REPO / Path(*module.split(".")).with_suffix(".py")
    assert path.is_file(), f"{scripts[entrypoint[0]]}: no {path.relative_to(REPO)}"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in tree.body), \
        f"{path.relative_to(REPO)} defines no top-level {func}()"

    # Singularity/Apptainer: `singularity run` must run the same program with the arguments
    _, sections = singularity
    runscript = sections.get("runscript", [])
    execs = [shlex.split(line) for line in runscript if line.split()[0] == "exec"]
    assert len(execs) == 1, f"%runscript should exec one program: {runscript}"
    assert execs[0][1:] == [*entrypoint, "$@"], (
        f"%runscript runs {execs[0][1:]}, the Docker image runs {entrypoint} + arguments")


def test_singularity_is_built_from_the_image_ci_publishes(singularity: tuple[dict, dict]) -> None:
    header, _ = singularity
    assert header.get("Bootstrap") == "docker", header
    image = yaml.safe_load((REPO / ".circleci" / "config.yml").read_text(encoding="utf-8"))[
        "parameters"]["image"]["default"]
    repo, _, tag = header["From"].partition(":")
    assert repo == image, f"Singularity.def bootstraps from {repo}, CI builds and pushes {image}"
    assert tag in ("", "latest"), f"Singularity.def pins tag {tag!r}; CI pushes :latest and :VERSION"


_DOCKER_STAND_IN = """#!/usr/bin/env bash
# stand-in for the Docker CLI (no engine here): records each call; the participant level
# exits with $PARTICIPANT_CODE; `docker cp data:/out/...` brings back a group.tsv of ok runs
echo "$*" >> "$CALLS"
case " $* " in *" participant "*) exit "${PARTICIPANT_CODE:-0}" ;; esac
if [ "$1" = cp ] && [[ "$2" == data:* ]]; then
    mkdir -p "$3/bids-deface" && printf 'status\\tname\\nok\\ta\\n' > "$3/bids-deface/group.tsv"
fi
"""


@pytest.mark.parametrize("code, expected", [(0, 0), (7, 0), (1, 1)])
def test_ci_container_run_goes_on_after_qc_verdicts_that_are_not_pass(tmp_path: Path, code: int,
                                                                      expected: int) -> None:
    """CI's container step runs the group level and the validator when the participant
    level exits 7 (every run finished, a QC verdict is not pass: the example's are
    ``review``), and stops on any other failure; run under CircleCI's shell
    (``bash -eo pipefail``) with a stand-in for the Docker CLI."""
    config = yaml.safe_load((REPO / ".circleci" / "config.yml").read_text(encoding="utf-8"))
    steps = [s["run"] for job in config["jobs"].values() for s in job.get("steps", [])
             if isinstance(s, dict) and isinstance(s.get("run"), dict)]
    (step,) = [s for s in steps if "participant" in s.get("command", "") and "docker run" in s["command"]]
    image = config["parameters"]["image"]["default"]
    command = step["command"].replace("<< pipeline.parameters.image >>", image)
    command = command.replace("/tmp/outputs", str(tmp_path / "outputs"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(_DOCKER_STAND_IN)
    (bin_dir / "docker").chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", CALLS=str(calls),
               PARTICIPANT_CODE=str(code))
    done = subprocess.run(["bash", "-eo", "pipefail", "-c", command], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == expected, done.stdout + done.stderr
    ran = calls.read_text().splitlines()
    assert any(" participant " in f" {c} " for c in ran)
    assert any(" group " in f" {c} " for c in ran) == (expected == 0)
    if expected == 0:
        assert "every run ok" in done.stdout


# ------------------------------------------------------------------------------- Python --


def test_container_python_satisfies_requires_python(pyproject: dict, stages: list[Stage]) -> None:
    minors = {s.name: _python_minor(s.base) for s in stages}
    assert all(minors.values()), f"every stage should start from an official python image: {minors}"
    assert len(set(minors.values())) == 1, f"the stages use different Pythons: {minors}"
    minor = next(iter(minors.values()))
    spec = SpecifierSet(pyproject["requires-python"])
    assert spec.contains(Version(minor)), f"the image's Python {minor} is outside requires-python {spec}"

    # the image's own description of its base is that base
    runtime = stages[-1]
    base = runtime.base if "/" in runtime.base else f"docker.io/library/{runtime.base}"
    assert runtime.labels.get("org.opencontainers.image.base.name") == base


def test_ci_tests_on_the_python_the_image_ships(stages: list[Stage]) -> None:
    config = yaml.safe_load((REPO / ".circleci" / "config.yml").read_text(encoding="utf-8"))
    image = config["jobs"]["test"]["docker"][0]["image"]
    m = re.fullmatch(r"cimg/python:(\d+\.\d+)(?:[.-][\w.-]*)?", image)
    assert m, f"the test job's image {image} is not a cimg/python image"
    assert m.group(1) == _python_minor(stages[-1].base), \
        f"CI tests on Python {m.group(1)}, the image ships {stages[-1].base}"


# -------------------------------------------------------------------------------- torch --


def test_container_installs_the_pinned_torch(pyproject: dict, stages: list[Stage],
                                            singularity: tuple[dict, dict],
                                            constraints: dict[str, set[str]]) -> None:
    assert len(constraints.get("torch", ())) == 1, "constraints.txt should pin torch once"
    (pin,) = constraints["torch"]
    docker = _docker_pins(stages)
    assert docker.get("torch") == {pin}, \
        f"the Dockerfile installs torch {docker.get('torch')}, constraints.txt pins {pin}"
    for req in _requirements(pyproject, "torch"):
        assert req.specifier.contains(pin), f"pyproject requires {req}, which excludes the pin {pin}"
    _, sections = singularity
    sing = _pins("\n".join(sum(sections.values(), [])))
    assert sing.get("torch", {pin}) == {pin}, f"Singularity.def installs torch {sing['torch']}"


def test_container_torchvision_is_the_companion_of_the_torch_pin(stages: list[Stage],
                                                                 constraints: dict[str, set[str]]) -> None:
    """torchvision has to be the build made for the pinned torch (it requires torch==X exactly)."""
    (pin,) = constraints["torch"]
    docker = _docker_pins(stages).get("torchvision")
    assert docker and len(docker) == 1, f"the Dockerfile should pin one torchvision: {docker}"
    (vision,) = docker
    try:
        installed_vision = importlib.metadata.version("torchvision").split("+")[0]
        installed_torch = importlib.metadata.version("torch").split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("torch/torchvision are not installed here: nothing to compare the pin with")
    if installed_vision == vision:
        wants = [Requirement(r) for r in importlib.metadata.requires("torchvision") or []
                 if Requirement(r).name == "torch" and Requirement(r).marker is None]
        assert all(w.specifier.contains(pin) for w in wants), \
            f"torchvision {vision} requires {[str(w) for w in wants]}, not the pinned torch {pin}"
    elif installed_torch == pin:
        pytest.fail(f"with the pinned torch {pin}, pip resolved torchvision {installed_vision} here; "
                    f"the Dockerfile installs torchvision {vision}")
    else:
        pytest.skip(f"torch {installed_torch} is installed here, not the pin {pin}")


# --------------------------------------------------------------------- BIDS validator --


def test_one_bids_validator_version_everywhere(pyproject: dict, stages: list[Stage],
                                              singularity: tuple[dict, dict]) -> None:
    name = "bids-validator-deno"
    script = _pins((REPO / "ci" / "install-bids-validator.sh").read_text(encoding="utf-8")).get(name)
    assert script and len(script) == 1, f"ci/install-bids-validator.sh should pin one {name}: {script}"
    (pin,) = script
    docker = _docker_pins(stages).get(name)
    assert docker == {pin}, f"the Dockerfile installs {name} {docker}, ci/install-bids-validator.sh {pin}"
    reqs = _requirements(pyproject, name)
    assert reqs, f"pyproject names no {name}"
    for req in reqs:
        assert req.specifier.contains(pin), f"pyproject requires {req}, which excludes {pin}"
    _, sections = singularity
    sing = _pins("\n".join(sum(sections.values(), [])))
    assert sing.get(name, {pin}) == {pin}, f"Singularity.def installs {name} {sing[name]}"


# ------------------------------------------------------------- version, licence, citation --


def test_labels_carry_the_package_version_and_licence(pyproject: dict, stages: list[Stage],
                                                      singularity: tuple[dict, dict]) -> None:
    labels = stages[-1].labels
    assert labels["org.opencontainers.image.version"] == pyproject["version"]
    assert labels["org.opencontainers.image.licenses"] == pyproject["license"]
    assert labels["org.opencontainers.image.title"] == pyproject["name"]
    _, sections = singularity
    sing = dict(line.split(None, 1) for line in sections["labels"])
    assert sing["org.opencontainers.image.licenses"] == pyproject["license"]
    assert sing["org.opencontainers.image.title"] == pyproject["name"]


def test_citation_matches_pyproject(pyproject: dict) -> None:
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert (cff["title"], str(cff["version"]), cff["license"]) == (
        pyproject["name"], pyproject["version"], pyproject["license"])
    refs = cff["references"]
    assert refs and all(r.get("doi") for r in refs), "every reference carries its DOI"
    assert len({r["doi"].lower() for r in refs}) == len(refs)


# ----------------------------------------------------------------------------- hadolint --


def _hadolint() -> str | None:
    path = os.pathsep.join([str(Path(sys.executable).parent), str(REPO / ".venv" / "bin"),
                            os.environ.get("PATH", "")])
    return shutil.which("hadolint", path=path)


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    exe = _hadolint()
    if exe is None:
        message = "hadolint is not installed (run ci/install-hadolint.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + ": CI must lint the Dockerfile")
        pytest.skip(message)
    proc = subprocess.run([exe, "--config", ".hadolint.yaml", "--format", "json", "--no-color", "Dockerfile"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip(), f"hadolint printed nothing (exit {proc.returncode}): {proc.stderr}"
    findings = json.loads(proc.stdout)
    shown = "\n".join(f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
    errors = [f for f in findings if f["level"] == "error"]
    assert not errors, f"hadolint errors:\n{shown}"
    # .hadolint.yaml fails on every finding it does not ignore (with its reason)
    assert not findings and proc.returncode == 0, f"hadolint findings not ignored in .hadolint.yaml:\n{shown}"
