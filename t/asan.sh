#!/usr/bin/env bash
# make test-asan: nginx 1.22.1 itself and promgate (as a dynamic module of
# that build) compiled with AddressSanitizer + UndefinedBehaviorSanitizer,
# then the integration suite against that binary.
#
# The run fails if the suite fails, if any sanitizer report file appears, or
# if any nginx error log of the run has an [alert] or [crit] line (except
# "worker process N exited on signal 9": tests kill -9 workers on purpose).
#
# Leak detection is off (detect_leaks=0): nginx's master and workers exit
# without freeing their cycle pools on purpose, so LeakSanitizer would only
# report nginx's own by-design "leaks".  The ODR check is off too (see
# ASAN_OPTIONS below: nginx's module ABI).  Every other ASan check is on, and
# NGX_DEBUG_PALLOC=1 makes every pool allocation a separate malloc() so that
# overflows inside nginx pools are caught too.
#
# Environment:
#   ASAN_CC=gcc          compiler for nginx and the module (gcc or clang)
#   PYTEST_ARGS=...      extra pytest arguments, shell-quoted
#                        (e.g. -k bad_input, or -k "'target_down or flap'")
#   ASAN_SKIP_TESTS=1    build only
#
# The nginx source comes from Debian's source archive (the pristine
# nginx_1.22.1.orig.tar.gz), cached in build/asan/.

set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-/usr/bin/python3}
NGX_VER=1.22.1
B=$ROOT/build/asan
TARBALL=$B/nginx_${NGX_VER}.orig.tar.gz
SRC=$B/nginx-$NGX_VER
RUN=$B/run
CC_NAME=${ASAN_CC:-gcc}
JOBS=$(nproc 2>/dev/null || echo 2)

SAN_CFLAGS='-fsanitize=address,undefined -fno-omit-frame-pointer -DNGX_DEBUG_PALLOC=1 -g -O1'
SAN_LDFLAGS='-fsanitize=address,undefined'

t0=$(date +%s)
say() { printf 'asan: %s\n' "$*"; }

mkdir -p "$B"

# ------------------------------------------------------------ nginx source

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

if [ ! -f "$TARBALL" ]; then
    if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ \
        && ! grep -qs '^deb-src' /etc/apt/sources.list; then
        say "enabling Debian source packages (deb-src)"
        $sudo sed -i 's/^Types: deb$/Types: deb deb-src/' \
            /etc/apt/sources.list.d/debian.sources
        $sudo apt-get update -q
    fi
    say "fetching nginx source from Debian's source archive"
    # may exit non-zero (the security suite's .dsc can 404); the orig
    # tarball still arrives
    (cd "$B" && apt-get source --download-only nginx) || true
    if [ ! -f "$TARBALL" ]; then
        say "no $TARBALL after apt-get source (is deb-src enabled?)"
        exit 1
    fi
fi

if [ ! -x "$SRC/configure" ]; then
    say "unpacking $(basename "$TARBALL")"
    rm -rf "$SRC"
    tar -C "$B" -xzf "$TARBALL"
fi

# ---------------------------------------------------------------- build

# protobuf-c code for the module, regenerated when proto/ changes
PROTO=$B/proto
if [ -d "$PROTO" ] && [ -n "$(find proto -newer "$PROTO/remote.pb-c.c" 2>/dev/null)" ]; then
    rm -rf "$PROTO"
fi

CONF_ARGS=(--with-cc="$CC_NAME" --with-compat --with-threads --with-debug
           --with-http_v2_module
           --with-cc-opt="$SAN_CFLAGS" --with-ld-opt="$SAN_LDFLAGS"
           --add-dynamic-module="$ROOT")

# reconfigure only when the flags or the module's file list change (config
# globs src/; a new file there needs a new objs/Makefile)
stamp=$( { printf '%s\n' "${CONF_ARGS[@]}"; cat config;
           ls src/*.c src/*.h src/core/*.c src/core/*.h; } | sha256sum | cut -c1-16)

if [ ! -f "$SRC/objs/Makefile" ] || [ "$(cat "$SRC/.promgate_stamp" 2>/dev/null)" != "$stamp" ]; then
    say "configuring nginx $NGX_VER with ASan+UBSan ($CC_NAME)"
    (cd "$SRC" && PROMGATE_PROTO_DIR="$PROTO" ./configure "${CONF_ARGS[@]}" \
        >configure.log 2>&1) || { tail -40 "$SRC/configure.log"; exit 1; }
    echo "$stamp" >"$SRC/.promgate_stamp"
fi

say "building nginx and the module (make -j$JOBS)"
make -s -C "$SRC" -j"$JOBS" >"$B/build.log" 2>&1 \
    || { tail -60 "$B/build.log"; exit 1; }

NGINX_BIN=$SRC/objs/nginx
MODULE=$SRC/objs/ngx_http_promgate_module.so
"$NGINX_BIN" -V 2>&1 | grep -q 'fsanitize=address' \
    || { say "$NGINX_BIN is not a sanitizer build"; exit 1; }
[ -f "$MODULE" ] || { say "no $MODULE"; exit 1; }
say "built in $(( $(date +%s) - t0 ))s: $NGINX_BIN, $MODULE"

[ "${ASAN_SKIP_TESTS:-0}" = 1 ] && exit 0

# ------------------------------------------------------------------ run

# workers may run as root (the harness sets `user root root`) or as another
# user: the report directory is writable by anyone
LOGDIR=$RUN/sanitizer
rm -rf "$RUN"
mkdir -p "$LOGDIR" "$RUN/pytest"
chmod 1777 "$RUN" "$LOGDIR"

# detect_odr_violation=0: nginx's dynamic-module ABI has every module .so
# define its own ngx_modules / ngx_module_names / ngx_module_order, which
# nginx reads with dlsym() on the module's handle; the binary defines the
# same names.  That is by design, and ASan's ODR check (which compares the
# sizes of same-named globals) reports it at every load_module.
export ASAN_OPTIONS="log_path=$LOGDIR/asan:detect_leaks=0:abort_on_error=0:detect_odr_violation=0"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$LOGDIR/ubsan"
export NGINX_BIN PROMGATE_MODULE=$MODULE

say "integration suite against the sanitizer build"
say "ASAN_OPTIONS=$ASAN_OPTIONS"
say "UBSAN_OPTIONS=$UBSAN_OPTIONS"

t1=$(date +%s)
rc=0
# the arguments as the shell would split them: quoted words stay whole
eval "extra=(${PYTEST_ARGS:-})"
"$PYTHON" -m pytest -q -p no:cacheprovider --basetemp="$RUN/pytest" \
    t/integration "${extra[@]}" || rc=$?
say "suite exit status $rc after $(( $(date +%s) - t1 ))s"

fail=0
[ "$rc" -eq 0 ] || fail=1

reports=$(find "$LOGDIR" -type f | sort)
if [ -n "$reports" ]; then
    fail=1
    say "sanitizer reports:"
    for f in $reports; do
        echo "==== $f"
        head -80 "$f"
    done
fi

logs=$(find "$RUN/pytest" -name 'error.log' -type f | sort)
nlogs=$(printf '%s\n' "$logs" | grep -c . || true)
# a worker that died of SIGKILL was killed by a test on purpose (kill -9
# tests); a crash is another signal, a sanitizer report an exit code and a
# report file
bad=$(printf '%s\n' "$logs" | grep . | xargs -r grep -HE '\[(alert|crit)\]' \
      | grep -v 'exited on signal 9$' || true)
if [ -n "$bad" ]; then
    fail=1
    say "[alert]/[crit] lines in nginx error logs:"
    printf '%s\n' "$bad" | head -50
fi
emerg=$(printf '%s\n' "$logs" | grep . | xargs -r cat | grep -c '\[emerg\]' || true)

say "checked $nlogs nginx error logs ([emerg] lines, from deliberate" \
    "configuration tests: ${emerg:-0}); sanitizer report files:" \
    "$(printf '%s\n' "$reports" | grep -c . || true)"
say "total $(( $(date +%s) - t0 ))s"

if [ "$fail" -ne 0 ]; then
    say "FAILED (reports and logs kept in $RUN)"
    exit 1
fi
say "OK"
