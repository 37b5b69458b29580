#!/usr/bin/env bash
# The Redshift grammar gate: parses every .sql file in DIR with sqlfluff's Redshift
# dialect and fails, naming each file, if any statement is unparsable. sqlfluff is pinned
# and installed into a virtualenv under target/ on first use (PyPI), so a fresh machine
# needs only python3.
#   scripts/redshift-grammar.sh DIR          parse DIR/*.sql
#   scripts/redshift-grammar.sh --install    only install (used by .ci/run)
set -euo pipefail
SQLFLUFF_VERSION=4.5.0
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${SQLFLUFF_VENV:-$root/target/sqlfluff-$SQLFLUFF_VERSION}

if [ ! -x "$venv/bin/sqlfluff" ]; then
  echo "installing sqlfluff==$SQLFLUFF_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "sqlfluff==$SQLFLUFF_VERSION"
fi
[ "${1:-}" = "--install" ] && exit 0

dir=${1:?usage: scripts/redshift-grammar.sh DIR}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$venv/bin/sqlfluff" parse --dialect redshift --format json --nofail "$dir" >"$out"
"$venv/bin/python" - "$out" "$dir" <<'PY'
import json, pathlib, sys
results = json.load(open(sys.argv[1]))
files = sorted(p.name for p in pathlib.Path(sys.argv[2]).glob("*.sql"))
parsed = {pathlib.Path(r["filepath"]).name: r for r in results}
bad = []
for name in files:
    r = parsed.get(name)
    if r is None or r.get("segments") is None or "unparsable" in json.dumps(r["segments"]):
        bad.append(name)
for name in bad:
    text = (pathlib.Path(sys.argv[2]) / name).read_text()
    print(f"UNPARSABLE as Redshift: {name}\n{text}\n")
print(f"redshift grammar: {len(files) - len(bad)} of {len(files)} statements parse")
sys.exit(1 if bad or not files else 0)
PY
