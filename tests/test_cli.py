"""User mistakes on the command line: one line on stderr, exit 2, nothing lost."""

import sys

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


def test_corrupt_leader_file_says_what_is_wrong_and_leaves_nothing(tmp_path, capsys):
    corrupt = tmp_path / "leader.keras"
    corrupt.write_bytes(b"not a zip file")
    out = tmp_path / "run"
    argv = ["run", "--output-dir", str(out), "--set", f"leader.path={corrupt}"]
    assert cli.main(argv) == cli.USER_ERROR
    error = _error_line(capsys)
    assert "leader.path" in error and "not a .keras archive" in error and "File not found" not in error
    assert not out.exists()


def test_invalid_cut_fails_before_the_leader_trains(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", "--output-dir", str(out), "--set", "transfer.keep=2"]) == cli.USER_ERROR
    error = _error_line(capsys)
    assert "transfer.keep=2" in error and "1, 3, 6, 7" in error
    assert not out.exists()


@pytest.mark.parametrize(
    "setting, phrase",
    [
        ("transfer.head.activation=relux", "transfer.head.activation='relux'"),
        ("followers.0.tap=pool9", "followers[0].tap='pool9'"),
        ("followers.0.name=leader", "followers[0].name='leader'"),
        ("followers.0.name=leader_taps", "leader_taps"),
        ("transfer.unfreeze=40", "transfer.unfreeze=40"),
    ],
)
def test_team_mistakes_fail_before_anything_trains(setting, phrase, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--output-dir", str(out), "--set", setting, "--set", "transfer.fine_tune_epochs=1"]
    assert cli.main(argv) == cli.USER_ERROR
    assert phrase in _error_line(capsys)
    assert not out.exists()


def test_a_leader_with_two_inputs_is_a_clear_error(tmp_path, capsys):
    import keras

    a, b = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(5)(keras.layers.Flatten()(keras.layers.Add()([a, b])))
    keras.Model([a, b], outputs).save(tmp_path / "two.keras")
    argv = ["run", "--output-dir", str(tmp_path / "run"), "--set", f"leader.path={tmp_path / 'two.keras'}"]
    assert cli.main(argv) == cli.USER_ERROR
    assert "one input, got 2" in _error_line(capsys)


def test_init_into_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["init", str(tmp_path / "missing" / "my.yaml")]) == cli.USER_ERROR
    assert "existing folder" in _error_line(capsys)
    assert not (tmp_path / "missing").exists()


def test_check_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["check", "--output-dir", str(out), "--set", "transfer.keep=pool1"]) == 0
    plan = capsys.readouterr().out
    assert "cut     pool1 (depth 3, features (None, 4, 4, 16))" in plan
    for stage in ("1. leader", "2. transfer", "3. followers", "4. baseline", "5. evaluate"):
        assert stage in plan
    assert f"would write to {out}/" in plan
    import keras_team

    reference = keras_team.transfer(keras_team.zoo.residual_cnn((8, 8, 1), 5), "pool1",
                                    keras_team.heads.probe(5))  # the default head: a linear probe
    line = next(line for line in plan.splitlines() if line.strip().startswith("transfer ") and "parameters" in line)
    assert f"{reference.count_params():,} parameters" in line
    assert not out.exists()
    assert cli.main(["run", "--dry-run", "--output-dir", str(out), "--set", "transfer.keep=pool1"]) == 0
    assert capsys.readouterr().out == plan and not out.exists()
    assert cli.main(["check", "--output-dir", str(out)]) == 0  # pool1 is the default cut, and the plan says so
    assert "keep 'pool1' (the default: the middle block) frozen" in capsys.readouterr().out


def test_cuts_lists_name_depth_shape_and_parameters_kept(tmp_path, capsys):
    import keras_team

    leader = keras_team.zoo.seed_cnn((8, 8, 1), 5)
    leader.save(tmp_path / "leader.keras")
    for argv in (["cuts", "seed_cnn", "--input-shape", "8,8,1", "--classes", "5", "--all"],
                 ["cuts", str(tmp_path / "leader.keras"), "--all"]):
        assert cli.main(argv) == 0
        rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
        for cut in keras_team.cut_points(leader):
            kept = keras_team.body(leader, cut.name).count_params()
            assert rows[cut.name].split()[1] == str(cut.depth)
            assert rows[cut.name].endswith(f"{kept:,}"), rows[cut.name]
    assert cli.main(["cuts", "seed_cnn"]) == cli.USER_ERROR
    assert "--input-shape" in _error_line(capsys)


@pytest.mark.large  # starts TensorFlow in two fresh interpreters
def test_tensorflow_start_up_lines_reach_stderr_as_tensorflow_writes_them():
    """The command line never catches stderr: whatever `import tensorflow` prints at the same log level, it prints."""
    import os
    import re
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    def lines(command):
        done = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=300,
                              env={**env, "TF_CPP_MIN_LOG_LEVEL": "1"} if command[0] == "-c" else env)
        assert done.returncode == 0, done.stderr[-3000:]
        # Without the time stamp and thread id of absl's prefix ("I0000 00:00:1796587897.551017   32518 port.cc:153]").
        return done.stdout, [re.sub(r"^([IWEF]\d{4}) \S+ +\d+ ", r"\1 ", line) for line in done.stderr.splitlines()]

    out, cli_lines = lines(["-m", "keras_team_cli", "cuts", "seed_cnn", "--input-shape", "8,8,1"])
    _, import_lines = lines(["-c", "import tensorflow"])
    assert "fc1" in out
    assert import_lines and all(line in cli_lines for line in import_lines), (import_lines, cli_lines)


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--output-dir", "/proc/keras_team_out"],
        ["run", "--output-dir", "/proc/keras_team_out"],
        ["check", "--output-dir", "/sys/kernel/keras_team_out"],
    ],
)
def test_an_output_dir_that_cannot_be_created_is_one_line(argv, capsys):
    assert cli.main(argv) == cli.USER_ERROR
    assert "expected a directory you may create and write to" in _error_line(capsys)


def test_check_leaves_no_folder_it_made_to_probe(tmp_path, capsys):
    assert cli.main(["check", "--output-dir", str(tmp_path / "a" / "b" / "run")]) == 0
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def unusable_leaders(tmp_path_factory):
    import keras

    from keras_team import Follower, Team, zoo

    path = tmp_path_factory.mktemp("leaders")
    a, b = keras.Input((4,)), keras.Input((4,))
    keras.Model([a, b], keras.layers.Dense(3)(keras.layers.Concatenate()([a, b]))).save(path / "two.keras")
    Team({"leader": zoo.seed_cnn((8, 8, 1), 5, name="leader")}, [Follower(zoo.mlp(5))]).save(path / "team.keras")
    return path


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["cuts", "{dir}/two.keras"], "a leader with one input, got 2 inputs"),
        (["cuts", "{dir}/team.keras"], "expected a model with a cut point"),
        (["cuts", "residual_cnn", "--input-shape", "1,1,1"], "height and width at least 2 for residual_cnn"),
        (["cuts", "residual_cnn", "--input-shape", "0,0,1"], "height and width at least 2 for residual_cnn"),
        (["cuts", "seed_cnn", "--input-shape", "3,3,1"], "height and width at least 4 for seed_cnn"),
        (["cuts", "seed_cnn", "--input-shape", "8,8"], "three positive ints"),
    ],
)
def test_cuts_refuses_what_run_refuses_in_one_line(argv, phrase, unusable_leaders, capsys):
    assert cli.main([arg.format(dir=unusable_leaders) for arg in argv]) == cli.USER_ERROR
    assert phrase in _error_line(capsys)


def test_a_reader_that_stops_early_is_not_an_error(monkeypatch):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert cli.main(["schema"]) == 0  # e.g. `keras-team schema | head`


def test_help_init_schema_and_config_errors_answer_without_keras(tmp_path):
    """The console script's fast commands import neither Keras nor TensorFlow (each would take seconds)."""
    import subprocess

    script = ("import sys, keras_team_cli\n"
              "codes = [keras_team_cli.main(argv) for argv in (['init', sys.argv[1]], ['schema'], "
              "['run', '--set', 'data.batch_size=0'])]\n"
              "print(codes, sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "my.yaml")], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.splitlines()[-1] == "[0, 0, 2] []", done.stdout + done.stderr
    assert "data.batch_size=0" in done.stderr
