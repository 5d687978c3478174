#!/usr/bin/env bash
# The README's commands on a fresh machine: every make target that compiles installs what is
# missing (tests/env/deps.sh) before the first compile. Packages cannot be removed from the test
# machine, so a fresh one is played: DEPS_SH is a stand-in for tests/env/deps.sh that records its
# call and marks the packages "installed", and pkg-config and cc are shims that fail, as on a
# machine without them, until it has run.
#   1. `make -n -B` of every compiling target: a deps.sh line comes before the first compile;
#      `make demo` asks for the test packages (the broker), as `make test` does.
#   2. what `make all` builds (the demo's binaries), really run against the shims: it builds, and no compile
#      ran before the deps step or with flags read before it.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   - $*"; }
bad() { fail=$((fail + 1)); echo "FAIL - $*"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cd "$root" || exit 1

# -- 1. order, for each target that compiles --------------------------------------------------
# first_line REGEX FILE: the number of the first line matching, or 999999.
first_line() { grep -nE -m1 -- "$1" "$2" | cut -d: -f1 | grep . || echo 999999; }
for t in all demo unit asan valgrind tsan integration kube-integration e2e bench chart-test fuzz; do
  make -n -B B="$tmp/n-$t" "$t" > "$tmp/n-$t.out" 2>&1
  d=$(first_line 'deps\.sh' "$tmp/n-$t.out")
  c=$(first_line '(^| )(cc|gcc|clang|\$\(CC\))( |$).*(-c |-o )' "$tmp/n-$t.out")
  [ "$c" != 999999 ] || c=$(first_line ' -o ' "$tmp/n-$t.out")
  if [ "$c" = 999999 ]; then bad "make -n $t: no compile line found (the check is blind)"; sed 's/^/    /' "$tmp/n-$t.out" | head -5
  elif [ "$d" -lt "$c" ]; then ok "make $t: deps.sh (line $d) before the first compile (line $c)"
  else bad "make $t: the first compile (line $c) comes before deps.sh (line $d)"; sed -n "1,${c}p" "$tmp/n-$t.out" | sed 's/^/    /' | tail -5; fi
done
if head -n1 "$tmp/n-demo.out" | grep -qx 'tests/env/deps.sh test'; then
  ok "make demo installs the test packages (the broker) first, the same step make test runs"
else bad "make demo does not begin with tests/env/deps.sh test: $(head -n1 "$tmp/n-demo.out")"; fi

# -- 2. a fresh machine played with shims ----------------------------------------------------
mkdir -p "$tmp/bin"
marker=$tmp/installed
cat > "$tmp/deps.sh" <<EOF
#!/bin/sh
echo "deps \$*" >> "$tmp/calls"
touch "$marker"
EOF
real_pc=$(command -v pkg-config); real_cc=$(command -v cc)
cat > "$tmp/bin/pkg-config" <<EOF
#!/bin/sh
[ -e "$marker" ] || exit 127      # not installed yet
exec "$real_pc" "\$@"
EOF
# The compiler: absent before the deps step (as gcc is on a fresh machine); after it, a compile
# whose flags lack the packages' include paths is one whose pkg-config ran too early.
cat > "$tmp/bin/cc" <<EOF
#!/bin/sh
echo "cc \$*" >> "$tmp/calls"
[ -e "$marker" ] || { echo "cc: not installed yet" >&2; exit 127; }
exec "$real_cc" "\$@"
EOF
chmod +x "$tmp/deps.sh" "$tmp/bin/pkg-config" "$tmp/bin/cc"
# The files `all` builds, named one by one: `all` itself would also repoint the work tree's
# controller/jobpool-controller link into this temporary build.
f=$tmp/fresh
if PATH="$tmp/bin:$PATH" make --no-print-directory B="$f" CC=cc DEPS_SH="$tmp/deps.sh" \
     "$f/jobpool-controller" "$f/jobpool-worker" "$f/jp-publish" > "$tmp/fresh.out" 2>&1; then
  ok "make's all files on a played fresh machine build ($(grep -c '^cc ' "$tmp/calls") compiler runs)"
else bad "make all on a played fresh machine:"; tail -n 15 "$tmp/fresh.out" | sed 's/^/    /'; fi
if [ "$(head -n1 "$tmp/calls" | cut -d' ' -f1)" = deps ]; then ok "the deps step ran before the first compiler run"
else bad "the first call was not the deps step: $(head -n1 "$tmp/calls")"; fi
cjson_flags=$("$real_pc" --cflags libcjson)
if [ -z "$cjson_flags" ] || ! grep '^cc .* -c ' "$tmp/calls" | grep -vqF -- "$cjson_flags"; then
  ok "every compile carries the flags pkg-config gives after the deps step (${cjson_flags:-none needed})"
else bad "a compile ran with flags read before the deps step:"; grep '^cc .* -c ' "$tmp/calls" | grep -vF -- "$cjson_flags" | head -n 2; fi

echo "makefile: $pass passed, $fail failed"
[ "$fail" = 0 ]
