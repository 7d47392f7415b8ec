#!/usr/bin/env bash
# Drives the full authorization-code + PKCE flow against provider.mjs with curl
# and a cookie jar, exchanges the code, verifies and prints the ID token claims.
#
# Usage: flow.sh ISSUER [LOGIN]
# Env:   CLIENT_ID (test-client) CLIENT_SECRET (test-secret)
#        REDIRECT_URI (http://127.0.0.1:8787/auth/callback)  CLIENT_AUTH (basic|post)
#        SCOPE ("openid email profile")  NONCE / STATE (random)  NODE (node)
#        TRACE=1 prints every request/response line.
set -euo pipefail
ISSUER="${1:?usage: flow.sh ISSUER [LOGIN]}"
LOGIN="${2:-alice}"
CLIENT_ID="${CLIENT_ID:-test-client}"
CLIENT_SECRET="${CLIENT_SECRET:-test-secret}"
REDIRECT_URI="${REDIRECT_URI:-http://127.0.0.1:8787/auth/callback}"
CLIENT_AUTH="${CLIENT_AUTH:-basic}"
SCOPE="${SCOPE:-openid email profile}"
NODE="${NODE:-node}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
urlenc() { "$NODE" -e 'process.stdout.write(encodeURIComponent(process.argv[1]))' "$1"; }
STATE="${STATE:-$(openssl rand 16 | b64url)}"
NONCE="${NONCE:-$(openssl rand 16 | b64url)}"
VERIFIER="$(openssl rand 32 | b64url)"                                   # 43 chars
CHALLENGE="$(printf '%s' "$VERIFIER" | openssl dgst -sha256 -binary | b64url)"

WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
JAR="$WORK/jar"
log() { printf '%s\n' "$*" >&2; }

# One request, never following redirects. Sets STATUS, LOCATION; body in $WORK/body.
req() {
  local method="$1" url="$2"; shift 2
  local out
  out="$(curl -sS -o "$WORK/body" -D "$WORK/headers" -b "$JAR" -c "$JAR" -X "$method" \
        -w '%{http_code} %{redirect_url}' "$@" "$url")"
  STATUS="${out%% *}"; LOCATION="${out#* }"
  local raw; raw="$(sed -n 's/^[Ll]ocation: //p' "$WORK/headers" | tr -d '\r')"
  log "$method ${url#"$ISSUER"} -> $STATUS${raw:+ Location: $raw}"
  if [[ "${TRACE:-}" == 1 ]]; then
    grep -i '^set-cookie' "$WORK/headers" | sed 's/^/    /' >&2 || true
  fi
}

# 1. Authorization request.
AUTH_URL="$ISSUER/auth?response_type=code&client_id=$(urlenc "$CLIENT_ID")&redirect_uri=$(urlenc "$REDIRECT_URI")&scope=$(urlenc "$SCOPE")&state=$STATE&nonce=$NONCE&code_challenge=$CHALLENGE&code_challenge_method=S256"
req GET "$AUTH_URL"
[[ "$STATUS" == 303 ]] || { cat "$WORK/body" >&2; exit 1; }

# 2..n. Follow the provider's own redirects, answering each interaction page.
for _ in 1 2 3 4 5 6 7 8; do
  case "$LOCATION" in
    "$REDIRECT_URI"*) break ;;
    "$ISSUER"/interaction/*|/interaction/*)
      url="$LOCATION"; [[ "$url" == /* ]] && url="$ISSUER$url"
      req GET "$url"
      [[ "$STATUS" == 200 ]] || { cat "$WORK/body" >&2; exit 1; }
      action="$(grep -o 'action="[^"]*"' "$WORK/body" | head -1 | cut -d'"' -f2)"
      prompt="$(grep -o 'name="prompt" value="[^"]*"' "$WORK/body" | head -1 | sed 's/.*value="//; s/"$//')"
      [[ "$action" == /* ]] && action="$ISSUER$action"
      if [[ "$prompt" == login ]]; then
        req POST "$action" --data-urlencode prompt=login --data-urlencode "login=$LOGIN" --data-urlencode password=x
      elif [[ "$prompt" == consent ]]; then
        req POST "$action" --data-urlencode prompt=consent
      else
        log "unexpected interaction page"; cat "$WORK/body" >&2; exit 1
      fi
      ;;
    "$ISSUER"/*) req GET "$LOCATION" ;;
    *) log "unexpected redirect: $LOCATION"; cat "$WORK/body" >&2; exit 1 ;;
  esac
  [[ "$STATUS" =~ ^30[0-9]$ ]] || { cat "$WORK/body" >&2; exit 1; }
done

# Callback: redirect_uri?code=...&state=...&iss=...
CB="$LOCATION"
q() { printf '%s' "$CB" | sed -n "s/.*[?&]$1=\([^&]*\).*/\1/p"; }
CODE="$(q code)"; GOT_STATE="$(q state)"; GOT_ISS="$(q iss)"
[[ -n "$CODE" ]] || { log "no code in $CB"; exit 1; }
[[ "$GOT_STATE" == "$STATE" ]] || { log "state mismatch"; exit 1; }
log "callback: code=${CODE:0:8}... state ok iss=$GOT_ISS"

# Token exchange with the PKCE verifier.
auth=()
if [[ "$CLIENT_AUTH" == post ]]; then
  auth=(--data-urlencode "client_id=$CLIENT_ID" --data-urlencode "client_secret=$CLIENT_SECRET")
else
  auth=(-u "$(urlenc "$CLIENT_ID"):$(urlenc "$CLIENT_SECRET")")
fi
req POST "$ISSUER/token" "${auth[@]}" \
  --data-urlencode grant_type=authorization_code --data-urlencode "code=$CODE" \
  --data-urlencode "redirect_uri=$REDIRECT_URI" --data-urlencode "code_verifier=$VERIFIER"
[[ "$STATUS" == 200 ]] || { cat "$WORK/body" >&2; echo >&2; exit 1; }
ID_TOKEN="$("$NODE" -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).id_token)' "$WORK/body")"
[[ "${PRINT_TOKEN:-}" == 1 ]] && echo "ID_TOKEN=$ID_TOKEN"

# Verify the signature against the provider's JWKS (jose ships with oidc-provider)
# and print header + claims.
cd "$HERE"
"$NODE" --input-type=module -e '
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from "jose";
const [tok, iss, aud, nonce] = process.argv.slice(1);
const header = decodeProtectedHeader(tok);
const { payload } = await jwtVerify(tok, createRemoteJWKSet(new URL(iss + "/jwks")), { issuer: iss, audience: aud });
if (payload.nonce !== nonce) throw new Error("nonce mismatch");
console.log(JSON.stringify({ header, claims: payload }, null, 2));
' "$ID_TOKEN" "$ISSUER" "$CLIENT_ID" "$NONCE"
