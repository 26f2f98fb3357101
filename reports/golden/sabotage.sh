#!/usr/bin/env bash
# Apply each deliberate change to DM's matching in turn, run the CI golden check, and undo it.
# Usage (from the repository root, a clean working tree): reports/golden/sabotage.sh DATA_ROOT
set -uo pipefail
root=${1:?the data root holding breastmnist.npz and pneumoniamnist.npz}
for patch in reports/golden/dm_*.patch; do
  echo "=== $(basename "$patch" .patch)"
  git apply "$patch" || exit 2
  medbench check --preset ci-golden --data-root "$root" --no-progress --verbose 2>/dev/null
  echo "exit status $?"
  git apply -R "$patch"
done
