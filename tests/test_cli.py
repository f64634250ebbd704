"""The command line: clear errors for bad configuration, filters and stores."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from entrepot import terminal
from entrepot.cli import app
from entrepot.observability.logging import configure_logging
from entrepot.store.pushes import enqueue_push
from entrepot.store.tables import ChannelPush
from tests.event_store import store_in

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


def test_order_key_with_brackets_printed(tmp_path: Path) -> None:
    """A key that reads as console markup is printed as typed, not parsed."""
    store_in(tmp_path)
    result = runner.invoke(app, ["orders", "show", "[/x]", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "No order or receipt found for '[/x]'." in result.output


def test_unknown_state_filter_rejected(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["orders", "list", "--state", "dead-lettered", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "dead_lettered" in result.output


def test_unknown_log_level_is_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "e.toml"
    config.write_text('[logging]\nlevel = "CHATTY"\n')
    result = runner.invoke(app, ["orders", "list", "--config", str(config)])
    assert result.exit_code == 2
    assert "Invalid configuration:" in result.output
    assert "logging.level: Value error, unknown log level 'CHATTY'" in result.output
    assert "Traceback" not in result.output


def test_invalid_store_url_is_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "e.toml"
    config.write_text('[store]\nurl = "not a url"\n')
    result = runner.invoke(app, ["db", "upgrade", "--config", str(config)])
    assert result.exit_code == 2
    assert "Invalid configuration:" in result.output
    assert "store.url: Value error, invalid database URL" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["db", "upgrade"], ["run", "--port", "0"], ["worker"]])
def test_uncreatable_data_dir_is_clear_error(tmp_path: Path, command: list[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    data_dir = blocker / "data"
    result = runner.invoke(app, [*command, "--data-dir", str(data_dir)])
    assert result.exit_code == 2
    assert result.output.startswith(
        f"Invalid configuration: cannot create the data folder {data_dir}: "
    )
    assert result.output.rstrip().endswith(
        "Not a directory; check --data-dir or [store] data_dir."
    )
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_unopenable_store_is_clear_error(tmp_path: Path) -> None:
    # A folder where the SQLite file should be makes the database impossible to open.
    (tmp_path / "entrepot.db").mkdir()
    result = runner.invoke(app, ["db", "upgrade", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.rstrip() == (
        f"Cannot open the store at sqlite:///{tmp_path}/entrepot.db: unable to open "
        "database file; check --data-dir or [store] url."
    )
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_store_command_closes_its_connections(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    from tests.stores import postgres_database

    with postgres_database() as url:
        config = tmp_path / "entrepot.toml"
        config.write_text(f'[store]\nurl = "{url}"\n')
        upgraded = runner.invoke(app, ["db", "upgrade", "--config", str(config)])
        listed = runner.invoke(app, ["orders", "list", "--config", str(config)])
        watcher = create_engine(url)
        with watcher.connect() as connection:
            others = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        watcher.dispose()

    assert upgraded.exit_code == 0, upgraded.output
    assert listed.exit_code == 0, listed.output
    assert others == 0


def test_push_error_printed_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A push's error with brackets and terminal escape codes lists without a crash,
    the brackets as they are and the escape codes made visible."""
    database = store_in(tmp_path)
    error = "HTTP 404 for [/admin/orders/1001] \x1b[2J\x1b[31mgone"

    def fail_one(session: Session) -> None:
        enqueue_push(session, "shopify", "acme", "inventory", "SKU-1", {"available": 3})
        row = session.scalars(select(ChannelPush)).one()
        row.status, row.last_error = "dead", error

    database.write(fail_one)
    monkeypatch.setattr(terminal.console, "_width", 200)
    listed = runner.invoke(app, ["pushes", "list", "--data-dir", str(tmp_path)])

    assert listed.exit_code == 0, listed.output
    assert "\x1b" not in listed.output
    assert "HTTP 404 for [/admin/orders/1001] \\x1b[2J\\x1b[31mgone" in listed.output


def test_operator_name_with_control_characters_rejected(tmp_path: Path) -> None:
    store_in(tmp_path)
    result = runner.invoke(
        app, ["dlq", "discard", "1", "--by", "\x1b[2JX", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "with no control characters" in result.output
    assert "\x1b" not in result.output


def test_demo_help_names_the_extra() -> None:
    result = runner.invoke(app, ["demo", "--help"])
    assert result.exit_code == 0
    assert "'entrepot[tryton]'" in result.output


def test_text_log_escapes_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")
    logging.getLogger("entrepot.test").warning("HTTP 400: %s", "\x1b[31mred\rover")
    logged = capsys.readouterr().err

    assert "HTTP 400: \\x1b[31mred\\x0dover" in logged
    assert "\x1b" not in logged
