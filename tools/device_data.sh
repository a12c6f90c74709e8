#!/usr/bin/env bash
# Carry the offline CIFAR copy to the project's lent GPU machine, and unpack it there.
#
# The development machines keep CIFAR-10/100 in ../shared/data (lossless WebP sheets, about
# 98 MB per dataset, with unpack.py and a SHA-256 per split). The GPU machine sees neither
# ../shared nor anything beyond the repository, and one call carries at most 64 MiB, so a
# dataset travels in two parts, in two calls made back to back (the machine stays warm only
# briefly, and git-ignored paths carried by the first call stay there for the second):
#
#   tools/device_data.sh stage cifar10          # here: writes .device-data/cifar10-1 and -2
#   run(carry=[".device-data/cifar10-1"], command="true")
#   run(carry=[".device-data/cifar10-2"],
#       command="tools/device_data.sh unpack cifar10 && PYTHONPATH=. python3 -m ndlib grid ...")
#
# `unpack` joins the parts and runs the copy's own unpack.py (with $PYTHON, default python3,
# which needs numpy and Pillow): data/<dataset>_{train,test}.npz, each split checked against
# its SHA-256. It fails loudly if a part is missing.
set -euo pipefail

usage() { echo "usage: $0 stage|unpack cifar10|cifar100 [SHARED_DATA_DIR (stage only, default ../shared/data)]" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1; dataset=$2
case "$dataset" in cifar10|cifar100) ;; *) echo "$0: unknown dataset '$dataset' (cifar10 or cifar100)" >&2; exit 2;; esac
if [ -n "${3:-}" ]; then
    source_dir=$(cd "$3" 2>/dev/null && pwd) || { echo "$0: no folder '$3'" >&2; exit 2; }
fi
cd "$(dirname "$0")/.."
source_dir=${source_dir:-../shared/data}
stage_root=.device-data
# bytes per part: one part and the working tree (a few MB) stay under a call's 64 MiB
part_limit=${DEVICE_DATA_PART_BYTES:-$((50 * 1024 * 1024))}

bytes_in() { find "$1" -type f -printf '%s\n' | awk '{ total += $1 } END { print total + 0 }'; }

case "$action" in
stage)
    [ -f "$source_dir/$dataset/meta.json" ] || { echo "$0: no $source_dir/$dataset/meta.json; pass the folder holding the offline CIFAR copy" >&2; exit 2; }
    rm -rf "$stage_root/$dataset-1" "$stage_root/$dataset-2"
    mkdir -p "$stage_root/$dataset-1" "$stage_root/$dataset-2"
    cp "$source_dir/unpack.py" "$source_dir/$dataset"/meta.json "$source_dir/$dataset"/*.npy "$stage_root/$dataset-1/"
    part=1; used=$(bytes_in "$stage_root/$dataset-1")
    for sheet in "$source_dir/$dataset"/*.webp; do
        size=$(stat -c %s "$sheet")
        if [ "$part" = 1 ] && [ $((used + size)) -gt "$part_limit" ]; then part=2; fi
        if [ "$part" = 1 ]; then used=$((used + size)); fi
        cp "$sheet" "$stage_root/$dataset-$part/"
    done
    used2=$(bytes_in "$stage_root/$dataset-2")
    [ "$used2" -le "$part_limit" ] || { echo "$0: part 2 is $used2 bytes, over $part_limit; split in three" >&2; exit 1; }
    du -sh "$stage_root/$dataset-1" "$stage_root/$dataset-2"
    ;;
unpack)
    for part in 1 2; do
        [ -d "$stage_root/$dataset-$part" ] || { echo "$0: $stage_root/$dataset-$part is missing; carry it first (see the header of $0)" >&2; exit 2; }
    done
    joined="$stage_root/joined"
    rm -rf "$joined"; mkdir -p "$joined/$dataset"
    cp "$stage_root/$dataset-1"/* "$stage_root/$dataset-2"/* "$joined/$dataset/"
    mv "$joined/$dataset/unpack.py" "$joined/"
    "${PYTHON:-python3}" "$joined/unpack.py" --out data --dataset "$dataset"
    ;;
*) usage ;;
esac
