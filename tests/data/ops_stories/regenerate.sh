#!/usr/bin/env bash
# Regenerates Rasa's result files the ops console's parser is tested on (tests/channels/test_ops_stories.py):
# the deliberately failing stories here plus bot/tests/test_skills.yml, through `rasa test core` against the
# trained model, in the core and the end-to-end mode. Run from the repository root after `make train`.
set -euo pipefail
here=tests/data/ops_stories
model=$(.venv/bin/python -c 'from bankbot.layout import ProjectLayout; from bankbot.training import ensure_trained; print(ensure_trained(ProjectLayout(), log=False))')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/stories"
cp "$here/test_deliberately_failing.yml" bot/tests/test_skills.yml "$work/stories/"
export RASA_TELEMETRY_ENABLED=false SQLALCHEMY_SILENCE_UBER_WARNING=1 RASA_CACHE_DIRECTORY="$work/cache"
for mode in core e2e; do
    flag=$([ "$mode" = e2e ] && echo --e2e || true)
    .venv-rasa/bin/python -m rasa test core --stories "$work/stories" --model "$model" --out "$work/$mode" \
        --no-plot --successes $flag
    # Rasa names each story's source file by its absolute path: keep only the file name.
    for name in failed_test_stories successful_test_stories; do
        sed -e "s#($work/stories/#(#" "$work/$mode/$name.yml" > "$here/${name}_$mode.yml"
    done
done
