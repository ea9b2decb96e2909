#!/usr/bin/env bash
# The Kafka broker of docker-compose.yml, secured as `trustplane kafka up` secures the local one:
# SASL/SCRAM-SHA-512 on every listener (the controller's too), StandardAuthorizer, no access
# without an ACL, super users `broker` and `admin` only.
#
# It runs in the apache/kafka image instead of the image's own entrypoint, because SCRAM users
# can only be bootstrapped when the storage is formatted (`kafka-storage.sh format --add-scram`).
#
#   KAFKA_<NAME>         a broker setting, as with the image's entrypoint: KAFKA_LOG_DIRS ->
#                        log.dirs ("___" stands for "-", "__" for "_")
#   CLUSTER_ID           the KRaft cluster id (formatting)
#   TRUSTPLANE_SECRETS   a folder with the files `broker` and `admin` (their passwords), written
#                        by the kafka-credentials service; default /run/trustplane/kafka
#   TRUSTPLANE_SASL_LISTENERS  the listener names to log in on (lower case)
#   KAFKA_SASL_MECHANISM_CONTROLLER_PROTOCOL=PLAIN  (a quorum of several controllers, which
#                        cannot log in to each other with SCRAM: KAFKA-15513) the controller
#                        listener takes PLAIN logins, with `broker` as its only user
#   TRUSTPLANE_KAFKA_BIN, TRUSTPLANE_BROKER_CONFIG  /opt/kafka/bin and /tmp/trustplane
#
# Writes <config>/server.properties (0600: it holds broker's password) and
# <config>/admin.properties (for the healthcheck), then execs the broker.
set -euo pipefail

secrets=${TRUSTPLANE_SECRETS:-/run/trustplane/kafka}
bin=${TRUSTPLANE_KAFKA_BIN:-/opt/kafka/bin}
config=${TRUSTPLANE_BROKER_CONFIG:-/tmp/trustplane}
umask 077
mkdir -p "$config"
broker_password=$(<"$secrets/broker")
admin_password=$(<"$secrets/admin")
scram="org.apache.kafka.common.security.scram.ScramLoginModule required"

props="$config/server.properties"
: >"$props"
while IFS= read -r name; do
  case "$name" in
    KAFKA_HOME | KAFKA_OPTS | KAFKA_HEAP_OPTS | KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_LOG4J_OPTS \
      | KAFKA_JMX_OPTS | KAFKA_VERSION | KAFKA_GC_LOG_OPTS | KAFKA_DEBUG) continue ;;
  esac
  key=${name#KAFKA_}
  key=${key,,}
  key=${key//___/-}
  key=${key//__/@}
  key=${key//_/.}
  key=${key//@/_}
  printf '%s=%s\n' "$key" "${!name}" >>"$props"
done < <(compgen -e | grep '^KAFKA_')
for listener in ${TRUSTPLANE_SASL_LISTENERS:-internal host controller}; do
  printf 'listener.name.%s.scram-sha-512.sasl.jaas.config=%s username="broker" password="%s";\n' \
    "$listener" "$scram" "$broker_password" >>"$props"
done

if [ "${KAFKA_SASL_MECHANISM_CONTROLLER_PROTOCOL:-}" = PLAIN ]; then
  printf 'listener.name.%s.plain.sasl.jaas.config=%s username="broker" password="%s" user_broker="%s";\n' \
    "${KAFKA_CONTROLLER_LISTENER_NAMES,,}" "org.apache.kafka.common.security.plain.PlainLoginModule required" \
    "$broker_password" "$broker_password" >>"$props"
fi

log_dirs=$(sed -n 's/^log\.dirs=//p' "$props")
if [ ! -f "${log_dirs%%,*}/meta.properties" ]; then
  "$bin/kafka-storage.sh" format -t "$CLUSTER_ID" -c "$props" \
    --add-scram "SCRAM-SHA-512=[name=broker,password=$broker_password]" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$admin_password]"
fi

cat >"$config/admin.properties" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$scram username="admin" password="$admin_password";
EOF

exec "$bin/kafka-server-start.sh" "$props"
