"""Command line: the pure parser and its translation into Settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bids_deface.cli.parser import build_parser, parse_args
from bids_deface.settings import DEFAULT_SUFFIXES, Settings


def test_build_parser_is_pure_and_documents_every_option() -> None:
    parser = build_parser()
    text = parser.format_help()
    for option in ("--participant-label", "--session-label", "--bids-filter-file", "--suffix",
                   "--device", "--runtime", "--nprocs", "--jobs", "--work-dir", "--skip-bids-validation",
                   "--overwrite", "--verbose", "--no-progress", "--version"):
        assert option in text
    # parsing does not touch the file system
    args = parser.parse_args(["/does/not/exist", "/nor/this", "participant"])
    assert args.analysis_level == "participant"


def test_defaults(bids_dataset: Path, tmp_path: Path) -> None:
    s = parse_args([str(bids_dataset), str(tmp_path / "out"), "participant"])
    assert isinstance(s, Settings)
    assert s.suffixes == DEFAULT_SUFFIXES
    assert {"T1w", "T2w", "FLAIR", "PDw", "T2starw", "PDT2", "inplaneT1", "inplaneT2",
            "angio"} == set(s.suffixes)
    assert s.device == "auto" and s.runtime == "auto" and s.jobs == 1 and s.progress and not s.overwrite and not s.skip_bids_validation
    assert s.bids_dir.is_absolute() and s.output_dir.is_absolute()


def test_labels_with_or_without_prefix(bids_dataset: Path, tmp_path: Path) -> None:
    s = parse_args([str(bids_dataset), str(tmp_path / "o"), "participant",
                    "--participant-label", "sub-01", "02", "01",
                    "--session-label", "ses-pre", "post",
                    "--suffix", "T2w", "FLAIR", "--device", "cpu", "--runtime", "onnxruntime", "--nprocs", "2", "-j", "3",
                    "-w", str(tmp_path / "w"), "-vv", "--no-progress", "--overwrite",
                    "--skip-bids-validation"])
    assert s.participant_label == ("01", "02")
    assert s.session_label == ("pre", "post")
    assert s.suffixes == ("T2w", "FLAIR")
    assert (s.device, s.runtime, s.nprocs, s.jobs, s.verbosity) == ("cpu", "onnxruntime", 2, 3, 2)
    assert s.work_dir == tmp_path / "w"
    assert not s.progress and s.overwrite and s.skip_bids_validation


@pytest.mark.parametrize("inside", [".", "sub-01", "code/out", "derivatives"])
def test_output_inside_input_is_refused(bids_dataset: Path, inside: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args([str(bids_dataset), str(bids_dataset / inside), "participant"])
    assert exc.value.code == 2
    assert "input dataset" in capsys.readouterr().err


def test_work_dir_inside_input_is_refused(bids_dataset: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args([str(bids_dataset), str(tmp_path / "out"), "participant",
                    "-w", str(bids_dataset / "code" / "work")])
    assert exc.value.code == 2
    assert "work folder" in capsys.readouterr().err
    # a work folder under derivatives/ is fine, like the output
    parse_args([str(bids_dataset), str(tmp_path / "out"), "participant",
                "-w", str(bids_dataset / "derivatives" / "work")])


def test_output_containing_input_is_refused(bids_dataset: Path) -> None:
    with pytest.raises(SystemExit):
        parse_args([str(bids_dataset), str(bids_dataset.parent), "participant"])


def test_output_under_derivatives_is_accepted(bids_dataset: Path) -> None:
    s = parse_args([str(bids_dataset), str(bids_dataset / "derivatives" / "bids-deface"), "group"])
    assert s.analysis_level == "group"


def test_missing_input_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args([str(tmp_path / "nope"), str(tmp_path / "out"), "participant"])
    assert exc.value.code == 2


def test_filter_file_is_read(bids_dataset: Path, tmp_path: Path) -> None:
    f = tmp_path / "filter.json"
    f.write_text(json.dumps({"acq": "mprage", "run": [1, 2], "ceagent": None}))
    s = parse_args([str(bids_dataset), str(tmp_path / "o"), "participant",
                    "--bids-filter-file", str(f)])
    assert s.bids_filters == {"acquisition": "mprage", "run": [1, 2], "ceagent": None}
    assert s.bids_filter_file == f


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"run": "x"}', '{"acq": {"a": 1}, "b": 2}'])
def test_bad_filter_file_is_a_usage_error(bids_dataset: Path, tmp_path: Path, content: str) -> None:
    f = tmp_path / "filter.json"
    f.write_text(content)
    with pytest.raises(SystemExit) as exc:
        parse_args([str(bids_dataset), str(tmp_path / "o"), "participant",
                    "--bids-filter-file", str(f)])
    assert exc.value.code == 2


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("bids-deface ")


def test_settings_round_trip_to_json(bids_dataset: Path, tmp_path: Path) -> None:
    s = parse_args([str(bids_dataset), str(tmp_path / "o"), "participant", "--participant-label", "01"])
    data = json.loads(s.to_json())
    assert data["participant_label"] == ["01"]
    assert data["bids_dir"] == str(bids_dataset)
    with pytest.raises(AttributeError):
        s.overwrite = True  # type: ignore[misc]


def test_usage_docs_hold_the_current_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/usage.md's option list is ``bids-deface --help`` as it is now (88 columns)."""
    monkeypatch.setenv("COLUMNS", "88")
    docs = (Path(__file__).resolve().parents[2] / "docs" / "usage.md").read_text()
    block = docs.split("## Full option list", 1)[1].split("```\n", 1)[1].split("```", 1)[0]
    assert block == build_parser().format_help()
