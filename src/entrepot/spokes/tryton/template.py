"""Build a seeded Tryton SQLite database once, cache it, and copy it for each use.

Activating the modules and seeding take about 35-45 s on a 2-core machine, so tests and
the demo start from a copy of a cached template instead. The template's name contains a
hash of everything that shapes it (installed Tryton versions, the module list and the
seed script), so a change to any of them builds a new one.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from contextlib import closing
from importlib import metadata
from pathlib import Path

# Modules activated in the template. trytond-admin activates their dependencies too.
MODULES = ("sale", "stock", "sale_price_list", "account_credit_limit", "sale_credit_limit")
ADMIN_LOGIN = "admin"
ADMIN_PASSWORD = "admin"
ADMIN_EMAIL = "admin@example.com"
CACHE_ENV = "ENTREPOT_TRYTON_CACHE"
# The seed runs in its own process, so this module names it instead of importing it,
# which keeps trytond and proteus out of the caller's process.
SEED_MODULE = "entrepot.spokes.tryton.seed"
SEED_SOURCE = Path(__file__).with_name("seed.py")


def default_cache_dir() -> Path:
    """Return ``$ENTREPOT_TRYTON_CACHE``, else ``.cache/tryton`` in the source checkout
    that contains this package, else ``.cache/tryton`` in the working directory."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "entrepot").is_dir():
            return parent / ".cache" / "tryton"
    return Path.cwd() / ".cache" / "tryton"


def template_key() -> str:
    """Return a short hash of the installed Tryton distributions, ``MODULES`` and the
    seed script's source."""
    digest = hashlib.sha256()
    versions = sorted(
        f"{dist.metadata['Name'].lower().replace('_', '-')}=={dist.version}"
        for dist in metadata.distributions()
        if dist.metadata["Name"].lower().startswith(("trytond", "proteus"))
    )
    for part in [*versions, *MODULES]:
        digest.update(part.encode() + b"\n")
    digest.update(SEED_SOURCE.read_bytes())
    return digest.hexdigest()[:16]


def ensure_template(cache_dir: Path | None = None) -> Path:
    """Return the path of the cached template database, building it first if needed.

    The build runs under a temporary name that is renamed when complete, so a
    half-built template is never used, and two processes that build at once each
    produce a complete file. Raises RuntimeError with the failing command's output
    when the build fails.
    """
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    template = cache_dir / f"template-{template_key()}.sqlite"
    if template.exists():
        return template

    build_name = f"build-{uuid.uuid4().hex}"
    build = cache_dir / f"{build_name}.sqlite"
    try:
        build.touch()
        _run_build(cache_dir, build_name)
        _checkpoint(build)
        os.replace(build, template)
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{build}{suffix}").unlink(missing_ok=True)
    return template


def tryton_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """Return this process's environment for a Tryton command that uses the SQLite files
    in ``data_dir``.

    Inherited ``TRYTOND_*`` variables and ``TRYTONPASSFILE`` are dropped, so a developer's
    own Tryton configuration cannot leak in. ``settings`` adds more variables by name.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TRYTOND_") and name != "TRYTONPASSFILE"
    }
    env["TRYTOND_DATABASE__URI"] = "sqlite://"
    env["TRYTOND_DATABASE__PATH"] = str(data_dir)
    env.update(settings)
    return env


def executable(name: str) -> str:
    """Return the path of a Tryton command installed beside this Python interpreter."""
    return str(Path(sys.executable).parent / name)


def _run_build(cache_dir: Path, database: str) -> None:
    with tempfile.TemporaryDirectory(prefix="entrepot-tryton-") as scratch:
        passfile = Path(scratch) / "passfile"
        passfile.write_text(ADMIN_PASSWORD + "\n")
        env = tryton_env(cache_dir, TRYTONPASSFILE=str(passfile))
        # --email stops trytond-admin from prompting for the admin's address. Without
        # it a non-interactive run dies after installing the modules, leaving no admin.
        admin = [executable("trytond-admin"), "-d", database, "--all", "-u", *MODULES]
        admin += ["--activate-dependencies", "--email", ADMIN_EMAIL]
        _run(admin, env)
        _run([sys.executable, "-m", SEED_MODULE, database], env)


def _run(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-4000:]
        raise RuntimeError(
            f"Building the Tryton template failed: {' '.join(command)} exited with code "
            f"{result.returncode}. Its output ends with:\n{output}"
        )


def _checkpoint(database: Path) -> None:
    # trytond opens SQLite in WAL mode. The builders exited cleanly, which normally
    # folds the WAL into the main file; the explicit checkpoint makes sure of it before
    # the file is renamed without its -wal companion.
    with closing(sqlite3.connect(database)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def copy_database(template: Path, data_dir: Path, name: str) -> None:
    """Copy ``template`` to ``data_dir/<name>.sqlite`` with SQLite's backup API, which
    includes data still in a WAL file. Replaces an existing database of that name."""
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / f"{name}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    with (
        closing(sqlite3.connect(template)) as source,
        closing(sqlite3.connect(target)) as destination,
    ):
        source.backup(destination)
