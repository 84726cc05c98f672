#!/usr/bin/env bash
# Create .venv with the project (editable) and its developer tools. Idempotent and quick when
# nothing changed (keyed on pyproject.toml's hash).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv"
stamp="$venv/.memu-stamp"
want=$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "memu: setting up the Python environment in $venv" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e "$here[dev,agent,bot]"
echo "$want" > "$stamp"
