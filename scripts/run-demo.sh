#!/usr/bin/env bash
# `make run`: the standalone sidecar on deploy/examples/, in front of a demo IRIS, with the
# article's requests printed as curl commands to paste into another terminal.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${CARGO_TARGET_DIR:-target}/release
"$bin/examples/demo_upstream" 127.0.0.1:52773 &
upstream=$!
trap 'kill $upstream 2>/dev/null || true' EXIT

cat <<'CURL'

tollgate is starting on https://localhost:8443 (admin API on https://localhost:8444).
The certificate is self-signed, hence -k. In another terminal:

# 1. Get a token (the article's password grant):
curl -sk https://localhost:8443/event/oauth2/token -H 'Content-Type: application/json' -d '{
  "client_id": "clientid", "client_secret": "clientsecret", "grant_type": "password",
  "provision_key": "provisionkey", "authenticated_userid": "1"}' | tee /tmp/tollgate-token.json

# 2. Call the protected IRIS service with it:
ACCESS=$(sed -E 's/.*"access_token":"([^"]+)".*/\1/' /tmp/tollgate-token.json)
curl -sk https://localhost:8443/event/1 -H "Authorization: Bearer $ACCESS"

# 3. Refresh it (the article's second body):
REFRESH=$(sed -E 's/.*"refresh_token":"([^"]+)".*/\1/' /tmp/tollgate-token.json)
curl -sk https://localhost:8443/event/oauth2/token -H 'Content-Type: application/json' -d '{
  "client_id": "clientid", "client_secret": "clientsecret", "grant_type": "refresh_token",
  "refresh_token": "'"$REFRESH"'"}' | tee /tmp/tollgate-token.json

# 4. List the tokens, then invalidate one by its id:
curl -sk https://localhost:8444/default/oauth2_tokens
ID=$(curl -sk https://localhost:8444/default/oauth2_tokens | sed -E 's/.*"id":"([^"]+)".*/\1/')
curl -sk -X DELETE -i https://localhost:8444/default/oauth2_tokens/$ID

# 5. The invalidated token is refused with Kong's 401:
ACCESS=$(sed -E 's/.*"access_token":"([^"]+)".*/\1/' /tmp/tollgate-token.json)
curl -sk -i https://localhost:8443/event/1 -H "Authorization: Bearer $ACCESS"

# 6. The authorization server metadata (RFC 8414), from spec.oauth2.issuer:
curl -sk https://localhost:8443/.well-known/oauth-authorization-server/event

CURL

"$bin/tollgate-sidecar" sidecar --manifests deploy/examples/ "$@"
