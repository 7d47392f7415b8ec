#!/usr/bin/env bash
# Regenerates functions/auth/data/common-passwords.txt, the blocklist the
# password policy checks (NIST SP 800-63B §3.1.1.2: "passwords obtained from
# previous breach corpuses" and "commonly-used passwords").
#
# Source: the frequency-ranked password list of the npm package
# @zxcvbn-ts/language-common (MIT; itself from Dan Wheeler's zxcvbn, built
# from leaked-password corpora). Kept: every entry the length rule alone
# would accept (12+ characters), and the letters-only words of 4 to 11
# characters among the most common 10,000, which the policy refuses with
# digits or symbols around them ("password1234", "!!dragon2024").
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=4.1.3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack "@zxcvbn-ts/language-common@$VERSION" --silent >/dev/null && tar xzf ./*.tgz)
python3 - "$work/package/src/passwords.json" "$VERSION" > functions/auth/data/common-passwords.txt <<'PY'
import json, re, sys
ranked = json.load(open(sys.argv[1]))
keep = {p for p in ranked if len(p) >= 12}
keep |= {p for p in ranked[:10000] if 4 <= len(p) < 12 and re.fullmatch("[a-z]+", p)}
keep = sorted(p.lower() for p in keep if p.isascii() and "\n" not in p)
print(f"# @zxcvbn-ts/language-common {sys.argv[2]} passwords (MIT), filtered by scripts/gen-common-passwords.sh")
print("\n".join(keep))
PY
