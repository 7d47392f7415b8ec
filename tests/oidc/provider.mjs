// Minimal local OpenID Provider for tests (oidc-provider 9.x, Node >= 18, ESM).
//
// Usage: node provider.mjs [PORT]        (PORT 0 = pick a free port)
//        node provider.mjs --gen-jwks     (print a private JWKS for OIDC_JWKS_FILE)
// Prints exactly one line when ready:
//   OIDC_READY {"issuer":"http://127.0.0.1:PORT","port":PORT,...}
//
// Environment (all optional):
//   OIDC_HOST            listen address                (127.0.0.1)
//   OIDC_PORT            port if not given in argv      (0 = ephemeral)
//   OIDC_ISSUER          issuer identifier override     (http://HOST:PORT)
//   OIDC_CLIENT_ID       client_id                      (test-client)
//   OIDC_CLIENT_SECRET   client_secret                  (test-secret)
//   OIDC_REDIRECT_URIS   space/comma separated list     (http://127.0.0.1:8787/auth/callback)
//   OIDC_CLIENT_AUTH     client_secret_basic | client_secret_post (client_secret_basic)
//   OIDC_ID_TOKEN_ALG    RS256 | ES256 for the main client (RS256)
//   OIDC_CLIENT2_ID      optional second client (same secret/redirects) -> wrong-audience material
//   OIDC_SKIP_CONSENT    1 = no consent prompt (grant created automatically)
//   OIDC_ID_TOKEN_TTL    ID token lifetime in seconds   (3600)
//   OIDC_JWKS_FILE       private JWKS JSON file to sign with (fixed kids); else fresh keys per start
//   OIDC_PROVIDER_MODULE path to oidc-provider/lib/index.js if not resolvable from here
//   OIDC_JWKS_MODE       normal | mismatch (publish different public keys under the same kids)
//   OIDC_CLIENT2_ALG     RS256 | ES256 for the second client (OIDC_ID_TOKEN_ALG)
//   OIDC_CLIENT2_AUTH    its token endpoint auth method (OIDC_CLIENT_AUTH)
//   (always)             a GitHub OAuth stand-in under /github: github.mjs
//   OIDC_MOUNTS          JSON array of extra issuers on the same port, each
//                        {"path": "/decoy", "jwks_mode": "mismatch"} or
//                        {"path": "/userinfo", "id_token_claims": "minimal"}
//                        (the ID token carries no email; the UserInfo
//                        endpoint does, as OIDC Core allows): issuer
//                        http://HOST:PORT/decoy with its own keys and the same
//                        clients (one origin, so one allowed outbound host)
//
// Login names typed at the dev login form become the account id (`sub`):
//   email          = <login>@example.com
//   email_verified = false if login starts with "unverified-", else true
//   login starting with "expired-" -> ID token ttl of 1 second
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { pathToFileURL } from 'node:url';
import { github } from './github.mjs';

// ESM ignores NODE_PATH: either keep node_modules/oidc-provider beside/above this
// file, or point OIDC_PROVIDER_MODULE at .../node_modules/oidc-provider/lib/index.js.
const { default: Provider } = await import(process.env.OIDC_PROVIDER_MODULE
  ? pathToFileURL(process.env.OIDC_PROVIDER_MODULE).href
  : 'oidc-provider');

const env = process.env;
const host = env.OIDC_HOST || '127.0.0.1';
const port = Number(process.argv[2] ?? env.OIDC_PORT ?? 0);
const clientId = env.OIDC_CLIENT_ID || 'test-client';
const clientSecret = env.OIDC_CLIENT_SECRET || 'test-secret';
const redirectUris = (env.OIDC_REDIRECT_URIS || 'http://127.0.0.1:8787/auth/callback')
  .split(/[\s,]+/).filter(Boolean);
const authMethod = env.OIDC_CLIENT_AUTH || 'client_secret_basic';
const idTokenAlg = env.OIDC_ID_TOKEN_ALG || 'RS256';
const skipConsent = env.OIDC_SKIP_CONSENT === '1';
const idTokenTtl = Number(env.OIDC_ID_TOKEN_TTL || 3600);
const jwksMode = env.OIDC_JWKS_MODE || 'normal';

function freshKeys() {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const kid = () => crypto.randomBytes(8).toString('hex');
  return [
    { ...rsa, kid: `rsa-${kid()}`, use: 'sig', alg: 'RS256' },
    { ...ec, kid: `ec-${kid()}`, use: 'sig', alg: 'ES256' },
  ];
}

// `node provider.mjs --gen-jwks > keys.json` writes a fresh private JWKS for OIDC_JWKS_FILE.
if (process.argv[2] === '--gen-jwks') {
  console.log(JSON.stringify({ keys: freshKeys() }));
  process.exit(0);
}

const signingKeys = env.OIDC_JWKS_FILE
  ? JSON.parse(fs.readFileSync(env.OIDC_JWKS_FILE, 'utf8')).keys
  : freshKeys();

// Public view of the keys, and (for OIDC_JWKS_MODE=mismatch) a decoy set that
// reuses the real kids with different key material.
const toPublic = ({ d, p, q, dp, dq, qi, ...pub }) => pub;
let decoyJwks;
if (jwksMode === 'mismatch') {
  decoyJwks = { keys: freshKeys().map((k, i) => ({ ...toPublic(k), kid: signingKeys[i].kid })) };
}

function client(id, alg = idTokenAlg, auth = authMethod) {
  return {
    client_id: id,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: auth,
    id_token_signed_response_alg: alg,
  };
}
const clients = [client(clientId)];
if (env.OIDC_CLIENT2_ID) {
  clients.push(client(env.OIDC_CLIENT2_ID, env.OIDC_CLIENT2_ALG || idTokenAlg,
    env.OIDC_CLIENT2_AUTH || authMethod));
}

const configuration = (keys, mountPath, minimalIdToken = false) => ({
  clients,
  jwks: { keys },
  interactions: { url: (ctx, interaction) => `${mountPath}/interaction/${interaction.uid}` },
  // PKCE for every client (confidential ones too); only S256 is supported by v9.
  pkce: { required: () => true },
  responseTypes: ['code'],
  scopes: ['openid', 'email', 'profile'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  // Put the scope-granted claims (email, email_verified, ...) into the ID token
  // even though an access token for /me is also issued.
  // A "minimal" mount conforms: with an access token for UserInfo, the
  // scope's claims go there only.
  conformIdTokenClaims: minimalIdToken,
  features: {
    devInteractions: { enabled: true }, // default; login form accepts any login/password
    // defaults left enabled: resourceIndicators, userinfo, revocation, PAR, rpInitiatedLogout, dPoP
  },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims(use, scope) {
        return {
          sub,
          email: `${sub}@example.com`,
          email_verified: !sub.startsWith('unverified-'),
          name: `Test ${sub}`,
          preferred_username: sub,
        };
      },
    };
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    Grant: 3600,
    Interaction: 600,
    Session: 3600,
    IdToken(ctx, token) {
      return token.available?.sub?.startsWith('expired-') ? 1 : idTokenTtl;
    },
  },
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
  ...(skipConsent ? { loadExistingGrant } : {}),
});

// Recipe from the oidc-provider docs ("skip consent for first-party clients"):
// create the grant on the fly so the consent prompt never triggers.
async function loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile');
    await grant.save();
    return grant;
}

// Port must be known before the issuer: bind first, then build the provider.
const server = (await import('node:http')).createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, host, resolve);
});
const actualPort = server.address().port;
const issuer = env.OIDC_ISSUER || `http://${host}:${actualPort}`;

function makeProvider(iss, keys, mountPath, decoy, minimalIdToken = false) {
  const p = new Provider(iss, configuration(keys, mountPath, minimalIdToken));
  p.on('server_error', (ctx, err) => console.error('server_error', err));
  if (decoy) {
    p.use(async (ctx, next) => {
      if (ctx.path === '/jwks') {
        ctx.type = 'application/jwk-set+json; charset=utf-8';
        ctx.body = decoy;
        return;
      }
      await next();
    });
  }
  return p.callback();
}

const main = makeProvider(issuer, signingKeys, '', decoyJwks);
// Extra issuers mounted under a path prefix, the way connect/express mount
// oidc-provider: `originalUrl` keeps the full path, `url` loses the prefix.
const mounts = JSON.parse(env.OIDC_MOUNTS || '[]').map((m) => {
  const keys = freshKeys();
  const decoy = m.jwks_mode === 'mismatch'
    ? { keys: freshKeys().map((k, i) => ({ ...toPublic(k), kid: keys[i].kid })) }
    : undefined;
  const minimal = m.id_token_claims === 'minimal';
  return { path: m.path, issuer: `${issuer}${m.path}`, handle: makeProvider(`${issuer}${m.path}`, keys, m.path, decoy, minimal) };
});
// GitHub's OAuth protocol under /github (see github.mjs), same origin.
const githubHandler = github({ clientId, clientSecret, redirectUris });
server.on('request', (req, res) => {
  if (req.url.startsWith('/github/')) {
    req.url = req.url.slice('/github'.length);
    return githubHandler(req, res);
  }
  const m = mounts.find((x) => req.url === x.path || req.url.startsWith(`${x.path}/`) || req.url.startsWith(`${x.path}?`));
  if (!m) return main(req, res);
  req.originalUrl = req.url;
  req.url = req.url.slice(m.path.length) || '/';
  if (req.url.startsWith('?')) req.url = `/${req.url}`;
  return m.handle(req, res);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));

console.log(`OIDC_READY ${JSON.stringify({
  issuer, port: actualPort, client_id: clientId, client2_id: env.OIDC_CLIENT2_ID || null,
  kids: signingKeys.map((k) => k.kid), jwks_mode: jwksMode, skip_consent: skipConsent,
  mounts: mounts.map((m) => m.issuer),
})}`);
