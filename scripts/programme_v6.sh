#!/usr/bin/env bash
# One session of the v6 training programme on a lent GPU machine (docs/training/PROGRAMME_V6.md).
# Each step is one device call; the machine keeps /tmp between calls while it stays warm.
#   scripts/programme_v6.sh gather DIR...     append carried pieces to /tmp/d (in the order given);
#                                             state-*.safetensors and manifest.json go to /tmp/d/state
#   scripts/programme_v6.sh start MINUTES     install wheels, import a carried state (the tiers that
#                                             came back: --allow-partial), train detached
#   scripts/programme_v6.sh wait SECONDS      follow the run's console until it ends or time is up
#   scripts/programme_v6.sh export OUT [FROM] [MAX_MIB] [EXTRA...]
#                                             write the state; send state files from index FROM (0)
#                                             in tier order (weights first) while they fit MAX_MIB
#                                             (63: a call returns about 64 MiB in all), plus meta.tgz
#                                             (manifest, logs, EXTRA paths); it prints the FROM of
#                                             the next call. The EMA restorer (25 MiB) is rebuilt
#                                             at home from the state (`training_state restorer`).
set -euo pipefail
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
D=/tmp/d RUN=/tmp/runs/v6 STATE=/tmp/state
# The programme's fixed recipe: one cosine horizon over every session (resume-safe: it depends on
# the global step only), v5's losses, FaceRes as the identity loss network.
RECIPE=(--total-steps 24000 --lr 1e-4 --batch-size 48 --num-workers 14 --val-every 1000
        --identity-loss-network "$D/faceres.safetensors" --checkpoint-minutes 3)

case "$1" in
gather)
    shift; mkdir -p "$D"
    for dir in "$@"; do
        for f in "$dir"/*; do
            case "$f" in
            *.part-*) base=$(basename "$f"); cat "$f" >>"$D/${base%%.part-*}" ;;
            */state-*.safetensors|*/manifest.json) mkdir -p "$D/state"; cp "$f" "$D/state/" ;;
            *) cp "$f" "$D/" ;;
            esac
        done
    done
    ls -l "$D" "$D"/state 2>/dev/null || true; (cd "$D" && ls *.sha256 >/dev/null 2>&1 && sha256sum -c *.sha256 || true) ;;
start)
    minutes=$2
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$D"/*.whl
    mkdir -p "$RUN"
    if [ -f "$D/state/manifest.json" ] && [ ! -f "$RUN/checkpoint.pt" ]; then
        python3 -m restorer_core.train.training_state import --allow-partial --state "$D/state" \
            --checkpoint "$RUN/checkpoint.pt"
        init=()
    elif [ -f "$RUN/checkpoint.pt" ]; then
        init=()
    else
        init=(--init restorer_core/assets/models/default_restorer.safetensors)  # session 1: from v5
    fi
    setsid nohup scripts/train_default_gpu.sh "$D/faces128.npz" "$RUN" "$minutes" \
        "${RECIPE[@]}" "${init[@]}" >>"$RUN/console.txt" 2>&1 </dev/null &
    echo $! >"$RUN/pid"; sleep 5; tail -5 "$RUN/console.txt" ;;
wait)
    end=$((SECONDS + $2))
    running() { kill -0 "$(cat "$RUN/pid")" 2>/dev/null; }
    while [ $SECONDS -lt $end ] && running; do sleep 5; done
    tail -c 3000 "$RUN/console.txt"
    running && echo "RUNNING" || echo "ENDED" ;;
export)
    out=$2 from=${3:-0} max_mib=${4:-63}
    shift $(($# < 4 ? $# : 4))
    if [ ! -f "$STATE/manifest.json" ]; then
        python3 -m restorer_core.train.training_state export --checkpoint "$RUN/checkpoint.pt" --out "$STATE"
    fi
    mkdir -p "$out"
    meta=$(mktemp -d); cp "$STATE/manifest.json" "$meta/"
    for f in train_log.jsonl console.txt summary.json; do if [ -f "$RUN/$f" ]; then cp "$RUN/$f" "$meta/"; fi; done
    for extra in "$@"; do cp -r "$extra" "$meta/"; done
    tar czf "$out/meta.tgz" -C "$meta" .
    budget=$((max_mib * 1048576 - $(stat -c %s "$out/meta.tgz")))
    names=$(python3 -c "import json,sys; [print(f['name']) for f in json.load(open(sys.argv[1]))['files']]" \
        "$STATE/manifest.json")
    i=0 next=""
    for name in $names; do
        size=$(stat -c %s "$STATE/$name")
        if [ "$i" -ge "$from" ] && [ -z "$next" ] && [ "$size" -le "$budget" ]; then
            cp "$STATE/$name" "$out/"; budget=$((budget - size))
        elif [ "$i" -ge "$from" ] && [ -z "$next" ]; then
            next=$i
        fi
        i=$((i + 1))
    done
    ls -l "$out"
    if [ -n "$next" ]; then echo "NEXT: export OUT $next (state files from $next did not fit $max_mib MiB)"
    else echo "NEXT: none (every state file from $from is in $out)"; fi ;;
*)
    echo "unknown step $1: gather | start | wait | export" >&2; exit 2 ;;
esac
