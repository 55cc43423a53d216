#!/usr/bin/env bash
# Hand check of oidc-provider.mjs with curl: code exchange, JWT shape, refresh
# rotation, refresh reuse. Needs node, curl, openssl. Run after `npm ci`.
set -euo pipefail
cd "$(dirname "$0")"

out=$(mktemp); err=$(mktemp)
node oidc-provider.mjs >"$out" 2>"$err" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; rm -f "$out" "$err"' EXIT
for _ in $(seq 50); do [ -s "$out" ] && break; sleep 0.1; done
cfg=$(head -1 "$out")
echo "server: $cfg"
j() { node -e 'const o=JSON.parse(require("fs").readFileSync(0,"utf8")); const v=process.argv[1].split(".").reduce((a,k)=>a?.[k],o); console.log(typeof v==="object"?JSON.stringify(v):v)' "$1"; }
URL=$(j url <<<"$cfg"); TOKEN=$(j token_endpoint <<<"$cfg")
RES=$(j resource <<<"$cfg"); RURI=$(j redirect_uri <<<"$cfg"); CID=$(j client_id <<<"$cfg")

V=dBjftJeZ4CVP-mJ92K9kGp5aZ4l1RKqxNfLwN1xqlA0ZtYq3vS8cE2
C=$(printf %s "$V" | openssl dgst -sha256 -binary | openssl base64 -A | tr '+/' '-_' | tr -d '=')
CODE=$(curl -sf -X POST "$URL/bench/codes?n=1&challenge=$C" | j 0)

fail() { echo "FAIL: $*"; exit 1; }

r1=$(curl -s "$TOKEN" -d grant_type=authorization_code --data-urlencode "code=$CODE" \
  --data-urlencode "code_verifier=$V" --data-urlencode "redirect_uri=$RURI" \
  --data-urlencode "client_id=$CID" --data-urlencode "resource=$RES")
at=$(j access_token <<<"$r1"); rt1=$(j refresh_token <<<"$r1")
[ "$(j token_type <<<"$r1")" = Bearer ] || fail "token_type: $r1"
[ "$(j expires_in <<<"$r1")" = 900 ] || fail "expires_in: $r1"
hdr=$(cut -d. -f1 <<<"$at" | node -e 'console.log(Buffer.from(require("fs").readFileSync(0,"utf8").trim(),"base64url").toString())')
pl=$(cut -d. -f2 <<<"$at" | node -e 'console.log(Buffer.from(require("fs").readFileSync(0,"utf8").trim(),"base64url").toString())')
[ "$(j alg <<<"$hdr")" = ES256 ] || fail "alg: $hdr"
[ "$(j aud <<<"$pl")" = "$RES" ] || fail "aud: $pl"
[ -n "$rt1" ] && [ "$rt1" != undefined ] || fail "no refresh_token: $r1"
echo "code exchange ok: header=$hdr payload=$pl"

r2=$(curl -s "$TOKEN" -d grant_type=refresh_token --data-urlencode "refresh_token=$rt1" \
  --data-urlencode "client_id=$CID" --data-urlencode "resource=$RES")
rt2=$(j refresh_token <<<"$r2")
[ -n "$rt2" ] && [ "$rt2" != undefined ] && [ "$rt2" != "$rt1" ] || fail "no rotation: $r2"
echo "refresh ok, rotated"

r3=$(curl -s "$TOKEN" -d grant_type=refresh_token --data-urlencode "refresh_token=$rt1" \
  --data-urlencode "client_id=$CID" --data-urlencode "resource=$RES")
[ "$(j error <<<"$r3")" = invalid_grant ] || fail "reuse not rejected: $r3"
echo "reuse of old refresh token rejected: $r3"
echo "3 passed, 0 failed"
