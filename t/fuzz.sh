#!/usr/bin/env bash
# libFuzzer targets over src/core (fuzz/*.c).
#
#   t/fuzz.sh [run|smoke|build] [target...]
#
#   run     every target for FUZZ_SECONDS (default 60)          (make fuzz)
#   smoke   every target's seed corpus, then FUZZ_SMOKE_SECONDS
#           (default 5) of fuzzing each                         (make fuzz-smoke)
#   build   compile only
#
# A target is fuzz/<name>.c; it is built when every header it includes with
# quotes ("pg_x.h", "remote.pb-c.h") exists in src/core or build/proto, and
# skipped (not failed) otherwise, so targets for core code that is still
# being written wait for it.  A target may include a core file itself
# (#include "../src/core/x.c", to redefine its test hooks); x.o is then
# left out of its link.  A source line "FUZZ_FLAGS: ..." adds libFuzzer
# options for that target.
#
# Seeds: fuzz/corpus/<name>/ (committed, small; fuzz/gen_corpus.py writes
# them).  New inputs go to build/fuzz/corpus/<name>/, crashes to
# build/fuzz/artifacts/<name>/.  Any crash, leak, timeout or out-of-memory
# fails the run and prints the reproducer's path.

set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:-run}
[ $# -gt 0 ] && shift
PYTHON=${PYTHON:-/usr/bin/python3}
CLANG=${CLANG:-clang}
OUT=$ROOT/build/fuzz
SECONDS_RUN=${FUZZ_SECONDS:-60}
SECONDS_SMOKE=${FUZZ_SMOKE_SECONDS:-5}

case "$MODE" in
    run)   secs=$SECONDS_RUN ;;
    smoke) secs=$SECONDS_SMOKE ;;
    build) secs=0 ;;
    *)     echo "usage: $0 [run|smoke|build] [target...]" >&2; exit 2 ;;
esac

# clang and libFuzzer's runtime: installed when missing (root or sudo)
if ! command -v "$CLANG" >/dev/null \
    || ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' \
        | "$CLANG" -x c -fsanitize=fuzzer -o /dev/null - 2>/dev/null
then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "fuzz: installing clang and libFuzzer (clang libclang-rt-14-dev)"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q \
        --no-install-recommends clang libclang-rt-14-dev \
        || { echo "fuzz: could not install clang" >&2; exit 1; }
fi

PKGS="libprotobuf-c snappy libpcre2-8 libxxhash"
pkg-config --exists rdkafka 2>/dev/null && PKGS="$PKGS rdkafka"
PKG_CFLAGS=$(pkg-config --cflags $PKGS)
PKG_LIBS="$(pkg-config --libs $PKGS) -lm"

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=gnu99 -g -O1 -fno-omit-frame-pointer $SAN -Isrc/core -Ibuild/proto $PKG_CFLAGS"

mkdir -p "$OUT/obj"

# protobuf-c code from proto/
make -s build/proto/remote.pb-c.c build/proto/types.pb-c.c \
    build/proto/write_v2.pb-c.c >/dev/null

# ------------------------------------------------------------ core objects

objs=()
for src in src/core/*.c build/proto/*.pb-c.c; do
    o=$OUT/obj/$(basename "${src%.c}").o
    if [ ! -f "$o" ] || [ "$src" -nt "$o" ] \
        || [ -n "$(find src/core build/proto -name '*.h' -newer "$o" 2>/dev/null | head -1)" ]
    then
        $CLANG $CFLAGS -fsanitize=fuzzer-no-link -c "$src" -o "$o"
    fi
    objs+=("$o")
done

# --------------------------------------------------------------- targets

targets=()
if [ $# -gt 0 ]; then
    for t in "$@"; do targets+=("fuzz/${t%.c}.c"); done
else
    targets=(fuzz/*.c)
fi

built=()
skipped=()
for src in "${targets[@]}"; do
    name=$(basename "${src%.c}")
    missing=""
    exclude=""
    for h in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$src"); do
        case "$h" in
        *.c)    # the target compiles its own copy of a core file
                [ -f "fuzz/$h" ] || missing="$missing $h"
                exclude="$exclude $(basename "${h%.c}").o" ;;
        *)      [ -f "src/core/$h" ] || [ -f "build/proto/$h" ] || [ -f "fuzz/$h" ] \
                    || missing="$missing $h" ;;
        esac
    done
    if [ -n "$missing" ]; then
        echo "fuzz: skip $name (not in src/core yet:$missing)"
        skipped+=("$name")
        continue
    fi
    bin=$OUT/$name
    if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ] \
        || [ -n "$(find "$OUT/obj" fuzz -name '*.[oh]' -newer "$bin" | head -1)" ]
    then
        echo "fuzz: build $name"
        link=()
        for o in "${objs[@]}"; do
            case " $exclude " in *" $(basename "$o") "*) ;; *) link+=("$o") ;; esac
        done
        $CLANG $CFLAGS -fsanitize=fuzzer "$src" "${link[@]}" $PKG_LIBS -o "$bin"
    fi
    built+=("$name")
done

[ "$MODE" = build ] && exit 0
[ ${#built[@]} -gt 0 ] || { echo "fuzz: no target to run"; exit 0; }

# ------------------------------------------------------------------- run

summary=$OUT/summary-$MODE.txt
: >"$summary"
failed=()

for name in "${built[@]}"; do
    src=fuzz/$name.c
    work=$OUT/corpus/$name
    art=$OUT/artifacts/$name/
    log=$OUT/$name-$MODE.log
    mkdir -p "$work" "$art" "fuzz/corpus/$name"
    flags=$(sed -n 's/.*FUZZ_FLAGS:[[:space:]]*\(.*\)$/\1/p' "$src" | sed 's/[[:space:]]*\*\/.*$//' | head -1)

    echo "fuzz: $name for ${secs}s"
    rc=0
    # shellcheck disable=SC2086
    "$OUT/$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$art" $flags \
        "$work" "fuzz/corpus/$name" >"$log" 2>&1 || rc=$?

    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    newu=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
    seeds=$(find "fuzz/corpus/$name" -type f | wc -l)

    line=$(printf '%-18s %s %6ss  execs=%-10s exec/s=%-7s cov=%-6s ft=%-6s corpus=%-10s new=%-5s rss=%sMB seeds=%s' \
        "$name" "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "$secs" "${execs:-?}" \
        "${eps:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${newu:-?}" "${rss:-?}" "$seeds")
    echo "$line" | tee -a "$summary"

    if [ $rc -ne 0 ]; then
        failed+=("$name")
        grep -E 'ERROR: |SUMMARY: |check failed|runtime error' "$log" | head -10 || true
        ls -1 "$art" 2>/dev/null | sed "s|^|fuzz:   reproducer: $art|"
        echo "fuzz:   log: $log"
    fi
done

[ ${#skipped[@]} -gt 0 ] && echo "fuzz: skipped (headers missing): ${skipped[*]}" | tee -a "$summary"

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzz: OK ($summary)"
