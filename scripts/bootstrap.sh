#!/usr/bin/env bash
# Create .venv with Python 3.11+ and install entrepot with the extras named in $1
# ("" for none, "tryton" for the local Tryton ERP, "test" for the test tools, which
# include Tryton). Installs again only when pyproject.toml changed. An install with more
# extras also serves one with fewer: "test" serves "tryton" and "", "tryton" serves "".
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "entrepot needs Python 3.11 or newer; $python is $("$python" --version 2>&1)." >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi

hash="$(sha256sum pyproject.toml | cut -c1-16)"
stamp=".venv/.installed-$hash-${extras:-base}"
case "${extras:-base}" in
    base) serving="base tryton test" ;;
    tryton) serving="tryton test" ;;
    *) serving="$extras" ;;
esac
for word in $serving; do
    if [ -f ".venv/.installed-$hash-$word" ]; then
        exit 0
    fi
done

.venv/bin/python -m pip install --quiet --upgrade pip
if [ -n "$extras" ]; then
    .venv/bin/python -m pip install --quiet -e ".[$extras]"
else
    .venv/bin/python -m pip install --quiet -e .
fi
find .venv -maxdepth 1 -name '.installed-*' ! -name ".installed-$hash-*" -delete
touch "$stamp"
