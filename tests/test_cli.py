"""User mistakes on the command line: one line on stderr, exit 2, nothing lost."""

import pytest

from keras_team.app import cli
from keras_team.app.config import default_config_text


def _error_line(capsys):
    err = capsys.readouterr().err
    assert err.startswith("keras-team: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["run", "--set", "transfer.kep=3"], "transfer.kep"),
        (["run", "--set", "transfer.keep"], "--set"),
        (["run", "--set", "data.batch_size=0"], "data.batch_size=0"),
        (["run", "--config", "/nonexistent/run.yaml"], "/nonexistent/run.yaml"),
        (["evaluate", "/nonexistent/run"], "run_dir"),
    ],
)
def test_mistakes_print_one_line_and_exit_2(argv, phrase, capsys):
    assert cli.main(argv) == cli.USER_ERROR
    assert phrase in _error_line(capsys)


def test_init_writes_the_commented_default_and_never_overwrites(tmp_path, capsys):
    path = tmp_path / "my.yaml"
    assert cli.main(["init", str(path)]) == 0
    assert path.read_text() == default_config_text()
    path.write_text("seed: 7\n")
    assert cli.main(["init", str(path)]) == cli.USER_ERROR
    assert "--force" in _error_line(capsys)
    assert path.read_text() == "seed: 7\n"


def test_corrupt_leader_file_is_a_clear_error_and_keeps_the_run_directory(tmp_path, capsys):
    corrupt = tmp_path / "leader.keras"
    corrupt.write_bytes(b"not a zip file")
    out = tmp_path / "run"
    argv = ["run", "--output-dir", str(out), "--set", f"leader.path={corrupt}"]
    assert cli.main(argv) == cli.USER_ERROR
    assert "leader.path" in _error_line(capsys)
    assert (out / "config.yaml").is_file() and (out / "state.json").is_file()
    assert not list(out.glob("*.keras"))


def test_invalid_cut_fails_before_the_leader_trains(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", "--output-dir", str(out), "--set", "transfer.keep=2"]) == cli.USER_ERROR
    error = _error_line(capsys)
    assert "transfer.keep=2" in error and "1, 3, 6, 7" in error
    assert not (out / "leader.keras").exists()
