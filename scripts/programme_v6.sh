#!/usr/bin/env bash
# One session of the v6 training programme on a lent GPU machine (docs/training/PROGRAMME_V6.md).
# Each step is one device call; the machine keeps /tmp between calls while it stays warm.
#   scripts/programme_v6.sh gather DIR...     copy carried pieces to /tmp/d (folders in any order: split
#                                             files are joined by part name and hash-checked);
#                                             state-*.safetensors and manifest.json go to /tmp/d/state
#   scripts/programme_v6.sh start MINUTES     install wheels, import a carried state (the tiers that
#                                             came back: --allow-partial), train detached
#   scripts/programme_v6.sh ablate MINUTES    as start, but one run per GPU from the same imported
#                                             state: the recipe on GPU 0, a loss variant (VARIANTS)
#                                             on each other GPU; runs in /tmp/runs/v6-NAME
#   scripts/programme_v6.sh wait SECONDS [OUT]
#                                             follow the runs until they end or time is up; print
#                                             each run's last validation; when all ended, name the
#                                             best (x8 refs4 id + x8 no refs id) in /tmp/runs/best
#                                             and, with OUT, export it (as `export OUT`)
#   scripts/programme_v6.sh ema OUT NAME...   the EMA restorers of runs v6-NAME as project files, in
#                                             parts of 15 MiB (a call returns files of <= 16 MiB, about
#                                             64 MiB in all): at home `cat ema_NAME.safetensors.part-* >F`
#   scripts/programme_v6.sh export OUT [FROM] [MAX_MIB] [EXTRA...]
#                                             write the state; send state files from index FROM (0)
#                                             in tier order (weights first) while they fit MAX_MIB
#                                             (63: a call returns about 64 MiB in all), plus meta.tgz
#                                             (manifest, logs, EXTRA paths); it prints the FROM of
#                                             the next call. The EMA restorer (25 MiB) is rebuilt
#                                             at home from the state (`training_state restorer`).
set -euo pipefail
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
D=${D:-/tmp/d} RUNS=${RUNS:-/tmp/runs}
if [ -z "${RUN:-}" ]; then RUN=$RUNS/v6; [ -f "$RUNS/best" ] && RUN=$RUNS/v6-$(cat "$RUNS/best"); fi
STATE=$RUN/state
# The programme's fixed recipe: one cosine horizon over every session (resume-safe: it depends on
# the global step only), v5's losses, FaceRes as the identity loss network.
RECIPE=(--total-steps 24000 --lr 1e-4 --batch-size 48 --num-workers 14 --val-every 1000
        --identity-loss-network "$D/faceres.safetensors" --checkpoint-minutes 3)
# (RECIPE_EXTRA, NGPU and ONLY="name ..." adjust a run for a CPU check of this script.)
# Loss ablations (issue 18 item 2), one per GPU after the recipe itself ("base"), in this order.
# RUNS_PER_GPU runs share each GPU (one-GPU machines), each with 14 / RUNS_PER_GPU loader workers.
VARIANTS=("base|" "id2|--w-identity 2" "adv2|--w-adversarial 0.1"
          "nogan|--w-adversarial 0 --w-feature-matching 0" "pixhalf|--w-l1 0.5 --w-ssim 0.25"
          "views2|--identity-views 2" "fm2|--w-feature-matching 1.0" "lr2|--lr 2e-4" "id4|--w-identity 4"
          "idfeat|--w-identity-features 0.5")

install_wheels() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$D"/*.whl
}

last_val() {  # NAME: the run's last validation as one table row
    python3 - "$RUNS/v6-$1/train_log.jsonl" "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"val"' in l] if __import__("os").path.exists(sys.argv[1]) else []
if not rows:
    print(f"{sys.argv[2]:8s} no validation yet"); sys.exit()
r = rows[-1]; v = r["val"]
print(f"{sys.argv[2]:8s} step {r['step']:6d}  x8 refs4 {v['x8_refs4_id']:.4f}  x8 norefs {v['x8_norefs_id']:.4f}"
      f"  x4 refs4 {v['x4_refs4_id']:.4f}  x8 refs4 PSNR {v['x8_refs4_psnr']:.2f}  score {v['x8_refs4_id'] + v['x8_norefs_id']:.4f}")
PY
}

case "$1" in
gather)
    shift; mkdir -p "$D"
    for dir in "$@"; do
        for f in "$dir"/*; do
            case "$f" in
            *.part-*) mkdir -p "$D/parts"; cp "$f" "$D/parts/" ;;
            */state-*.safetensors|*/manifest.json) mkdir -p "$D/state"; cp "$f" "$D/state/" ;;
            *) cp "$f" "$D/" ;;
            esac
        done
    done
    # split files: join the parts by name (folders may come in any order) and check the whole
    # file's hash (NAME.sha256, beside the last part); an incomplete set says so and is kept
    for part in "$D"/parts/*.part-aa; do
        [ -e "$part" ] || continue
        base=$(basename "${part%.part-aa}")
        cat "$D/parts/$base".part-* >"$D/$base.joining" && mv "$D/$base.joining" "$D/$base"
        if [ -f "$D/$base.sha256" ] && (cd "$D" && sha256sum --quiet -c "$base.sha256"); then
            echo "$base: complete, sha256 OK"
        else
            echo "$base: not complete yet (or no hash): $(ls "$D"/parts/"$base".part-* | wc -l) part(s) here"
        fi
    done
    ls -l "$D" "$D"/state 2>/dev/null || true ;;
start)
    minutes=$2
    install_wheels
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
ablate)
    minutes=$2
    install_wheels
    ngpu=${NGPU:-$(python3 -c "import torch; print(max(1, torch.cuda.device_count()))")}
    mkdir -p "$RUNS/import"
    if [ ! -f "$RUNS/import/checkpoint.pt" ]; then
        python3 -m restorer_core.train.training_state import --allow-partial --state "$D/state" \
            --checkpoint "$RUNS/import/checkpoint.pt"
    fi
    per=${RUNS_PER_GPU:-1} i=0
    for v in "${VARIANTS[@]}"; do
        [ "$i" -ge $((ngpu * per)) ] && break
        name=${v%%|*} args=${v#*|} dir=$RUNS/v6-${v%%|*}
        if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
        mkdir -p "$dir"; [ -f "$dir/checkpoint.pt" ] || cp "$RUNS/import/checkpoint.pt" "$dir/"
        # shellcheck disable=SC2086
        CUDA_VISIBLE_DEVICES=$((i / per)) setsid nohup scripts/train_default_gpu.sh "$D/faces128.npz" "$dir" \
            "$minutes" "${RECIPE[@]}" --num-workers $((14 / per)) $args ${RECIPE_EXTRA:-} \
            >>"$dir/console.txt" 2>&1 </dev/null &
        echo $! >"$dir/pid"; echo "$name on GPU $((i / per)): ${args:-the recipe}"
        i=$((i + 1))
    done
    sleep 20; for dir in "$RUNS"/v6-*; do echo "== $dir"; tail -2 "$dir/console.txt"; done ;;
wait)
    end=$((SECONDS + $2)) out=${3:-}
    running() { for p in "$RUNS"/v6*/pid; do kill -0 "$(cat "$p")" 2>/dev/null && return 0; done; return 1; }
    while [ $SECONDS -lt $end ] && running; do sleep 5; done
    for dir in "$RUNS"/v6*; do echo "== $dir"; tail -c 600 "$dir/console.txt"; echo; done
    for dir in "$RUNS"/v6-*; do last_val "${dir##*/v6-}"; done
    if running; then echo "RUNNING"; exit 0; fi
    echo "ENDED"
    if ls -d "$RUNS"/v6-* >/dev/null 2>&1; then
        for dir in "$RUNS"/v6-*; do last_val "${dir##*/v6-}"; done | grep score |
            awk '{print $NF, $1}' | sort -g | tail -1 | awk '{print $2}' >"$RUNS/best"
        echo "best: $(cat "$RUNS/best")"
        mkdir -p "$RUNS/ablation"
        for dir in "$RUNS"/v6-*; do
            n=${dir##*/v6-}; mkdir -p "$RUNS/ablation/$n"
            for f in train_log.jsonl console.txt summary.json; do [ -f "$dir/$f" ] && cp "$dir/$f" "$RUNS/ablation/$n/"; done
        done
        if [ -n "$out" ]; then RUN= exec "$0" export "$out" 0 63 "$RUNS/ablation"; fi
    elif [ -n "$out" ]; then exec "$0" export "$out"; fi ;;
ema)
    out=$2; shift 2; mkdir -p "$out"
    for name in "$@"; do
        dir=$RUNS/v6-$name
        [ -f "$dir/state/manifest.json" ] || python3 -m restorer_core.train.training_state export \
            --checkpoint "$dir/checkpoint.pt" --out "$dir/state"
        python3 -m restorer_core.train.training_state restorer --state "$dir/state" --out "$out/ema_$name.safetensors"
        # a call returns files of at most 16 MiB: the 25 MiB EMA travels in parts (cat them at home)
        (cd "$out" && sha256sum "ema_$name.safetensors" >"ema_$name.sha256" &&
            split -b 15M "ema_$name.safetensors" "ema_$name.safetensors.part-" && rm "ema_$name.safetensors")
    done
    ls -l "$out" ;;
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
    echo "unknown step $1: gather | start | ablate | wait | export | ema" >&2; exit 2 ;;
esac
