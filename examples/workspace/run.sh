#!/bin/sh
# The workspace example in one command: build the static keel, a busybox base image (no
# registry needed), the example image, and run it with its ports on 127.0.0.1.
#
#   examples/workspace/run.sh                 build everything, then run in the foreground
#                                             (^C or `docker stop workspace` stops it)
#   examples/workspace/run.sh -d              the same, detached (any `docker run` flags)
#   examples/workspace/run.sh build           build only
#
# Environment: DOCKER (the CLI, default docker), IMAGE (keel-workspace), BASE
# (keel-workspace-base; imported if missing, or if REBUILD_BASE=1), BUSYBOX (a static
# busybox, default /bin/busybox from Debian's busybox-static), KEEL (a static keel to use
# instead of building one), NAME (container name, workspace), PORTS (host ports for 8080
# 8081 2323, default the same; `none` publishes nothing, for a daemon without a bridge
# network: then reach the services with `docker exec`).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
docker=${DOCKER:-docker}
image=${IMAGE:-keel-workspace}
base=${BASE:-keel-workspace-base}
busybox=${BUSYBOX:-/bin/busybox}
name=${NAME:-workspace}
musl=x86_64-unknown-linux-musl

say() { echo "run.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# 1. keel, static (musl), release.
if [ -z "${KEEL:-}" ]; then
    say "building keel (cargo build --release --target $musl)"
    (cd "$root" && cargo build --release --target "$musl" --bin keel) ||
        die "cargo build failed (missing target? rustup target add $musl)"
    KEEL=${CARGO_TARGET_DIR:-$root/target}/$musl/release/keel
    case "$KEEL" in /*) ;; *) KEEL=$root/$KEEL ;; esac
fi
[ -x "$KEEL" ] || die "no keel binary at $KEEL"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 2. The base image: a root filesystem of one static busybox with every applet linked.
if [ "${REBUILD_BASE:-0}" = 1 ] || ! "$docker" image inspect "$base" >/dev/null 2>&1; then
    [ -x "$busybox" ] || die "no busybox at $busybox (apt-get install busybox-static, or set BUSYBOX)"
    if command -v ldd >/dev/null 2>&1 && ldd "$busybox" >/dev/null 2>&1; then
        die "$busybox is dynamically linked; it must be static (apt-get install busybox-static)"
    fi
    say "importing $base from $busybox"
    rootfs=$tmp/rootfs
    mkdir -p "$rootfs/bin" "$rootfs/sbin" "$rootfs/etc" "$rootfs/proc" "$rootfs/sys" \
        "$rootfs/dev" "$rootfs/tmp" "$rootfs/root" "$rootfs/run"
    chmod 1777 "$rootfs/tmp"
    cp "$busybox" "$rootfs/bin/busybox"
    for applet in $("$busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
    echo 'root:x:0:' > "$rootfs/etc/group"
    tar -C "$rootfs" -cf - . | "$docker" import - "$base" >/dev/null
fi

# 3. The image, from a context of just what the Dockerfile copies.
ctx=$tmp/ctx
mkdir -p "$ctx"
cp -R "$here/Dockerfile" "$here/keel.d" "$here/files-api" "$here/bin" "$ctx/"
cp "$KEEL" "$ctx/keel"
say "building $image"
"$docker" build -q --build-arg "BASE=$base" -t "$image" "$ctx" >/dev/null

[ "${1:-}" = build ] && { say "built $image"; exit 0; }

# 4. Run it. Ports on 127.0.0.1 only: the terminal has no password.
rm -rf "$tmp"
trap - EXIT
ports=${PORTS:-8080 8081 2323}
if [ "$ports" = none ]; then
    say "running $image as '$name' (no published ports)"
    exec "$docker" run --rm --name "$name" "$@" "$image"
fi
set -- $ports "$@"
p_preview=$1 p_files=$2 p_terminal=$3
shift 3
say "running $image as '$name': preview http://localhost:$p_preview/ ," \
    "files http://localhost:$p_files/cgi-bin/files , terminal: telnet localhost $p_terminal"
exec "$docker" run --rm --name "$name" \
    -p "127.0.0.1:$p_preview:8080" -p "127.0.0.1:$p_files:8081" -p "127.0.0.1:$p_terminal:2323" \
    "$@" "$image"
