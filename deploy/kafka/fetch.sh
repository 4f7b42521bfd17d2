#!/usr/bin/env bash
# Fetches the jars of an Apache Kafka 4.x broker (KRaft) and its CLI tools from
# Maven Central into deploy/kafka/lib/ (git-ignored), using ./pom.xml and the
# machine's `mvn` (artifacts are cached in the default ~/.m2 repository).
#
# Idempotent: when lib/.stamp matches the Kafka version and the pom, it does
# nothing. Quiet on success; on failure prints Maven's output and exits non-zero.
#
# Env: KAFKA_VERSION  override the Kafka version pinned in pom.xml.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lib="$here/lib"
pom="$here/pom.xml"

die() { echo "deploy/kafka/fetch.sh: $*" >&2; exit 1; }

command -v java >/dev/null 2>&1 || die "java not found (install a JDK/JRE >= 17, e.g. apt-get install openjdk-17-jre-headless)"
[ -f "$pom" ] || die "missing $pom"

pinned="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom" | head -n1)"
version="${KAFKA_VERSION:-$pinned}"
[ -n "$version" ] || die "could not read <kafka.version> from $pom"

pom_sum="$(sha256sum "$pom" | cut -d' ' -f1)"
stamp_want="kafka=$version pom=$pom_sum"

# Concurrent callers (parallel test runs) take turns; the lock is on pom.xml
# itself so no extra file is needed. The stamp is checked after taking it.
exec 8<"$pom"
flock -w 900 8 || die "timed out waiting for another fetch.sh (lock on $pom)"

if [ -f "$lib/.stamp" ] && [ "$(cat "$lib/.stamp")" = "$stamp_want" ] \
   && [ -f "$lib/kafka_2.13-$version.jar" ]; then
    exit 0
fi

command -v mvn >/dev/null 2>&1 || die "mvn not found (install Maven, e.g. apt-get install maven)"

tmp="$(mktemp -d "$here/.lib.tmp.XXXXXX")"
log="$tmp.log"
trap 'rm -rf "$tmp" "$log"' EXIT

if ! mvn -B -q -Dstyle.color=never -f "$pom" -Dkafka.version="$version" \
        dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$tmp" >"$log" 2>&1 8<&-; then
    cat "$log" >&2
    die "Maven could not resolve Apache Kafka $version (see output above)"
fi
[ -f "$tmp/kafka_2.13-$version.jar" ] || die "kafka_2.13-$version.jar missing after Maven run"

echo "$stamp_want" >"$tmp/.stamp"
chmod 755 "$tmp"
rm -rf "$lib"
mv "$tmp" "$lib"
