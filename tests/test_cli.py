"""The command line: clear errors for bad configuration, filters and stores."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from entrepot.cli import app

runner = CliRunner()


def test_bad_config_is_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "e.toml"
    config.write_text('[targets.erp]\nmaintenance_windows = ["nightly 1-2"]\n')
    result = runner.invoke(app, ["orders", "list", "--config", str(config)])
    assert result.exit_code == 2
    assert "Invalid configuration:" in result.output
    assert "invalid maintenance window 'nightly 1-2'" in result.output
    assert "Traceback" not in result.output


def test_missing_store_is_an_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dlq", "list", "--data-dir", str(tmp_path / "typo")])
    assert result.exit_code == 1
    assert "No store at" in result.output
    assert not (tmp_path / "typo").exists()


def test_unknown_state_filter_rejected(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["orders", "list", "--state", "dead-lettered", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "dead_lettered" in result.output
