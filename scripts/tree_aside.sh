#!/usr/bin/env bash
# Shrink the working tree a training call carries (docs/training/PROGRAMME_V6.md): the tracked files
# a GPU training run never reads move to .aside/ (git-ignored, so never carried) and come back.
#   scripts/tree_aside.sh aside    move them out; prints the tree's size (for pack_carry --tree-mib)
#   scripts/tree_aside.sh back     put them back (git checkout -- PATH restores any that went missing)
set -euo pipefail
cd "$(dirname "$0")/.."
PATHS=(restorer_core/assets/models/default_restorer.safetensors   # v6 itself: the state carries the run
       restorer_core/assets/models/mobilefacenet.safetensors      # the default model uses identity_embedder
       docs/images examples/family_10045.png tests/data)
case "${1:-}" in
aside)
    for p in "${PATHS[@]}"; do
        if [ -e "$p" ]; then mkdir -p ".aside/$(dirname "$p")"; mv "$p" ".aside/$p"; fi
    done
    git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 |
        awk '{printf "working tree now %.1f MiB\n", $1 / 1048576}' ;;
back)
    for p in "${PATHS[@]}"; do
        if [ -e ".aside/$p" ]; then mkdir -p "$(dirname "$p")"; mv ".aside/$p" "$p"; fi
    done
    git status --short -- "${PATHS[@]}" ;;
*) echo "usage: $0 aside|back" >&2; exit 2 ;;
esac
