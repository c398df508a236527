#!/bin/sh
# The supervisor's memory while a job writes 300 MB without a newline.
# usage: job_output_rss.sh PILOTFISH [LEVEL] [devnull|stalled]
#   devnull: pilotfish's log goes to /dev/null (a reader that keeps up);
#   stalled: to a pipe nobody reads (the log queue fills, then drops).
# Prints VmHWM (peak RSS), RssAnon (heap) and RssFile (the mapped binary).
set -eu
BIN=$1; LEVEL=${2:-info}; MODE=${3:-devnull}
D=$(mktemp -d "${TMPDIR:-/tmp}/pf-job-rss.XXXXXX")
trap 'rm -rf "$D"' EXIT
cat > "$D/c.toml" <<EOT
[logging]
level = "$LEVEL"
[control]
socket = "$D/pf.sock"
[[jobs]]
name = "app"
exec = ["sh", "-c", "head -c 300000000 /dev/zero; touch $D/done; exec sleep 1000"]
EOT
R=
if [ "$MODE" = stalled ]; then
    mkfifo "$D/fifo"
    sleep 1000 <"$D/fifo" >/dev/null 2>&1 & R=$!
    "$BIN" run --config "$D/c.toml" 2>"$D/fifo" & P=$!
else
    "$BIN" run --config "$D/c.toml" 2>/dev/null & P=$!
fi
while [ ! -e "$D/done" ]; do sleep 0.1; done
sleep 0.5
echo "$BIN level=$LEVEL log=$MODE: $(grep -E 'VmHWM|RssAnon|RssFile' /proc/$P/status | tr -s ' \t\n' ' ')"
kill $P; wait $P 2>/dev/null || true
if [ -n "$R" ]; then kill "$R"; fi
