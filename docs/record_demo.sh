#!/usr/bin/env bash
# Records `asyncbatch demo` as a terminal shows it, at 80 and 160 columns, into
# docs/demo-80.txt and docs/demo-160.txt: a frame taken mid-run, then the screen at the end.
# Needs tmux (apt-get install tmux). Run from anywhere: docs/record_demo.sh
# PYTHON picks the interpreter (default: the clone's .venv, as `make demo` builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
MIDRUN_SECONDS=${MIDRUN_SECONDS:-8}

# Trailing spaces and blank lines off; the screen's content as it is.
tidy() {
    sed -e 's/[[:space:]]*$//' | awk 'NF { for (; blank > 0; blank--) print ""; print; next } { blank++ }'
}

record() {
    local width=$1 session="asyncbatch-demo-$1-$$" out="docs/demo-$1.txt"
    tmux new-session -d -s "$session" -x "$width" -y 40 \
        "$PYTHON -m asyncbatch demo; echo \"[exit status \$?]\"; sleep 600"
    sleep "$MIDRUN_SECONDS"
    {
        echo "# asyncbatch demo at ${width} columns, recorded by docs/record_demo.sh"
        echo
        echo "## a frame after ${MIDRUN_SECONDS} s"
        echo
        tmux capture-pane -p -t "$session" | tidy
    } > "$out"
    until tmux capture-pane -p -t "$session" -S - | grep -q '^\[exit status'; do sleep 1; done
    {
        echo
        echo "## the end"
        echo
        tmux capture-pane -p -t "$session" -S - | tidy
    } >> "$out"
    tmux kill-session -t "$session"
    echo "wrote $out"
}

record 80
record 160
