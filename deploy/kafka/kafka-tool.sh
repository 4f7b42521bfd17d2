#!/usr/bin/env bash
# Runs one Java class from the fetched Kafka jars (deploy/kafka/lib/) with a
# quiet logging setup, e.g.
#   deploy/kafka/kafka-tool.sh org.apache.kafka.tools.TopicCommand \
#       --bootstrap-server 127.0.0.1:9092 --list
# Fetches the jars first if they are missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ "$#" -ge 1 ] || { echo "usage: $0 <main-class> [args...]" >&2; exit 2; }
"$here/fetch.sh"
exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/tools-log4j2.properties" \
    -cp "$here/lib/*" "$@"
