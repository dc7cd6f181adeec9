"""`facesmith train run|status|options` on real tiny facesets, and `facesmith sql` on the history."""

from __future__ import annotations

import json

import pytest

from tests.cli.helpers import assert_one_line_error, invoke

TINY_FLAGS = ["--resolution", "64", "--ae-dims", "32", "--e-dims", "16", "--d-dims", "16",
              "--d-mask-dims", "16", "--batch-size", "2", "--save-every", "1000", "--preview-every", "3"]


@pytest.fixture(scope="module")
def cli_model(module_dirs, training_facesets):
    src, dst = training_facesets
    model_dir = module_dirs("cli") / "model"
    config = model_dir.parent / "options.toml"
    config.write_text('[train]\nct_mode = "rct"\nmasked_training = true\n')
    result = invoke("train", "run", "--model-dir", model_dir, "--src", src, "--dst", dst, "--config", config,
                    "--iterations", "3", "--format", "json", *TINY_FLAGS)
    assert result.exit_code == 0, result.output
    return model_dir, json.loads(result.stdout)


def test_run_json_summary(cli_model):
    model_dir, summary = cli_model
    assert summary["iteration"] == 3 and summary["iterations_run"] == 3 and summary["phase"] == "rw"
    assert summary["reason"] == "iterations-done" and summary["device"].startswith("tensorflow on CPU")
    assert 0 < summary["src_loss"] < 20
    assert (model_dir / "previews" / "last.png").is_file()


def test_resume_keeps_structure_and_reports_the_ignored_flag(cli_model):
    model_dir, _ = cli_model
    result = invoke("train", "run", "--model-dir", model_dir, "--iterations", "2", "--resolution", "128",
                    "--phase", "lrd", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["iteration"] == 5 and summary["phase"] == "lrd"
    assert any("resolution is fixed at model creation" in note for note in summary["notes"])


def test_status_json_and_table(cli_model):
    model_dir, _ = cli_model
    status = json.loads(invoke("train", "status", "--model-dir", model_dir, "--format", "json").stdout)
    assert status["iteration"] >= 3 and status["architecture"] == "liae-ud" and status["resolution"] == 64
    table = invoke("train", "status", "--model-dir", model_dir)
    assert table.exit_code == 0 and "advice" in table.stdout and "ms / iteration" in table.stdout
    assert f"loss src / dst at {status['iteration']}" in table.stdout and "mean of the last 100" in table.stdout


def test_status_and_the_run_summary_give_the_same_loss_for_the_same_iteration(tmp_path, training_facesets):
    src, dst = training_facesets
    result = invoke("train", "run", "--model-dir", tmp_path / "m", "--src", src, "--dst", dst, "--iterations", "2",
                    "--check-every", "0", "--format", "json", *TINY_FLAGS)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    status = json.loads(invoke("train", "status", "--model-dir", tmp_path / "m", "--format", "json").stdout)
    assert status["iteration"] == summary["iteration"] == 2
    assert status["last_src_loss"] == pytest.approx(summary["src_loss"], rel=1e-6)
    assert status["last_dst_loss"] == pytest.approx(summary["dst_loss"], rel=1e-6)


def test_derived_mask_dims_of_a_small_decoder_train(tmp_path, training_facesets):
    """--d-dims 16 derived d_mask_dims 6 and died with a traceback; DFL clips it to 16."""
    src, dst = training_facesets
    result = invoke("train", "run", "--model-dir", tmp_path / "m", "--src", src, "--dst", dst, "--iterations", "1",
                    "--check-every", "0", "--format", "json", "--resolution", "64", "--ae-dims", "32",
                    "--e-dims", "16", "--d-dims", "16", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["iteration"] == 1
    assert "d_mask_dims must be 0 (derived from d_dims) or 16..256" in assert_one_line_error(
        invoke("train", "run", "--model-dir", tmp_path / "n", "--src", src, "--dst", dst, "--d-mask-dims", "8"))
    assert not (tmp_path / "n").exists()


def test_bad_options_are_refused_before_a_framework_loads_and_leave_no_folder(tmp_path, training_facesets):
    import subprocess
    import sys

    src, dst = training_facesets
    cases = [["--batch-size", "300"], ["--archi", "liae-xx"], ["--resolution", "64", "--d-mask-dims", "6"],
             ["--precision", "float16", "--device", "cpu"]]
    code = "\n".join([
        "import json, sys",
        "from facesmith.cli import app",
        "from typer.testing import CliRunner",
        "out = []",
        f"for extra in {cases!r}:",
        f"    r = CliRunner().invoke(app, ['train', 'run', '--model-dir', {str(tmp_path / 'm')!r}, '--src', "
        f"{str(src)!r}, '--dst', {str(dst)!r}, *extra])",
        "    out.append([r.exit_code, r.stderr])",
        "print(json.dumps({'results': out, 'frameworks': [m for m in ('keras', 'tensorflow', 'jax', 'torch') "
        "if m in sys.modules]}))"])
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["frameworks"] == []
    for exit_code, stderr in report["results"]:
        assert exit_code == 1 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "m").exists()


def test_train_plan_json_and_the_largest_batch(tmp_path):
    small = json.loads(invoke("train", "plan", "--resolution", "128", "--memory-gib", "8", "--format", "json").stdout)
    large = json.loads(invoke("train", "plan", "--resolution", "128", "--memory-gib", "24", "--format", "json").stdout)
    half = json.loads(invoke("train", "plan", "--resolution", "128", "--precision", "bfloat16", "--memory-gib", "24",
                             "--format", "json").stdout)
    assert small["parameters"] == 82_376_555 and small["batch_size"] == 8  # liae-ud 128, default dims
    assert 0 < small["largest_batch"] < large["largest_batch"] < half["largest_batch"]
    assert half["activations_per_sample"] < large["activations_per_sample"]
    # the largest batch really is the largest that fits
    per, fixed = large["activations_per_sample"], large["total"] - large["batch_size"] * large["activations_per_sample"]
    assert fixed + large["largest_batch"] * per <= 24 * 2**30 < fixed + (large["largest_batch"] + 1) * per
    table = invoke("train", "plan", "--archi", "df-ud", "--resolution", "480", "--ae-dims", "480", "--e-dims", "96",
                   "--d-dims", "96", "--d-mask-dims", "22", "--batch-size", "4")
    assert table.exit_code == 0 and "activations per face pair" in table.stdout


def test_sql_reads_the_history(cli_model):
    model_dir, _ = cli_model
    result = invoke("sql", "--db", model_dir / "model.duckdb",
                    "SELECT count(*) AS n, min(iteration) AS first FROM history", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["first"] == 1 and rows[0]["n"] >= 3


def test_options_lists_every_declared_option():
    from train.config import option_specs

    rows = json.loads(invoke("train", "options", "--format", "json").stdout)
    assert [row["option"] for row in rows] == [spec.name for spec in option_specs()]
    assert next(r for r in rows if r["option"] == "resolution")["structural"] is True


def test_creating_a_model_needs_facesets(tmp_path):
    assert "give --src and --dst" in assert_one_line_error(invoke("train", "run", "--model-dir", tmp_path / "m"))


def test_bad_option_value_is_one_line(tmp_path, training_facesets):
    src, dst = training_facesets
    result = invoke("train", "run", "--model-dir", tmp_path / "m", "--src", src, "--dst", dst,
                    "--ct-mode", "purple")
    assert "ct_mode must be one of" in assert_one_line_error(result)
    result = invoke("train", "run", "--model-dir", tmp_path / "m", "--src", src, "--dst", dst,
                    "--pretrain", "maybe")
    assert "pretrain must be a bool" in assert_one_line_error(result)


def test_status_of_a_folder_that_is_not_a_model(tmp_path):
    assert "not a model folder" in assert_one_line_error(invoke("train", "status", "--model-dir", tmp_path))


def test_missing_faceset_is_one_line(tmp_path):
    result = invoke("train", "run", "--model-dir", tmp_path / "m", "--src", tmp_path / "none.duckdb",
                    "--dst", tmp_path / "none.duckdb")
    assert "no faceset at" in assert_one_line_error(result)


def test_status_and_options_never_import_tensorflow(cli_model):
    import subprocess
    import sys

    model_dir, _ = cli_model
    code = ("import sys\nfrom facesmith.cli import app\nfrom typer.testing import CliRunner\n"
            f"r = CliRunner().invoke(app, ['train', 'status', '--model-dir', {str(model_dir)!r}])\n"
            "assert r.exit_code == 0, r.output\n"
            "r = CliRunner().invoke(app, ['train', 'options'])\nassert r.exit_code == 0, r.output\n"
            "print('TF', 'tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "TF False" in result.stdout


@pytest.mark.parametrize("command", [("train", "run", "--model-dir", "m"),
                                     ("merge", "run", "--model-dir", "m", "--frames", "f", "--out", "o")])
def test_a_deeply_nested_config_is_a_one_line_error(tmp_path, command):
    from tests.curate.test_options import deeply_nested_toml

    config = tmp_path / "nested.toml"
    config.write_text(deeply_nested_toml())
    result = invoke(*command, "--config", config)
    assert "nests arrays or tables too deeply" in assert_one_line_error(result)


def test_ctrl_c_saves_says_so_and_exits_130(tmp_path, training_facesets):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    src, dst = training_facesets
    model_dir = tmp_path / "model"
    repo = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "facesmith", "train", "run", "--model-dir", model_dir, "--src", src, "--dst", dst,
         *TINY_FLAGS, "--iterations", "100000", "--check-every", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(repo), COLUMNS="200"))
    seen = []
    try:
        while not (seen and seen[-1].startswith("training on")):  # printed once the model is built
            seen.append(process.stderr.readline())
            assert seen[-1], "".join(seen)  # end of output: the command ended without training
        # The trainer lets go of its history file between writes: `train status` reads it meanwhile.
        import time

        deadline, iteration = time.monotonic() + 300, 0
        while iteration < 6 and time.monotonic() < deadline and process.poll() is None:
            status = invoke("train", "status", "--model-dir", model_dir, "--format", "json")
            assert status.exit_code == 0, status.output
            iteration = json.loads(status.stdout)["iteration"] or 0
            time.sleep(0.2)
        assert iteration >= 6 and process.poll() is None, iteration  # read twice flushed, still training
    except BaseException:
        process.kill()
        raise
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr, stderr
    assert stdout, (seen, stderr, process.returncode)
    assert "training stopped by Ctrl-C at iteration" in stderr and "run the same command again" in stderr
    status = invoke("train", "status", "--model-dir", model_dir, "--format", "json")
    assert status.exit_code == 0 and json.loads(status.stdout)["checkpoints"]
