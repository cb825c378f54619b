#!/usr/bin/env bash
# Install the servers used by the libkv integration tests.
#
# Idempotent: installs only what is missing, so a second run is a fast no-op.
#   - Debian packages redis-server, etcd-server, etcd-client, zookeeper (+ JRE),
#     installed without starting their system services.
#   - Debian packages chromium and chromium-driver: the headless browser the documentation
#     site's test (tests/test_docs_site.py) opens the built site in, through Selenium.
#   - Consul, built from source with Go via the Go module proxy (integration/consul/)
#     into ${LIBKV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/libkv}/consul-<version>/consul.
# Prints the versions found at the end. Exits non-zero with a message on failure.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONSUL_MODULE_DIR="$HERE/consul"
CACHE_DIR="${LIBKV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/libkv}"
# Go toolchain used only when no usable `go` (>= 1.21, which can fetch newer toolchains) exists.
BOOTSTRAP_GO_VERSION="1.25.9"
GO_PROXY_URL="${GOPROXY_URL:-https://proxy.golang.org}"
APT_PACKAGES=(redis-server redis-tools etcd-server etcd-client zookeeper default-jre-headless openssl
    chromium chromium-driver)

log() { printf 'install.sh: %s\n' "$*" >&2; }
fail() { log "ERROR: $*"; exit 1; }
trap 'fail "command failed at line $LINENO: $BASH_COMMAND"' ERR

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        fail "need root (or passwordless sudo) to run: $*"
    fi
}

package_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP=""
restore_policy() {
    if [ -n "$POLICY_BACKUP" ]; then
        as_root mv -f "$POLICY_BACKUP" "$POLICY"
    else
        as_root rm -f "$POLICY"
    fi
}

install_apt_packages() {
    local missing=() package
    for package in "${APT_PACKAGES[@]}"; do
        package_installed "$package" || missing+=("$package")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "Debian packages already installed"
        return
    fi
    command -v apt-get >/dev/null 2>&1 || fail "apt-get not found; install manually: ${missing[*]}"
    log "installing Debian packages: ${missing[*]}"
    # Keep postinst scripts from starting system services on the default ports.
    if [ -e "$POLICY" ]; then
        POLICY_BACKUP="$(as_root mktemp /usr/sbin/policy-rc.d.libkv.XXXXXX)"
        as_root cp -p "$POLICY" "$POLICY_BACKUP"
    fi
    trap 'restore_policy' EXIT
    printf '#!/bin/sh\n# Temporary, written by libkv integration/install.sh\nexit 101\n' \
        | as_root tee "$POLICY" >/dev/null
    as_root chmod 755 "$POLICY"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=300 \
        || fail "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=300 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" \
        || fail "apt-get install failed for: ${missing[*]}"
    restore_policy
    trap - EXIT
    POLICY_BACKUP=""
}

consul_version() {
    # The single source of truth is the require line in integration/consul/go.mod.
    local version
    version="$(awk '$1 == "github.com/hashicorp/consul" && $2 ~ /^v/ {print $2; exit}' \
        "$CONSUL_MODULE_DIR/go.mod")"
    [ -n "$version" ] || fail "cannot read the Consul version from $CONSUL_MODULE_DIR/go.mod"
    printf '%s\n' "${version#v}"
}

# Prints the path of a go command whose version is >= 1.21 (able to fetch the toolchain that
# go.mod asks for), bootstrapping one from the Go module proxy when none is installed.
find_go() {
    local candidate version major minor
    for candidate in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go /usr/lib/go/bin/go; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        version="$("$candidate" env GOVERSION 2>/dev/null || true)"   # e.g. go1.26.8
        version="${version#go}"
        major="${version%%.*}"
        minor="${version#*.}"
        minor="${minor%%[.a-z]*}"
        if [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] \
            && { [ "$major" -gt 1 ] || [ "$minor" -ge 21 ]; }; then
            printf '%s\n' "$candidate"
            return
        fi
    done
    bootstrap_go
}

bootstrap_go() {
    local arch root zip module
    case "$(uname -m)" in
        x86_64) arch=amd64 ;;
        aarch64 | arm64) arch=arm64 ;;
        *) fail "no usable Go found and unsupported architecture $(uname -m)" ;;
    esac
    module="v0.0.1-go${BOOTSTRAP_GO_VERSION}.linux-${arch}"
    root="$CACHE_DIR/go-${BOOTSTRAP_GO_VERSION}"
    if [ ! -x "$root/bin/go" ]; then
        command -v curl >/dev/null 2>&1 || fail "curl is needed to fetch Go from the module proxy"
        log "no usable Go found; fetching Go ${BOOTSTRAP_GO_VERSION} from the Go module proxy"
        zip="$(mktemp "$CACHE_DIR/go-toolchain.XXXXXX.zip")"
        curl -fsSL --retry 3 -o "$zip" "$GO_PROXY_URL/golang.org/toolchain/@v/$module.zip" \
            || fail "download of the Go toolchain module $module failed"
        rm -rf "$root.partial"
        python3 - "$zip" "$root.partial" "golang.org/toolchain@$module/" <<'PYTHON' \
            || fail "cannot unpack the Go toolchain"
import os
import sys
import zipfile

archive, target, prefix = sys.argv[1:]
with zipfile.ZipFile(archive) as bundle:
    for entry in bundle.infolist():
        if not entry.filename.startswith(prefix) or entry.is_dir():
            continue
        path = os.path.join(target, entry.filename[len(prefix):])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with bundle.open(entry) as source, open(path, "wb") as sink:
            sink.write(source.read())
        parts = entry.filename[len(prefix):].split("/")
        if parts[0] == "bin" or (parts[:2] == ["pkg", "tool"]):
            os.chmod(path, 0o755)
PYTHON
        rm -f "$zip"
        mv "$root.partial" "$root"
    fi
    printf '%s\n' "$root/bin/go"
}

install_consul() {
    local version target go_command started temporary
    version="$(consul_version)"
    target="$CACHE_DIR/consul-$version/consul"
    if [ -x "$target" ] && "$target" version >/dev/null 2>&1; then
        log "Consul $version already built at $target"
        return
    fi
    go_command="$(find_go)"
    log "building Consul $version with $("$go_command" version) (slow: several minutes)"
    mkdir -p "$(dirname "$target")"
    temporary="$target.partial.$$"
    started="$(date +%s)"
    (
        cd "$CONSUL_MODULE_DIR"
        export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
        export GOFLAGS="-mod=readonly -buildvcs=false"
        "$go_command" build -trimpath -ldflags="-s -w" -o "$temporary" github.com/hashicorp/consul
    ) || { rm -f "$temporary"; fail "go build of Consul $version failed"; }
    mv -f "$temporary" "$target"
    log "built Consul $version in $(( $(date +%s) - started ))s: $target"
}

# Prints the first line of a command's output (no pipe into head: SIGPIPE + pipefail).
first_line() {
    local output
    output="$("$@" 2>&1)" || fail "'$*' failed: $output"
    printf '%s\n' "${output%%$'\n'*}"
}

# The server versions the tests were validated against (Debian bookworm's packages); another
# version is used as it is, with a warning (see the README's Development section).
EXPECTED_REDIS="7.0.15"
EXPECTED_ETCD="3.4.23"
EXPECTED_ZOOKEEPER="3.8.0"

warn_version() {  # name expected found
    case "$3" in
        *"$2"*) ;;
        *) log "WARNING: $1 is '$3'; the tests were validated against $2 (they run anyway)" ;;
    esac
}

print_versions() {
    local zookeeper_version redis_version etcd_version
    zookeeper_version="$(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null || echo unknown)"
    redis_version="$(first_line redis-server --version)"
    etcd_version="$(first_line etcd --version)"
    warn_version redis-server "v=$EXPECTED_REDIS " "$redis_version "
    warn_version etcd "$EXPECTED_ETCD" "$etcd_version"
    warn_version zookeeper "$EXPECTED_ZOOKEEPER" "$zookeeper_version"
    echo "redis-server: $redis_version"
    echo "etcd:         $etcd_version"
    echo "etcdctl:      $(ETCDCTL_API=3 first_line etcdctl version)"
    echo "zookeeper:    $zookeeper_version (/usr/share/java/zookeeper.jar)"
    echo "java:         $(first_line java -version)"
    echo "consul:       $(first_line "$CACHE_DIR/consul-$(consul_version)/consul" version)"
    # Debian's launcher script prints a shell warning on stderr before the version.
    echo "chromium:     $(first_line sh -c 'chromium --version 2>/dev/null')"
    echo "chromedriver: $(first_line chromedriver --version)"
}

main() {
    mkdir -p "$CACHE_DIR"
    # Serialise concurrent runs (for example parallel CI jobs sharing a cache).
    exec 9>"$CACHE_DIR/install.lock"
    if command -v flock >/dev/null 2>&1; then
        flock 9
    fi
    install_apt_packages
    for command in redis-server redis-cli etcd etcdctl java chromium chromedriver; do
        command -v "$command" >/dev/null 2>&1 || fail "$command not found after installation"
    done
    [ -f /usr/share/java/zookeeper.jar ] || fail "/usr/share/java/zookeeper.jar not found"
    install_consul
    print_versions
}

# Run only when executed, so tests can source the functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
