#!/usr/bin/env bash
# The systemd units of deploy/systemd: systemd-analyze verify finds nothing wrong (with the
# built kos in place of /usr/local/bin/kos), and every flag their ExecStart gives is one the
# subcommand's --help lists (the units never drift from the flags).
set -euo pipefail
kos=$(realpath "$1")
units=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
for u in "$units"/*.service; do
  name=$(basename "$u")
  bad=0
  sed "s|/usr/local/bin/kos|$kos|g" "$u" > "$tmp/$name"
  out=$(systemd-analyze verify "$tmp/$name" 2>&1 || true)
  if [ -n "$out" ]; then
    echo "$name: systemd-analyze verify: $out"
    bad=1
  fi
  exec_line=$(sed -n 's/^ExecStart=//p' "$u")
  sub=$(echo "$exec_line" | awk '{print $2}')
  help=$("$kos" "$sub" --help)
  for flag in $(echo "$exec_line" | grep -o -- '--[a-z][a-z-]*'); do
    if ! grep -q -- "$flag" <<<"$help"; then
      echo "$name: kos $sub has no flag $flag"
      bad=1
    fi
  done
  if [ $bad = 0 ]; then
    echo "$name: ok (kos $sub, $(echo "$exec_line" | grep -o -- '--[a-z][a-z-]*' | wc -l) flags)"
  fi
  fail=$((fail | bad))
done
exit $fail
