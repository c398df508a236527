#!/usr/bin/env bash
# The real-client suite, once per client library (both import as `consul`):
#   python-consul 0.7 (Debian python3-consul) under Debian's /usr/bin/python3,
#   py-consul (PyPI) in a venv.
# CONSUL_HTTP_ADDR=host:port runs it against an existing agent (e.g. a real
# Consul); otherwise each run starts `pilotfish agent --dev` (PILOTFISH_BIN).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
export PILOTFISH_BIN=${PILOTFISH_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/pilotfish}
venv=${PILOTFISH_VENV:-$repo/target/py-consul-venv}

if [[ ! -x $venv/bin/pytest ]]; then
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q py-consul pytest
fi
status=0
echo "== python-consul $(/usr/bin/python3 -c 'import consul; print(consul.__version__)') (Debian python3-consul)"
/usr/bin/python3 -m pytest -q -p no:cacheprovider "$here" || status=1
echo "== py-consul $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("py-consul"))') (PyPI)"
"$venv/bin/pytest" -q -p no:cacheprovider "$here" || status=1
exit $status
