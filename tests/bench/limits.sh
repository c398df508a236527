#!/usr/bin/env bash
# What hostile or unlucky input costs, on the release binary:
#   1. the supervisor's peak RSS while a job writes 300 MB without a newline
#      (log read, and log stalled);
#   2. the agent's RSS before and after 10 service registrations with 100k
#      Meta keys each (refused), and after a catalog read;
#   3. 500 stalled request heads (slowloris, from 127.20.x.y) while another
#      client keeps doing GETs: when the stalled ones are closed, and how the
#      other client fared.
# Usage: tests/bench/limits.sh   (PILOTFISH=path to skip the release build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [[ -z ${PILOTFISH:-} ]]; then
    cargo build --release -q --bin pilotfish
    PILOTFISH=${CARGO_TARGET_DIR:-target}/release/pilotfish
fi
here=tests/bench/limits
echo "== 1. job output without newlines (300 MB)"
"$here/job_output_rss.sh" "$PILOTFISH" info devnull
"$here/job_output_rss.sh" "$PILOTFISH" info stalled
echo "== 2. oversize Meta, 10 registrations of 100k keys"
python3 "$here/meta_rss.py" "$PILOTFISH" 10 100000
echo "== 3. slowloris"
python3 "$here/slowloris.py" "$PILOTFISH"
