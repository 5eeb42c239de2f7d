#!/bin/sh
# docker-compose.yml's "certs" service: a CA and a certificate for pgrouter (localhost,
# 127.0.0.1, pgrouter), made once into ./docker/tls. Clients verify with docker/tls/ca.crt:
#   psql "host=localhost port=6432 user=app dbname=app sslmode=verify-full sslrootcert=docker/tls/ca.crt"
# A local trial only: in production the certificate comes from your CA or cert-manager.
set -eu
out=/tls
if [ -s "$out/server.crt" ] && [ -s "$out/server.key" ]; then
  echo "certificates already in $out"
  exit 0
fi
apk add --no-cache openssl >/dev/null
cd "$out"
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=pgrouter demo CA" \
  -keyout ca.key -out ca.crt
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
printf '%s\n' "subjectAltName=DNS:localhost,DNS:pgrouter,IP:127.0.0.1" \
  "basicConstraints=CA:FALSE" "keyUsage=digitalSignature,keyEncipherment" \
  "extendedKeyUsage=serverAuth" >server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
  -extfile server.ext -out server.crt
rm -f server.csr server.ext ca.srl
# pgrouter's image runs as 65532; the key is its alone.
chown 65532:65532 server.key
chmod 600 server.key ca.key
echo "made $out/ca.crt and pgrouter's certificate"
